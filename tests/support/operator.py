"""Run the real operator (``mlops-operator run``) as a subprocess against the local cluster, the way a user
runs it: tests can stop, SIGKILL and restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from local_cluster import ClusterInfo, free_port


class OperatorProcess:
    def __init__(
        self,
        cluster: ClusterInfo,
        namespaces: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.cluster = cluster
        self.extra_args = list(args)  # more `mlops-operator run` flags, e.g. --peering
        self.namespaces = list(namespaces)
        self.log_path = log_path
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "mlops_operator.cli",
            "run",
            "--verbose",
            f"--liveness=http://127.0.0.1:{self.port}/healthz",
        ]
        for namespace in self.namespaces:
            argv.append(f"--namespace={namespace}")
        argv += self.extra_args
        env = {
            **os.environ,
            "KUBECONFIG": self.cluster.kubeconfig,
            "MLOPS_RUNTIME_IMAGE": "ghcr.io/mlops-operator/runtime:test",
            "MLOPS_PROGRESS_INTERVAL_SECONDS": "2",
            "MLOPS_RESOLVE_INTERVAL_SECONDS": "2",
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"\n=== starting operator: {' '.join(argv)}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"operator exited with {self.process.returncode}; see {self.log_path}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"operator did not become healthy in {timeout}s; see {self.log_path}:\n{self.tail()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
