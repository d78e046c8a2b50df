"""Fixtures of the e2e tier: a real MLflow server for the session, and a runner that starts the trainer the
way a training pod does (a subprocess configured only through the pod contract's environment).

A server that cannot start FAILS the tests that need it, with the reason; they are never skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlflow_server import free_port
from mlops_operator.api.v1alpha1 import pod_contract as pc
from process_node import NodeConfig, ProcessNode
from tests.e2e.loop_support import TAINT

REPO = Path(__file__).resolve().parents[2]
#: Variables of the test process that must not leak into a trainer (it is configured by env only).
_SCRUB_PREFIXES = ("MLOPS_", "MLFLOW_", "MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC")


@dataclass
class TrainerResult:
    returncode: int
    stdout: str
    stderr: str
    termination_message: str | None
    uid: str
    env: dict[str, str] = field(repr=False)

    def explain(self) -> str:
        return (
            f"exit {self.returncode}, termination message {self.termination_message!r}\n"
            f"--- stderr (tail) ---\n{self.stderr[-4000:]}"
        )


@dataclass
class TrainerRunner:
    """Runs ``python -m mlops_operator.runtime.train`` (optionally under torchrun) like a pod would."""

    tracking_uri: str
    workdir: Path

    def env(
        self,
        spec: Mapping[str, Any],
        *,
        uid: str | None = None,
        name: str = "job",
        namespace: str = "e2e",
        pod: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        uid = uid or str(uuid.uuid4())
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
        scratch = self.workdir / f"scratch-{secrets.token_hex(4)}"
        scratch.mkdir(parents=True)
        env = {
            **base,
            "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), base.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(scratch),
            pc.ENV_TRAININGJOB_SPEC: json.dumps(spec),
            pc.ENV_TRAININGJOB_NAME: name,
            pc.ENV_TRAININGJOB_NAMESPACE: namespace,
            pc.ENV_TRAININGJOB_UID: uid,
            pc.ENV_POD_NAME: pod or f"{name}-{secrets.token_hex(3)}",
            pc.ENV_IMAGE: "ghcr.io/mlops-operator/runtime:e2e",
            pc.ENV_TERMINATION_LOG: str(scratch / "termination-log"),
            pc.ENV_MLFLOW_TRACKING_URI: self.tracking_uri,
            pc.ENV_NNODES: "1",
            pc.ENV_NODE_RANK: "0",
            pc.ENV_NPROC_PER_NODE: "1",
        }
        env.update(extra or {})
        return env

    def run(
        self,
        spec: Mapping[str, Any],
        *,
        nproc: int | None = None,
        timeout: float = 240,
        **kwargs: Any,
    ) -> TrainerResult:
        """Run one attempt; ``nproc`` runs it under ``torch.distributed.run`` with that many processes."""
        env = self.env(spec, **kwargs)
        cmd = [sys.executable, "-m", "mlops_operator.runtime.train"]
        if nproc is not None:
            env[pc.ENV_NPROC_PER_NODE] = str(nproc)
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=1",
                f"--nproc-per-node={nproc}",
                "--master-addr=127.0.0.1",
                f"--master-port={free_port()}",
                "-m",
                "mlops_operator.runtime.train",
            ]
        proc = subprocess.run(
            cmd, env=env, cwd=self.workdir, capture_output=True, text=True, timeout=timeout, check=False
        )
        log = Path(env[pc.ENV_TERMINATION_LOG])
        message = log.read_text(encoding="utf-8") if log.exists() else None
        return TrainerResult(
            returncode=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            termination_message=message,
            uid=env[pc.ENV_TRAININGJOB_UID],
            env=env,
        )


@pytest.fixture(scope="session")
def trainer(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> TrainerRunner:
    return TrainerRunner(tracking_uri=mlflow_server, workdir=tmp_path_factory.mktemp("trainer"))


@pytest.fixture(scope="session")
def mlflow_client(mlflow_server: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server)


# --- datasets --------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class StaticServer:
    """Serves a directory over http on 127.0.0.1 (for http:// dataset URIs)."""

    root: Path
    server: ThreadingHTTPServer
    thread: threading.Thread

    def url(self, name: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/{name}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="session")
def http_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    root = tmp_path_factory.mktemp("http-files")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield StaticServer(root, server, thread)
    server.shutdown()
    server.server_close()


def classification_frame(n: int = 240, seed: int = 0, *, random_labels: bool = False) -> Any:
    """Two classes ("yes"/"no") from two floats, an integer and a string category."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    x3 = rng.integers(0, 5, size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    score = x1 + 0.8 * x2 + (color == "red") * 1.0 - 0.3 * x3 + 0.3 * rng.normal(size=n)
    label = np.where(score > -0.3, "yes", "no")
    if random_labels:
        label = rng.choice(["yes", "no"], size=n)
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "color": color, "label": label})


def regression_frame(n: int = 200, seed: int = 1) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.uniform(-2, 2, size=n)
    cat = rng.choice(["a", "b", "c"], size=n)
    offset = np.select([cat == "a", cat == "b"], [0.0, 1.5], -1.0)
    y = 3 * x1 - 2 * x2 + offset + 0.1 * rng.normal(size=n)
    return pd.DataFrame({"x1": x1, "x2": x2, "cat": cat, "y": y})


@dataclass(frozen=True)
class Datasets:
    classification_parquet: Path
    iris_csv: Path
    regression_csv: Path
    regression_url: str
    directory: Path


@pytest.fixture(scope="session")
def datasets(tmp_path_factory: pytest.TempPathFactory, http_files: StaticServer) -> Datasets:
    from sklearn.datasets import load_iris

    directory = tmp_path_factory.mktemp("datasets")
    parquet = directory / "classification.parquet"
    classification_frame().to_parquet(parquet, index=False)
    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [str(iris.target_names[t]) for t in frame.pop("target")]
    iris_csv = directory / "iris.csv"
    frame.to_csv(iris_csv, index=False)
    regression_csv = http_files.root / "regression.csv"
    regression_frame().to_csv(regression_csv, index=False)
    return Datasets(
        classification_parquet=parquet,
        iris_csv=iris_csv,
        regression_csv=regression_csv,
        regression_url=http_files.url("regression.csv"),
        directory=directory,
    )


def builtin_spec(
    model: str,
    uri: str,
    target: str,
    *,
    task: str = "classification",
    epochs: int = 4,
    hidden: list[int] | None = None,
    validation: float = 0.2,
    test: float = 0.2,
    seed: int = 7,
    **extra: Any,
) -> dict[str, Any]:
    """A TrainingJob spec (camelCase, as the apiserver stores it) for the built-in trainer."""
    spec: dict[str, Any] = {
        "model": {"name": model},
        "dataset": {
            "uri": uri,
            "target": target,
            "split": {"validation": validation, "test": test, "seed": 3},
        },
        "trainer": {
            "builtin": {
                "task": task,
                "hidden": hidden or [16],
                "epochs": epochs,
                "batchSize": 32,
                "lr": 0.02,
                "seed": seed,
            }
        },
    }
    for key, value in extra.items():
        if key == "builtin":
            spec["trainer"]["builtin"].update(value)
        elif key == "hyperparameters":
            spec["trainer"]["hyperparameters"] = value
        else:
            spec[key] = value
    return spec


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


# --- the loop tests: a process node that really runs the operator's pods ------------------------------------


@pytest.fixture(scope="session")
def process_node(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"e2e-node-{secrets.token_hex(3)}"
    config = NodeConfig(
        kubeconfig=cluster.kubeconfig,
        name=name,
        state_dir=tmp_path_factory.mktemp("process-node"),
        cpu="8",
        memory="16Gi",
        taints=[TAINT],
    )
    node = ProcessNode(config).start()
    yield name
    node.stop()


@pytest.fixture(scope="session")
def iris_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [str(iris.target_names[t]) for t in frame.pop("target")]
    path = tmp_path_factory.mktemp("data") / "iris.csv"
    frame.to_csv(path, index=False)
    return path
