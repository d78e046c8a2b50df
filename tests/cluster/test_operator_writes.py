"""What the operator writes, counted by the apiserver: a create cycle stays within its budget, a resync of
objects that did not change writes nothing, and a child changed behind the operator's back is applied again.

The operator runs in an isolated namespace as its own ServiceAccount; FlowSchemas count its requests
(tests/support/request_counting.py).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import local_cluster
from tests.support import faults
from tests.support.kube import Kube, wait_until
from tests.support.operator import OperatorProcess
from tests.support.request_counting import CountedIdentity, counted_identity

GROUP, VERSION = "mlops.dev", "v1alpha1"
RESYNC_SECONDS = 2


@pytest.fixture
def counted(
    kube: Kube, cluster: local_cluster.ClusterInfo, isolated_namespace: str, tmp_path: Path
) -> Iterator[CountedIdentity]:
    identity = counted_identity(
        kube, isolated_namespace, cluster.server, Path(cluster.state_dir) / "pki" / "ca.crt", tmp_path
    )
    yield identity
    identity.delete(kube)


def start_operator(
    cluster: local_cluster.ClusterInfo, identity: CountedIdentity, tmp_path: Path, **env: str
) -> OperatorProcess:
    return OperatorProcess(
        cluster,
        [identity.namespace],
        tmp_path / "operator.log",
        {
            "KUBECONFIG": str(identity.kubeconfig),
            "MLOPS_PROGRESS_INTERVAL_SECONDS": str(RESYNC_SECONDS),
            "MLOPS_RESOLVE_INTERVAL_SECONDS": str(RESYNC_SECONDS),
            **env,
        },
    ).start()


def settled(kube: Kube, identity: CountedIdentity, quiet: float = 4.0, timeout: float = 60) -> dict[str, int]:
    """The counts once the operator has written nothing for ``quiet`` seconds."""
    last = identity.counts(kube)
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = identity.counts(kube)
        if (now["write"], now["events"]) != (last["write"], last["events"]):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"the operator kept writing for {timeout}s: {last}")


def custom(kube: Kube, namespace: str, plural: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    return result


def phase_is(kube: Kube, namespace: str, name: str, phase: str) -> bool:
    return (custom(kube, namespace, "trainingjobs", name).get("status") or {}).get("phase") == phase


def test_trainingjob_create_cycle_noop_resync_and_drifted_children(
    kube: Kube, cluster: local_cluster.ClusterInfo, counted: CountedIdentity, tmp_path: Path
) -> None:
    namespace = counted.namespace
    operator = start_operator(cluster, counted, tmp_path)
    try:
        before = settled(kube, counted)
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", faults.trainingjob("one", duration="300s", nodes=1)
        )
        wait_until(lambda: phase_is(kube, namespace, "one", "Running"), timeout=60, message="one Running")
        after = settled(kube, counted)
        # the Job, status Pending, status Running: no kopf annotations, no re-applies of an unchanged Job
        assert after["write"] - before["write"] <= 3, (before, after)
        metadata = custom(kube, namespace, "trainingjobs", "one")["metadata"]
        assert not [key for key in metadata.get("annotations") or {} if key.startswith("mlops.dev/")]
        assert not metadata.get("finalizers")

        # a two-node job is resynced while it runs (one pod may be stuck while another runs)
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", faults.trainingjob("two", duration="300s", nodes=2)
        )
        wait_until(lambda: phase_is(kube, namespace, "two", "Running"), timeout=60, message="two Running")
        quiet = settled(kube, counted)
        time.sleep(4 * RESYNC_SECONDS)
        resynced = counted.counts(kube)
        assert resynced["read"] > quiet["read"], "the resync loop looked at the running job"
        assert (resynced["write"], resynced["events"]) == (quiet["write"], quiet["events"]), (quiet, resynced)

        # someone removes a label we own from the Job (an event of the Job) and edits the headless
        # Service (no event: the resync finds it): both are applied again
        kube.kubectl("label", "job", "two", "-n", namespace, "mlops.dev/trainingjob-")
        kube.kubectl(
            "patch", "service", "two-workers", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"publishNotReadyAddresses": False}}),
        )  # fmt: skip

        def repaired() -> bool:
            job = kube.batch.read_namespaced_job("two", namespace)
            service = kube.core.read_namespaced_service("two-workers", namespace)
            return (job.metadata.labels or {}).get("mlops.dev/trainingjob") == "two" and bool(
                service.spec.publish_not_ready_addresses
            )

        wait_until(repaired, timeout=30, message="the Job label and the Service field to be applied again")
        assert counted.counts(kube)["write"] >= resynced["write"] + 2
    finally:
        operator.stop()
    log = operator.log_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 : log.find("Traceback") + 3000]


def test_modeldeployment_noop_resync_writes_nothing_and_a_changed_service_is_reapplied(
    kube: Kube,
    cluster: local_cluster.ClusterInfo,
    counted: CountedIdentity,
    tmp_path: Path,
    mlflow_server: str,
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    model = f"writes-{secrets.token_hex(3)}"
    client.create_registered_model(model)
    client.create_model_version(model, source=f"s3://placeholder-bucket/{model}/1")
    client.set_registered_model_alias(model, "champion", "1")
    namespace = counted.namespace
    operator = start_operator(cluster, counted, tmp_path, MLOPS_MLFLOW_TRACKING_URI=mlflow_server)
    try:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": "serve"},
            "spec": {"model": {"name": model, "alias": "champion"}, "replicas": {"min": 1}},
        }
        kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", body)

        def ready() -> bool:
            status = custom(kube, namespace, "modeldeployments", "serve").get("status") or {}
            return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])

        wait_until(ready, timeout=60, message="serve Ready")
        quiet = settled(kube, counted)
        time.sleep(4 * RESYNC_SECONDS)  # every resync re-resolves the alias and compares the children
        resynced = counted.counts(kube)
        assert resynced["read"] > quiet["read"]
        assert (resynced["write"], resynced["events"]) == (quiet["write"], quiet["events"]), (quiet, resynced)

        kube.kubectl(
            "patch", "service", "serve-primary", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"selector": {"mlops.dev/role": "hijacked"}}}),
        )  # fmt: skip
        wait_until(
            lambda: (
                kube.core.read_namespaced_service("serve-primary", namespace).spec.selector.get(
                    "mlops.dev/role"
                )
                == "primary"
            ),
            timeout=30,
            message="the Service selector to be applied again",
        )
    finally:
        operator.stop()
        client.delete_registered_model(model)
    log = operator.log_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 : log.find("Traceback") + 3000]
