"""The TrainingJob builders, by exact equality of the manifests they return."""

from __future__ import annotations

import json
from typing import Any

from mlops_operator.api.v1alpha1.trainingjob import TrainingJobSpec
from mlops_operator.resources.common import Owner, PodDefaults, child_name
from mlops_operator.resources.trainingjob import (
    desired_children,
    headless_service,
    job,
    pod_failure_policy,
    trainer_view,
)

OWNER = Owner(kind="TrainingJob", name="resnet", namespace="team-a", uid="0f0e-uid")
DEFAULTS = PodDefaults(runtime_image="runtime:1.0", mlflow_tracking_uri="http://mlflow.mlflow:5000")
LABELS = {
    "app.kubernetes.io/managed-by": "mlops-operator",
    "app.kubernetes.io/part-of": "mlops-operator",
    "app.kubernetes.io/component": "trainer",
    "mlops.dev/trainingjob": "resnet",
}
OWNER_REFERENCES = [
    {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingJob",
        "name": "resnet",
        "uid": "0f0e-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
]
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def make_spec(**overrides: Any) -> TrainingJobSpec:
    body: dict[str, Any] = {
        "model": {"name": "resnet"},
        "dataset": {"uri": "pvc://datasets/train.parquet", "target": "label"},
        "trainer": {"builtin": {"task": "classification", "epochs": 5}},
    }
    body.update(overrides)
    return TrainingJobSpec.model_validate(body)


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_multi_node_gpu_job_is_an_indexed_job_with_torchrun_and_a_headless_service() -> None:
    spec = make_spec(
        resources={"nodes": 2, "gpus": 4, "gpuType": "NVIDIA-H100-80GB-HBM3", "cpu": "16", "memory": "64Gi"},
        scheduling={"priorityClassName": "training-high", "nodeSelector": {"pool": "gpu"}},
        runPolicy={"backoffLimit": 2, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600},
    )
    service, training_job = desired_children(OWNER, spec, DEFAULTS, job_exists=False)

    assert service == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "resnet-workers",
            "namespace": "team-a",
            "labels": LABELS,
            "ownerReferences": OWNER_REFERENCES,
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"mlops.dev/trainingjob": "resnet", "app.kubernetes.io/component": "trainer"},
            "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500}],
        },
    }

    container = training_job["spec"]["template"]["spec"].pop("containers")[0]
    env = container.pop("env")
    assert training_job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "resnet",
            "namespace": "team-a",
            "labels": LABELS,
            "ownerReferences": OWNER_REFERENCES,
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 2,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 600,
            "suspend": False,
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": {"labels": LABELS, "annotations": {"mlops.dev/owner-name": "resnet"}},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": POD_SECURITY,
                    "volumes": [
                        {"name": "scratch", "emptyDir": {}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                        {
                            "name": "pvc-datasets",
                            "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True},
                        },
                    ],
                    "enableServiceLinks": False,
                    "nodeSelector": {"pool": "gpu"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "nvidia.com/gpu.product",
                                                "operator": "In",
                                                "values": ["NVIDIA-H100-80GB-HBM3"],
                                            }
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "priorityClassName": "training-high",
                    "subdomain": "resnet-workers",
                },
            },
        },
    }
    assert container == {
        "name": "trainer",
        "image": "runtime:1.0",
        "command": ["mlops-train"],
        "resources": {
            "requests": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"},
            "limits": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"},
        },
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "pvc-datasets", "mountPath": "/mnt/pvc/datasets", "readOnly": True},
        ],
        "ports": [{"name": "rendezvous", "containerPort": 29500}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    assert {e["name"]: e.get("value", e.get("valueFrom")) for e in env} == {
        "MLOPS_TRAININGJOB_SPEC": json.dumps(trainer_view(spec), sort_keys=True, separators=(",", ":")),
        "MLOPS_TRAININGJOB_NAME": "resnet",
        "MLOPS_TRAININGJOB_NAMESPACE": "team-a",
        "MLOPS_TRAININGJOB_UID": "0f0e-uid",
        "MLOPS_POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "MLOPS_IMAGE": "runtime:1.0",
        "MLOPS_CHECKPOINT_DIR": "/tmp/checkpoints",
        "MLFLOW_EXPERIMENT_NAME": "resnet",
        "MLFLOW_TRACKING_URI": "http://mlflow.mlflow:5000",
        "MASTER_ADDR": "resnet-0.resnet-workers",
        "MASTER_PORT": "29500",
        "NNODES": "2",
        "NODE_RANK": {
            "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
        },
        "NPROC_PER_NODE": "4",
        "WORLD_SIZE": "8",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/tmp",
    }


def test_single_cpu_job_runs_the_trainer_directly_without_service_or_gpu_settings() -> None:
    spec = make_spec(dataset={"uri": "https://example.com/iris.csv", "target": "species"})
    [training_job] = desired_children(OWNER, spec, DEFAULTS, job_exists=False)
    pod = training_job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["mlops-train"]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    assert "ports" not in container
    assert not {"tolerations", "affinity", "subdomain", "nodeSelector"} & set(pod)
    assert [v["name"] for v in pod["volumes"]] == ["scratch", "dshm"]
    assert env_of(training_job)["MASTER_ADDR"] == "localhost"
    assert env_of(training_job)["WORLD_SIZE"] == "1"


def test_trainer_view_leaves_out_what_may_change_while_the_job_runs() -> None:
    spec = make_spec(
        scheduling={"suspend": True, "nodeSelector": {"a": "b"}},
        runPolicy={"backoffLimit": 7, "checkpoint": {"uri": "pvc://ckpt/run1", "everyEpochs": 2}},
    )
    view = trainer_view(spec)
    assert "scheduling" not in view
    assert view["runPolicy"] == {"checkpoint": {"uri": "pvc://ckpt/run1", "everyEpochs": 2}}
    suspended = job(OWNER, spec, DEFAULTS, job_exists=True)
    resumed = job(
        OWNER,
        make_spec(runPolicy={"backoffLimit": 7, "checkpoint": spec.run_policy.checkpoint}),
        DEFAULTS,
        True,
    )
    assert suspended["spec"]["template"] != resumed["spec"]["template"]  # nodeSelector differs
    assert env_of(suspended) == env_of(resumed)


def test_checkpoint_claim_is_mounted_writable_and_becomes_the_checkpoint_dir() -> None:
    spec = make_spec(runPolicy={"checkpoint": {"uri": "pvc://ckpt/resnet"}})
    manifest = job(OWNER, spec, DEFAULTS, job_exists=False)
    pod = manifest["spec"]["template"]["spec"]
    assert {"name": "pvc-ckpt", "persistentVolumeClaim": {"claimName": "ckpt", "readOnly": False}} in pod[
        "volumes"
    ]
    assert {"name": "pvc-ckpt", "mountPath": "/mnt/pvc/ckpt", "readOnly": False} in pod["containers"][0][
        "volumeMounts"
    ]
    assert env_of(manifest)["MLOPS_CHECKPOINT_DIR"] == "/mnt/pvc/ckpt/resnet"


def test_kueue_queue_creates_the_job_suspended_and_then_leaves_suspend_to_kueue() -> None:
    spec = make_spec(scheduling={"queueName": "team-a-queue"})
    created = job(OWNER, spec, DEFAULTS, job_exists=False)
    assert created["spec"]["suspend"] is True
    assert created["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-queue"
    assert "suspend" not in job(OWNER, spec, DEFAULTS, job_exists=True)["spec"]
    user_suspended = make_spec(scheduling={"queueName": "team-a-queue", "suspend": True})
    assert job(OWNER, user_suspended, DEFAULTS, job_exists=True)["spec"]["suspend"] is True


def test_user_image_runs_the_user_command_and_gets_credentials_from_the_secret() -> None:
    spec = make_spec(
        trainer={"image": "me/train:2", "command": ["python", "train.py"], "args": ["--fast"]},
        mlflow={
            "trackingUri": "https://mlflow.example",
            "secretRef": {"name": "mlflow-creds", "keys": ["MLFLOW_TRACKING_TOKEN"]},
        },
    )
    manifest = job(OWNER, spec, DEFAULTS, job_exists=False)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["command"], container["args"]) == (
        "me/train:2",
        ["python", "train.py"],
        ["--fast"],
    )
    env = env_of(manifest)
    assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.example"
    assert env["MLFLOW_TRACKING_TOKEN"] == {
        "secretKeyRef": {"name": "mlflow-creds", "key": "MLFLOW_TRACKING_TOKEN"}
    }
    assert "envFrom" not in container


def test_secret_without_keys_is_exposed_whole_with_env_from() -> None:
    spec = make_spec(mlflow={"secretRef": {"name": "mlflow-creds"}})
    container = job(OWNER, spec, DEFAULTS, job_exists=False)["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-creds"}}]


def test_failure_policy_fails_fast_on_config_data_and_gate_exit_codes_and_ignores_disruptions() -> None:
    assert pod_failure_policy() == {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2, 3, 5]},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def test_long_names_are_shortened_deterministically_within_63_characters() -> None:
    long_owner = Owner(kind="TrainingJob", name="x" * 100, namespace="ns", uid="u")
    name = child_name(long_owner.name, "workers")
    assert len(name) <= 63 and name.endswith("-workers")
    assert name == child_name(long_owner.name, "workers")
    assert headless_service(long_owner)["metadata"]["name"] == name
    assert child_name("short", "workers") == "short-workers"
