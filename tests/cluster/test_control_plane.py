"""Smoke tests proving the local control plane is real: scheduler, controller-manager, admission, GC, kwok."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.kube import Kube, wait_until

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pod_manifest(
    name: str, gpus: int = 0, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    pod_spec: dict[str, Any] = {"containers": [container], **spec}
    if gpus:
        pod_spec["tolerations"] = [GPU_TOLERATION]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": pod_spec,
    }


def read_pod(kube: Kube, namespace: str, name: str) -> client.V1Pod:
    return kube.core.read_namespaced_pod(name, namespace)


def test_apiserver_reports_the_pinned_kubernetes_version(kube: Kube, cluster: Any) -> None:
    version = client.VersionApi(kube.api_client).get_code()
    assert version.git_version == cluster.kube_version
    assert version.major == "1"
    assert version.minor == cluster.kube_version.split(".")[1]


def test_fake_nodes_expose_gpus_labels_and_taints(kube: Kube) -> None:
    nodes = {node.metadata.name: node for node in kube.core.list_node().items}
    assert set(nodes) >= {"gpu-node-0", "gpu-node-1", "cpu-node-0"}
    gpu = nodes["gpu-node-0"]
    assert gpu.status.allocatable["nvidia.com/gpu"] == "8"
    assert gpu.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert [(t.key, t.effect) for t in gpu.spec.taints] == [("nvidia.com/gpu", "NoSchedule")]
    assert "nvidia.com/gpu" not in nodes["cpu-node-0"].status.allocatable
    for node in nodes.values():
        ready = [c.status for c in node.status.conditions if c.type == "Ready"]
        assert ready == ["True"], node.metadata.name


def test_gpu_pod_is_scheduled_on_a_gpu_node_and_runs(kube: Kube, namespace: str) -> None:
    kube.core.create_namespaced_pod(namespace, pod_manifest("two-gpus", gpus=2))
    pod = wait_until(
        lambda: (p := read_pod(kube, namespace, "two-gpus")).status.phase == "Running" and p,
        message="pod two-gpus to be Running",
    )
    assert pod.spec.node_name in {"gpu-node-0", "gpu-node-1"}
    assert pod.status.pod_ip
    assert [s.ready for s in pod.status.container_statuses] == [True]


def test_gpu_product_affinity_picks_the_matching_node(kube: Kube, namespace: str) -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "nvidia.com/gpu.product",
                                "operator": "In",
                                "values": ["NVIDIA-A100-SXM4-80GB"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    kube.core.create_namespaced_pod(namespace, pod_manifest("a100", gpus=1, affinity=affinity))
    pod = wait_until(lambda: read_pod(kube, namespace, "a100").spec.node_name, message="a100 to be bound")
    assert pod == "gpu-node-1"


def test_pod_asking_for_more_gpus_than_any_node_stays_pending_with_the_reason(
    kube: Kube, namespace: str
) -> None:
    kube.core.create_namespaced_pod(namespace, pod_manifest("sixteen-gpus", gpus=16))

    def failed_scheduling() -> Any:
        events = [e for e in kube.events_for(namespace, "sixteen-gpus") if e.reason == "FailedScheduling"]
        return events[0] if events else None

    event = wait_until(failed_scheduling, message="a FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in event.message
    assert event.message.startswith("0/3 nodes are available")
    pod = read_pod(kube, namespace, "sixteen-gpus")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    [condition] = [c for c in pod.status.conditions if c.type == "PodScheduled"]
    assert (condition.status, condition.reason) == ("False", "Unschedulable")


def test_deployment_gets_a_replicaset_and_available_pods(kube: Kube, namespace: str) -> None:
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }
    kube.apps.create_namespaced_deployment(namespace, deployment)
    wait_until(
        lambda: (kube.apps.read_namespaced_deployment("web", namespace).status.available_replicas or 0) == 3,
        message="deployment web to have 3 available replicas",
    )
    replica_sets = kube.apps.list_namespaced_replica_set(namespace).items
    assert len(replica_sets) == 1
    assert replica_sets[0].metadata.owner_references[0].name == "web"
    pods = kube.core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    assert all(p.status.phase == "Running" and p.spec.node_name == "cpu-node-0" for p in pods)


@pytest.mark.namespace_labels(RESTRICTED)
def test_privileged_pod_is_rejected_by_pod_security_admission(kube: Kube, namespace: str) -> None:
    manifest = pod_manifest("privileged")
    manifest["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiException) as raised:
        kube.core.create_namespaced_pod(namespace, manifest)
    assert raised.value.status == 403
    message = json.loads(raised.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert 'privileged (container "main" must not set securityContext.privileged=true)' in message


@pytest.mark.namespace_labels(RESTRICTED)
def test_restricted_compliant_pod_is_admitted(kube: Kube, namespace: str) -> None:
    manifest = pod_manifest("compliant")
    manifest["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    manifest["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    kube.core.create_namespaced_pod(namespace, manifest)
    wait_until(
        lambda: read_pod(kube, namespace, "compliant").status.phase == "Running", message="compliant pod"
    )


def test_deleting_an_owner_garbage_collects_its_dependents(kube: Kube, namespace: str) -> None:
    owner = kube.core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid, block_owner_deletion=True
    )
    for index in range(3):
        kube.core.create_namespaced_config_map(
            namespace,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"dependent-{index}", owner_references=[reference])
            ),
        )
    kube.core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def dependents_left() -> list[str]:
        return [
            c.metadata.name
            for c in kube.core.list_namespaced_config_map(namespace).items
            if c.metadata.name.startswith("dependent-")
        ]

    wait_until(
        lambda: not dependents_left(), message=lambda: f"dependents to be collected: {dependents_left()}"
    )


def test_job_pods_complete_and_the_job_succeeds(kube: Kube, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "indexed"},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "template": {
                "metadata": {"annotations": {"fake.mlops.dev/duration": "2s"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36"}]},
            },
        },
    }
    kube.batch.create_namespaced_job(namespace, job)

    def complete() -> Any:
        status = kube.batch.read_namespaced_job("indexed", namespace).status
        return status.succeeded == 2 and any(
            c.type == "Complete" and c.status == "True" for c in status.conditions or []
        )

    wait_until(complete, timeout=60, message="job indexed to complete")
    pods = kube.core.list_namespaced_pod(namespace, label_selector="job-name=indexed").items
    indexes = sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1"]
    assert all(p.status.phase == "Succeeded" for p in pods)


def test_annotated_pod_fails_with_exit_code_reason_and_message(kube: Kube, namespace: str) -> None:
    annotations = {
        "fake.mlops.dev/fail": "true",
        "fake.mlops.dev/exit-code": "137",
        "fake.mlops.dev/reason": "OOMKilled",
        "fake.mlops.dev/message": "out of memory in epoch 3",
    }
    kube.core.create_namespaced_pod(
        namespace, pod_manifest("doomed", annotations=annotations, restartPolicy="Never")
    )
    pod = wait_until(
        lambda: (p := read_pod(kube, namespace, "doomed")).status.phase == "Failed" and p,
        message="pod doomed to fail",
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (
        137,
        "OOMKilled",
        "out of memory in epoch 3",
    )


def test_annotated_pod_waits_with_an_image_pull_error(kube: Kube, namespace: str) -> None:
    annotations = {
        "fake.mlops.dev/waiting-reason": "ErrImagePull",
        "fake.mlops.dev/waiting-message": "not found",
    }
    kube.core.create_namespaced_pod(namespace, pod_manifest("no-image", annotations=annotations))

    def waiting() -> Any:
        statuses = read_pod(kube, namespace, "no-image").status.container_statuses
        return statuses and statuses[0].state.waiting

    state = wait_until(waiting, message="container waiting state")
    assert (state.reason, state.message) == ("ErrImagePull", "not found")
    assert read_pod(kube, namespace, "no-image").status.phase == "Pending"


def test_deleted_pod_goes_away(kube: Kube, namespace: str) -> None:
    kube.core.create_namespaced_pod(namespace, pod_manifest("short-lived"))
    wait_until(lambda: read_pod(kube, namespace, "short-lived").status.phase == "Running", message="Running")
    kube.core.delete_namespaced_pod("short-lived", namespace)

    def gone() -> bool:
        try:
            read_pod(kube, namespace, "short-lived")
        except ApiException as error:
            return error.status == 404
        return False

    wait_until(gone, message="pod deletion to finish")


def test_rbac_is_enforced_for_service_accounts(kube: Kube, namespace: str) -> None:
    result = kube.kubectl(
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:default",
        check=False,
    )
    assert result.stdout.strip() == "no"
    assert kube.kubectl("auth", "can-i", "list", "secrets", "-n", namespace).stdout.strip() == "yes"
