"""A real MLflow tracking server for tests and the demo: ``mlflow server`` with a SQLite backend and a local
artifact store in a temporary directory, on 127.0.0.1 and a free port, one worker.

Started in its own process group and stopped by killing that group, so no worker outlives the tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class MlflowServerError(RuntimeError):
    """The server could not start (the message says why, with the end of its log)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mlflow_executable() -> list[str]:
    """``mlflow`` next to the running interpreter (the venv's), else ``python -m mlflow``."""
    candidate = Path(sys.executable).parent / "mlflow"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


@dataclass
class MlflowServer:
    """One ``mlflow server`` process; :meth:`start` waits until ``/health`` answers."""

    root: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    startup_timeout: float = 90.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "artifacts").mkdir(exist_ok=True)
        cmd = [
            *mlflow_executable(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)
        log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        except OSError as error:
            raise MlflowServerError(f"cannot run {cmd[0]}: {error}") from error
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise MlflowServerError(
                    f"mlflow server exited with code {code} during start-up:\n{self.log_tail()}"
                )
            if self.healthy():
                return self
            time.sleep(0.25)
        self.stop()
        raise MlflowServerError(
            f"mlflow server did not answer {self.tracking_uri}/health within {self.startup_timeout:g}s:\n"
            f"{self.log_tail()}"
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_mlflow_server(root: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(root).start()
    try:
        yield server
    finally:
        server.stop()
