"""Session fixtures of the cluster and e2e tiers: the real local control plane and a namespace per test.

The control plane (hack/local_cluster.py) is started once per test session, or reused when one is already
up in the same state directory (then it is left running). It is never skipped: if it cannot start, every
test that needs it errors with the reason. Set MLOPS_KEEP_CLUSTER=1 to keep a cluster this session started.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import local_cluster
from mlflow_server import MlflowServer, MlflowServerError
from tests.support.kube import Kube, create_namespace, delete_namespace
from tests.support.operator import OperatorProcess

REPO = Path(__file__).resolve().parents[1]
ISOLATED_PREFIX = "isolated-"


@pytest.fixture(scope="session")
def cluster() -> Iterator[local_cluster.ClusterInfo]:
    state = local_cluster.state_dir_from_env()
    already_up = local_cluster.is_up(state)
    try:
        info = local_cluster.up(state)
    except local_cluster.ClusterError as error:
        pytest.fail(f"the local control plane could not start: {error}", pytrace=False)
    yield info
    if not already_up and not os.environ.get("MLOPS_KEEP_CLUSTER"):
        local_cluster.down(state)


@pytest.fixture(scope="session")
def kube(cluster: local_cluster.ClusterInfo) -> Kube:
    return Kube.from_kubeconfig(cluster.kubeconfig, cluster.binaries["kubectl"])


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, with its default ServiceAccount ready; deleted afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    labels = {"mlops.dev/test": "true"}
    marker = request.node.get_closest_marker("namespace_labels")
    if marker:
        labels.update(marker.args[0])
    create_namespace(kube, name, labels)
    yield name
    delete_namespace(kube, name)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tracking URI of a real ``mlflow server`` (SQLite + local artifacts) running for the whole session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.start()
    except MlflowServerError as error:
        pytest.fail(f"the MLflow server could not start: {error}", pytrace=False)
    import mlflow

    # the test process's own MLflow calls (load_model("models:/..."), download_artifacts) go there too
    mlflow.set_tracking_uri(server.tracking_uri)
    mlflow.set_registry_uri(server.tracking_uri)
    yield server.tracking_uri
    server.stop()


@pytest.fixture(scope="session")
def crds(kube: Kube) -> list[str]:
    kube.kubectl("apply", "--server-side", "--field-manager=mlops-tests", "-f", str(REPO / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
    names = [path.name.removesuffix(".yaml") for path in sorted((REPO / "crds").glob("*.yaml"))]
    return names


@pytest.fixture(scope="session")
def operator(
    cluster: local_cluster.ClusterInfo, crds: list[str], mlflow_server: str
) -> Iterator[OperatorProcess]:
    log = Path(cluster.state_dir) / "logs" / f"operator-{time.strftime('%Y%m%d-%H%M%S')}.log"
    env = {"MLOPS_MLFLOW_TRACKING_URI": mlflow_server}
    process = OperatorProcess(cluster, [f"!{ISOLATED_PREFIX}*"], log, env).start()
    yield process
    process.stop()
