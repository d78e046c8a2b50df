"""Cluster-tier fixtures: the CRDs installed in the real control plane, and the real operator process.

The session operator watches every namespace except ``isolated-*``: tests that need an operator of their
own (restarts, kills) create an ``isolated-`` namespace and start one there.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import local_cluster
from tests.support.kube import Kube, create_namespace, delete_namespace
from tests.support.operator import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
ISOLATED_PREFIX = "isolated-"


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


@pytest.fixture
def isolated_namespace(kube: Kube, crds: list[str]) -> Iterator[str]:
    """A namespace the session operator ignores, for tests that run an operator of their own."""
    name = f"{ISOLATED_PREFIX}{secrets.token_hex(4)}"
    yield create_namespace(kube, name)
    delete_namespace(kube, name)
