"""etcd and kube-apiserver restarted under a running operator, on a control plane of this test's own (so the
session's cluster and the other tests never see the outage). See docs/reliability.md.

The operator runs with its periodic resync effectively off: what it does after the restarts is driven by its
watches alone, so convergence proves the watches came back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import local_cluster
from tests.support import faults
from tests.support.kube import Kube, create_namespace, wait_until
from tests.support.operator import OperatorProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_cluster(cluster: local_cluster.ClusterInfo, tmp_path: Path) -> Iterator[local_cluster.ClusterInfo]:
    """A second, throw-away control plane (`cluster` first: its binaries are built by then)."""
    state = local_cluster.StateDir(tmp_path / "control-plane")
    try:
        info = local_cluster.up(state, nodes=[local_cluster.FakeNode("cpu-a", cpu="32", memory="128Gi")])
    except local_cluster.ClusterError as error:
        pytest.fail(f"the test's own control plane could not start: {error}", pytrace=False)
    try:
        yield info
    finally:
        local_cluster.down(state)


def _restart(info: local_cluster.ClusterInfo, component: str, downtime: float) -> None:
    # a short grace: the apiserver's graceful shutdown takes longer than the test should; this is a crash
    local_cluster.restart(
        local_cluster.StateDir(Path(info.state_dir)), component, downtime=downtime, grace_seconds=1
    )


@pytest.mark.timeout(360)
def test_etcd_and_apiserver_restarts_under_a_running_operator_lose_nothing_and_watches_recover(
    own_cluster: local_cluster.ClusterInfo, mlflow_server: str, tmp_path: Path
) -> None:
    info = own_cluster
    kube = Kube.from_kubeconfig(info.kubeconfig, info.binaries["kubectl"])
    kube.kubectl("apply", "--server-side", "--field-manager=mlops-tests", "-f", str(REPO / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
    namespace = create_namespace(kube, f"restarts-{secrets.token_hex(3)}")
    model = faults.register_model(mlflow_server, prefix="restart")
    env = {
        "MLOPS_MLFLOW_TRACKING_URI": mlflow_server,
        "MLOPS_PROGRESS_INTERVAL_SECONDS": "3600",  # no periodic resync: watches only
        "MLOPS_RESOLVE_INTERVAL_SECONDS": "3600",
    }
    operator = OperatorProcess(info, [], tmp_path / "operator.log", env).start()
    before = [f"before-{i}" for i in range(4)]
    after_etcd = [f"after-etcd-{i}" for i in range(3)]
    after_apiserver = [f"after-apiserver-{i}" for i in range(3)]
    try:
        # long enough to be running through both restarts, so their completion is seen afterwards
        for name in before:
            faults.create(kube, namespace, faults.trainingjob(name, duration="25s"))
        wait_until(
            lambda: all(
                (o.get("status") or {}).get("phase") == "Running"
                for o in faults.items(kube, namespace, "trainingjobs")
            ),
            timeout=90,
            message=lambda: f"the first TrainingJobs to run:\n{operator.tail()}",
        )
        uids = {j.metadata.name: j.metadata.uid for j in kube.batch.list_namespaced_job(namespace).items}
        tj_uids = {
            o["metadata"]["name"]: o["metadata"]["uid"] for o in faults.items(kube, namespace, "trainingjobs")
        }

        _restart(info, "etcd", downtime=2)
        for name in after_etcd:
            faults.create(kube, namespace, faults.trainingjob(name, duration="2s"))
        faults.create(kube, namespace, faults.modeldeployment("served", model))

        _restart(info, "apiserver", downtime=3)
        restarted_at = time.monotonic()
        for name in after_apiserver:
            faults.create(kube, namespace, faults.trainingjob(name, duration="2s"))

        names = before + after_etcd + after_apiserver
        faults.wait_converged(kube, namespace, len(names), 1, timeout=180, detail=operator.tail)
        print(f"converged {time.monotonic() - restarted_at:.1f}s after the apiserver restart")
        assert operator.process is not None and operator.process.poll() is None, "the operator died"
    finally:
        operator.stop()

    # etcd kept its data: the objects from before the restarts are the same objects, not re-created ones
    assert {o["metadata"]["name"]: o["metadata"]["uid"] for o in faults.items(kube, namespace, "trainingjobs")
            if o["metadata"]["name"] in tj_uids} == tj_uids  # fmt: skip
    jobs = {j.metadata.name: j.metadata.uid for j in kube.batch.list_namespaced_job(namespace).items}
    assert {name: jobs[name] for name in uids} == uids
    faults.assert_no_duplicate_children(kube, namespace, names, ["served"])
    state = faults.end_state(kube, namespace)
    for name in names:
        assert state["trainingjobs"][name]["podsSucceeded"] == 2, (name, state["trainingjobs"][name])
    assert state["modeldeployments"]["served"]["revisions"] == [(1, 1, "Initial")]
    assert local_cluster.is_up(local_cluster.StateDir(Path(info.state_dir)))
