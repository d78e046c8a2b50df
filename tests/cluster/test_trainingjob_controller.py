"""The TrainingJob controller against the real control plane: the real operator process, kube-scheduler
placing GPU pods on kwok nodes, the Job controller running indexed pods, kwok stages ending them.

kwok runs no containers: pod annotations (``podMetadata.annotations``, see hack/kwok/stages.yaml) decide how
long a pod "runs" and how it ends.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.kube import Kube, wait_until
from tests.support.operator import OperatorProcess

GROUP, VERSION, PLURAL = "mlops.dev", "v1alpha1", "trainingjobs"
pytestmark = pytest.mark.usefixtures("operator")


def trainingjob(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "iris"},
        "dataset": {"uri": "https://data.example/iris.csv", "target": "species"},
        "trainer": {"builtin": {"task": "classification", "epochs": 3}},
    }
    body.update(spec)
    if annotations:
        body["podMetadata"] = {"annotations": annotations}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": body,
    }


def create(kube: Kube, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest
    )
    return result


def read(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return result


def status_of(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return read(kube, namespace, name).get("status") or {}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def wait_phase(kube: Kube, namespace: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    return wait_until(
        lambda: (s := status_of(kube, namespace, name)).get("phase") == phase and s,
        timeout=timeout,
        message=lambda: f"{name} to reach {phase}; status now {json.dumps(status_of(kube, namespace, name))}",
    )


def event_reasons(kube: Kube, namespace: str, name: str) -> list[str]:
    return [e.reason for e in kube.events_for(namespace, name) if e.involved_object.kind == "TrainingJob"]


def pods_of(kube: Kube, namespace: str, name: str) -> list[Any]:
    return list(
        kube.core.list_namespaced_pod(namespace, label_selector=f"mlops.dev/trainingjob={name}").items
    )


def test_single_gpu_job_is_scheduled_on_a_gpu_node_runs_and_succeeds(kube: Kube, namespace: str) -> None:
    create(
        kube,
        namespace,
        trainingjob(
            "one-gpu",
            {"fake.mlops.dev/duration": "4s"},
            resources={"gpus": 1, "gpuType": "NVIDIA-H100-80GB-HBM3"},
        ),
    )
    running = wait_phase(kube, namespace, "one-gpu", "Running")
    assert condition(running, "Running")["status"] == "True"
    assert condition(running, "Scheduled")["status"] == "True"
    [pod] = pods_of(kube, namespace, "one-gpu")
    assert pod.spec.node_name == "gpu-node-0"  # the H100 node
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"

    done = wait_phase(kube, namespace, "one-gpu", "Succeeded")
    assert condition(done, "Succeeded")["status"] == "True"
    assert condition(done, "Ready")["status"] == "True"
    assert done["startTime"] and done["completionTime"]
    assert done["observedGeneration"] == 1
    assert done["image"] == "ghcr.io/mlops-operator/runtime:test"
    job = kube.batch.read_namespaced_job("one-gpu", namespace)
    assert [(r.kind, r.name, r.controller) for r in job.metadata.owner_references] == [
        ("TrainingJob", "one-gpu", True)
    ]
    assert job.metadata.managed_fields[0].manager == "mlops-operator"
    wait_until(
        lambda: (
            # (PodsScheduled only when pods are seen bound before they run: kwok starts them at once)
            {"PodsRunning", "JobSucceeded"} <= set(event_reasons(kube, namespace, "one-gpu"))
        ),
        message=lambda: f"events, got {event_reasons(kube, namespace, 'one-gpu')}",
    )
    table = kube.kubectl("get", "tj", "one-gpu", "-n", namespace).stdout
    assert "Succeeded" in table.splitlines()[1]


def test_two_nodes_by_four_gpus_get_indexed_pods_rank_env_and_a_headless_service(
    kube: Kube, namespace: str
) -> None:
    create(
        kube,
        namespace,
        trainingjob(
            "ddp",
            {"fake.mlops.dev/duration": "30s"},
            resources={"nodes": 2, "gpus": 4, "cpu": "8", "memory": "32Gi"},
        ),
    )
    wait_phase(kube, namespace, "ddp", "Running")
    pods = wait_until(lambda: len(p := pods_of(kube, namespace, "ddp")) == 2 and p, message="two pods")
    by_index = {p.metadata.annotations["batch.kubernetes.io/job-completion-index"]: p for p in pods}
    assert sorted(by_index) == ["0", "1"]
    for index, pod in by_index.items():
        assert pod.spec.hostname == f"ddp-{index}"
        assert pod.spec.subdomain == "ddp-workers"
        assert pod.spec.node_name in {"gpu-node-0", "gpu-node-1"}
        env = {e.name: e for e in pod.spec.containers[0].env}
        assert env["MASTER_ADDR"].value == "ddp-0.ddp-workers"
        assert env["NNODES"].value == "2"
        assert env["NPROC_PER_NODE"].value == "4"
        assert env["WORLD_SIZE"].value == "8"
        assert env["NODE_RANK"].value_from.field_ref.field_path == (
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        )
        assert pod.spec.containers[0].command == ["mlops-train"]  # it starts torchrun itself
    service = kube.core.read_namespaced_service("ddp-workers", namespace)
    assert service.spec.cluster_ip == "None"
    assert service.metadata.owner_references[0].name == "ddp"

    def endpoint_hostnames() -> list[str]:
        slices = kube.kubectl(
            "get",
            "endpointslices",
            "-n",
            namespace,
            "-l",
            "kubernetes.io/service-name=ddp-workers",
            "-o",
            "json",
        )
        items = json.loads(slices.stdout)["items"]
        return sorted(e.get("hostname", "") for s in items for e in s.get("endpoints") or [])

    wait_until(
        lambda: endpoint_hostnames() == ["ddp-0", "ddp-1"],
        message=lambda: f"endpoints {endpoint_hostnames()}",
    )
    status = status_of(kube, namespace, "ddp")
    assert status["pods"]["running"] == 2


def test_more_gpus_than_any_node_has_stays_pending_with_the_schedulers_reason(
    kube: Kube, namespace: str
) -> None:
    create(kube, namespace, trainingjob("too-big", resources={"gpus": 16}))
    status = wait_until(
        lambda: (
            (s := status_of(kube, namespace, "too-big"))
            and (c := condition(s, "Scheduled"))
            and c["status"] == "False"
            and s
        ),
        message=lambda: f"Scheduled=False; status {status_of(kube, namespace, 'too-big')}",
    )
    assert status["phase"] == "Pending"
    scheduled = condition(status, "Scheduled")
    assert scheduled["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert "0/3 nodes are available" in scheduled["message"]
    assert condition(status, "Ready")["reason"] == "Unschedulable"
    wait_until(
        lambda: "Unschedulable" in event_reasons(kube, namespace, "too-big"), message="Unschedulable event"
    )
    described = kube.kubectl("describe", "tj", "too-big", "-n", namespace).stdout
    assert "Insufficient nvidia.com/gpu" in described


def test_non_retriable_exit_code_fails_at_once_with_the_trainers_reason(kube: Kube, namespace: str) -> None:
    annotations = {
        "fake.mlops.dev/fail": "true",
        "fake.mlops.dev/exit-code": "3",
        "fake.mlops.dev/message": "InvalidDataset: column 'species' not found in https://data.example/iris.csv",
    }
    create(kube, namespace, trainingjob("bad-data", annotations, runPolicy={"backoffLimit": 4}))
    status = wait_phase(kube, namespace, "bad-data", "Failed")
    failure = status["failure"]
    assert failure["reason"] == "InvalidDataset"
    assert failure["exitCode"] == 3
    assert "column 'species' not found" in failure["message"]
    assert condition(status, "Failed")["reason"] == "InvalidDataset"
    assert len(pods_of(kube, namespace, "bad-data")) == 1  # podFailurePolicy: no retry for exit code 3
    wait_until(
        lambda: "InvalidDataset" in event_reasons(kube, namespace, "bad-data"), message="InvalidDataset event"
    )
    row = kube.kubectl("get", "tj", "bad-data", "-n", namespace, "-o", "wide").stdout.splitlines()[1]
    assert "Failed" in row and "InvalidDataset" in row


def test_retriable_failure_is_retried_per_backoff_limit(kube: Kube, namespace: str) -> None:
    annotations = {
        "fake.mlops.dev/fail": "true",
        "fake.mlops.dev/exit-code": "137",
        "fake.mlops.dev/reason": "OOMKilled",
    }
    create(kube, namespace, trainingjob("oom", annotations, runPolicy={"backoffLimit": 1}))
    status = wait_phase(kube, namespace, "oom", "Failed", timeout=90)
    assert status["failure"]["exitCode"] == 137
    assert status["failure"]["reason"] == "OOMKilled"
    assert "BackoffLimitExceeded" not in status["failure"]["reason"]
    assert "backoff limit" in status["failure"]["message"]
    assert len(pods_of(kube, namespace, "oom")) == 2  # first try + one retry


def test_suspend_stops_pods_and_resume_continues(kube: Kube, namespace: str) -> None:
    create(
        kube,
        namespace,
        trainingjob("paused", {"fake.mlops.dev/duration": "3s"}, scheduling={"suspend": True}),
    )
    status = wait_phase(kube, namespace, "paused", "Suspended")
    assert condition(status, "Suspended")["status"] == "True"
    time.sleep(2)
    assert pods_of(kube, namespace, "paused") == []
    assert kube.batch.read_namespaced_job("paused", namespace).spec.suspend is True

    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "paused", {"spec": {"scheduling": {"suspend": False}}}
    )
    status = wait_phase(kube, namespace, "paused", "Succeeded")
    assert condition(status, "Suspended") == {
        **condition(status, "Suspended"),
        "status": "False",
        "reason": "Resumed",
    }


def test_change_that_cannot_apply_to_a_running_job_is_reported(kube: Kube, namespace: str) -> None:
    create(kube, namespace, trainingjob("moving", {"fake.mlops.dev/duration": "120s"}))
    wait_phase(kube, namespace, "moving", "Running")
    kube.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "moving",
        {"spec": {"scheduling": {"nodeSelector": {"pool": "other"}}}},
    )
    status = wait_until(
        lambda: (s := status_of(kube, namespace, "moving")) and condition(s, "SpecApplied") and s,
        message="SpecApplied condition",
    )
    applied = condition(status, "SpecApplied")
    assert (applied["status"], applied["reason"]) == ("False", "ImmutableWhileRunning")
    assert "immutable" in applied["message"]
    assert status["phase"] == "Running"  # the running job is untouched


def test_spec_the_operator_rejects_is_reported_and_other_jobs_keep_working(
    kube: Kube, namespace: str
) -> None:
    bad = trainingjob(
        "nested-params",
        trainer={"builtin": {"task": "classification"}, "hyperparameters": {"layers": {"a": 1}}},
    )
    create(kube, namespace, bad)  # the apiserver cannot type-check hyperparameter values (see test_api_crds)
    status = wait_phase(kube, namespace, "nested-params", "Failed")
    assert condition(status, "Valid") == {
        **condition(status, "Valid"),
        "status": "False",
        "reason": "InvalidSpec",
    }
    assert "spec.trainer.hyperparameters" in condition(status, "Valid")["message"]
    wait_until(
        lambda: "InvalidSpec" in event_reasons(kube, namespace, "nested-params"), message="InvalidSpec event"
    )
    with pytest.raises(ApiException):
        kube.batch.read_namespaced_job("nested-params", namespace)
    create(kube, namespace, trainingjob("fine"))
    wait_phase(kube, namespace, "fine", "Succeeded")


def test_deleting_the_trainingjob_cascades_to_its_children(kube: Kube, namespace: str) -> None:
    create(kube, namespace, trainingjob("gone", {"fake.mlops.dev/duration": "120s"}, resources={"nodes": 2}))
    wait_phase(kube, namespace, "gone", "Running")
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")

    def children() -> list[str]:
        jobs = [j.metadata.name for j in kube.batch.list_namespaced_job(namespace).items]
        services = [s.metadata.name for s in kube.core.list_namespaced_service(namespace).items]
        return jobs + services + [p.metadata.name for p in pods_of(kube, namespace, "gone")]

    wait_until(lambda: not children(), timeout=60, message=lambda: f"children to be collected: {children()}")


def test_fifty_trainingjobs_created_at_once_all_converge(kube: Kube, namespace: str) -> None:
    names = [f"burst-{i:02d}" for i in range(50)]
    started = time.monotonic()
    for name in names:
        create(
            kube,
            namespace,
            trainingjob(
                name, {"fake.mlops.dev/duration": "1s"}, resources={"cpu": "100m", "memory": "128Mi"}
            ),
        )

    def phases() -> dict[str, int]:
        items = kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        counts: dict[str, int] = {}
        for item in items:
            phase = (item.get("status") or {}).get("phase", "None")
            counts[phase] = counts.get(phase, 0) + 1
        return counts

    wait_until(
        lambda: phases().get("Succeeded") == 50,
        timeout=240,
        interval=1,
        message=lambda: f"all 50 to succeed: {phases()}",
    )
    elapsed = time.monotonic() - started
    jobs = kube.batch.list_namespaced_job(namespace).items
    assert sorted(j.metadata.name for j in jobs) == names  # exactly one Job each
    print(f"50 TrainingJobs converged in {elapsed:.1f}s")


def test_operator_killed_mid_run_readopts_its_children_without_duplicates(
    kube: Kube, isolated_namespace: str, cluster: Any, tmp_path: Path
) -> None:
    own = OperatorProcess(cluster, [isolated_namespace], tmp_path / "operator.log").start()
    try:
        create(
            kube,
            isolated_namespace,
            trainingjob("survivor", {"fake.mlops.dev/duration": "15s"}, resources={"nodes": 2}),
        )
        wait_phase(kube, isolated_namespace, "survivor", "Running")
        job_uid = kube.batch.read_namespaced_job("survivor", isolated_namespace).metadata.uid
        own.kill()
        time.sleep(1)
        own.start()
        status = wait_phase(kube, isolated_namespace, "survivor", "Succeeded", timeout=90)
    finally:
        own.stop()
    jobs = kube.batch.list_namespaced_job(isolated_namespace).items
    assert [(j.metadata.name, j.metadata.uid) for j in jobs] == [("survivor", job_uid)]
    assert len(pods_of(kube, isolated_namespace, "survivor")) == 2
    assert status["pods"]["succeeded"] == 2
    log = own.log_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 : log.find("Traceback") + 3000]
