"""Session fixtures of the cluster and e2e tiers: the real local control plane and a namespace per test.

The control plane (hack/local_cluster.py) is started once per test session, or reused when one is already
up in the same state directory (then it is left running). It is never skipped: if it cannot start, every
test that needs it errors with the reason. Set MLOPS_KEEP_CLUSTER=1 to keep a cluster this session started.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator

import pytest

import local_cluster
from tests.support.kube import Kube, create_namespace, delete_namespace


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
