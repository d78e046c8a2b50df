"""Desired children of a TrainingJob: an Indexed ``batch/v1`` Job (one index per node, torchrun rendezvous
through the index-0 pod) and, for multi-node jobs, the headless Service that gives pods stable DNS names.

Pure: ``desired_children(job, settings)`` returns manifests as dicts; the controller applies them with
server-side apply. Everything the pods need is in their spec (the pod contract in
``api.v1alpha1.pod_contract``), so ``kubectl get job -o yaml`` describes the run completely.
"""

from __future__ import annotations

import json
from typing import Any, Final

from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.common import GPU_PRODUCT_LABEL, GPU_RESOURCE
from mlops_operator.api.v1alpha1.trainingjob import MAX_NODES, TrainingJobSpec
from mlops_operator.resources.common import (
    LABEL_COMPONENT,
    MAX_DNS_LABEL,
    OWNER_NAME_ANNOTATION,
    Owner,
    PodDefaults,
    child_metadata,
    child_name,
    labels,
    mlflow_env,
    restricted_container_security_context,
    restricted_pod_security_context,
)

COMPONENT: Final = "trainer"
CONTAINER_NAME: Final = "trainer"
#: The taint GPU nodes carry (NVIDIA's GPU operator and our local cluster); GPU pods tolerate it.
GPU_TAINT_KEY: Final = "nvidia.com/gpu"
KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
#: Size of /dev/shm: PyTorch dataloader workers pass batches through shared memory.
SHM_SIZE: Final = "1Gi"


def job_name(owner: Owner) -> str:
    """The Job's name: its pods' hostnames are ``<job>-<index>`` (index < 64 nodes), a DNS label of at most
    63 characters, so the name keeps 3 characters for the suffix."""
    return child_name(owner.name, limit=MAX_DNS_LABEL - len(f"-{MAX_NODES - 1}"))


def service_name(owner: Owner) -> str:
    return child_name(owner.name, "workers")


def resolved_image(spec: TrainingJobSpec, defaults: PodDefaults) -> str:
    """The image the training container runs."""
    if spec.trainer.image:
        return spec.trainer.image
    return spec.image or defaults.runtime_image


def desired_children(
    owner: Owner, spec: TrainingJobSpec, defaults: PodDefaults, job_exists: bool
) -> list[dict[str, Any]]:
    """Everything the TrainingJob needs, in apply order (the Service first: pods resolve it at start)."""
    children: list[dict[str, Any]] = []
    if spec.resources.nodes > 1:
        children.append(headless_service(owner))
    children.append(job(owner, spec, defaults, job_exists))
    return children


def headless_service(owner: Owner) -> dict[str, Any]:
    """Gives every pod of the Job a DNS name ``<job>-<index>.<service>``; rank 0 is the rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner, service_name(owner), COMPONENT),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {owner.label_key: owner.label_value, LABEL_COMPONENT: COMPONENT},
            "ports": [
                {"name": "rendezvous", "port": pc.DEFAULT_MASTER_PORT, "targetPort": pc.DEFAULT_MASTER_PORT}
            ],
        },
    }


def _suspend(spec: TrainingJobSpec, job_exists: bool) -> bool | None:
    """``spec.suspend`` of the Job. With a Kueue queue the Job is created suspended and Kueue unsuspends it
    when it admits the workload: after creation the field is left to Kueue (None = not applied by us),
    unless the user suspends the TrainingJob."""
    if spec.scheduling.suspend:
        return True
    if spec.scheduling.queue_name:
        return None if job_exists else True
    return False


def job(owner: Owner, spec: TrainingJobSpec, defaults: PodDefaults, job_exists: bool) -> dict[str, Any]:
    nodes = spec.resources.nodes
    extra_labels = {KUEUE_QUEUE_LABEL: spec.scheduling.queue_name} if spec.scheduling.queue_name else None
    run_policy = spec.run_policy
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
        "backoffLimit": run_policy.backoff_limit,
        "podFailurePolicy": pod_failure_policy(),
        "template": pod_template(owner, spec, defaults),
    }
    suspend = _suspend(spec, job_exists)
    if suspend is not None:
        job_spec["suspend"] = suspend
    if run_policy.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = run_policy.active_deadline_seconds
    if run_policy.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = run_policy.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(owner, job_name(owner), COMPONENT, extra_labels),
        "spec": job_spec,
    }


def pod_failure_policy() -> dict[str, Any]:
    """Fail fast on exit codes a retry cannot change (bad config, bad data, gate verdict); do not count
    disruptions (node loss, preemption, eviction) against backoffLimit."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": sorted(int(code) for code in pc.NON_RETRIABLE_EXIT_CODES),
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def _volume_name_for_claim(claim: str) -> str:
    return child_name(f"pvc-{claim}")


def _claims(spec: TrainingJobSpec) -> list[tuple[str, bool]]:
    """PersistentVolumeClaims the pods mount: (claim, read_only). The dataset's claim is read-only unless
    checkpoints go to the same claim."""
    claims: dict[str, bool] = {}
    dataset_claim = pc.pvc_claim(spec.dataset.uri)
    if dataset_claim:
        claims[dataset_claim] = True
    checkpoint = spec.run_policy.checkpoint
    checkpoint_claim = pc.pvc_claim(checkpoint.uri) if checkpoint else None
    if checkpoint_claim:
        claims[checkpoint_claim] = False
    return sorted(claims.items())


def _command(spec: TrainingJobSpec) -> tuple[list[str], list[str] | None]:
    """Container command and args.

    The runtime image runs ``mlops-train`` (built-in trainer, or the user's command/script as a child of
    the trainer so it logs into the same MLflow run). With more than one process it starts torchrun itself
    from NNODES/NPROC_PER_NODE and passes on the workers' real exit code (torchrun's own is 1 for any
    failure, which would hide the non-retriable codes from the podFailurePolicy). A user image
    (``trainer.image``) runs the user's command as it is, with the same environment.
    """
    trainer = spec.trainer
    if trainer.image and trainer.command:
        return list(trainer.command), list(trainer.args) if trainer.args else None
    return ["mlops-train"], None


def _env(owner: Owner, spec: TrainingJobSpec, defaults: PodDefaults) -> list[dict[str, Any]]:
    resources = spec.resources
    master_addr = f"{job_name(owner)}-0.{service_name(owner)}" if resources.nodes > 1 else "localhost"
    spec_json = json.dumps(trainer_view(spec), sort_keys=True, separators=(",", ":"))
    env: list[dict[str, Any]] = [
        {"name": pc.ENV_TRAININGJOB_SPEC, "value": spec_json},
        {"name": pc.ENV_TRAININGJOB_NAME, "value": owner.name},
        {"name": pc.ENV_TRAININGJOB_NAMESPACE, "value": owner.namespace},
        {"name": pc.ENV_TRAININGJOB_UID, "value": owner.uid},
        {"name": pc.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": pc.ENV_IMAGE, "value": resolved_image(spec, defaults)},
        {"name": pc.ENV_CHECKPOINT_DIR, "value": _checkpoint_dir(spec)},
        {"name": pc.ENV_MLFLOW_EXPERIMENT_NAME, "value": spec.experiment_name},
        {"name": pc.ENV_MASTER_ADDR, "value": master_addr},
        {"name": pc.ENV_MASTER_PORT, "value": str(pc.DEFAULT_MASTER_PORT)},
        {"name": pc.ENV_NNODES, "value": str(resources.nodes)},
        {
            "name": pc.ENV_NODE_RANK,
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
            },
        },
        {"name": pc.ENV_NPROC_PER_NODE, "value": str(resources.effective_proc_per_node)},
        {"name": "WORLD_SIZE", "value": str(resources.world_size)},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": pc.SCRATCH_DIR},
    ]
    env.extend(mlflow_env(spec.mlflow, defaults.mlflow_tracking_uri)[0])
    if spec.trainer.hyperparameters:
        env.append(
            {
                "name": "MLOPS_HYPERPARAMETERS",
                "value": json.dumps(spec.trainer.hyperparameters, sort_keys=True),
            }
        )
    for var in spec.trainer.env or ():
        env.append(var.to_dict())
    return env


def trainer_view(spec: TrainingJobSpec) -> dict[str, Any]:
    """The part of the spec the trainer reads (``MLOPS_TRAININGJOB_SPEC``). Scheduling and retry settings
    are left out: they may change while the job runs, and a Job's pod template cannot."""
    view = spec.to_dict()
    view.pop("scheduling", None)
    checkpoint = view.pop("runPolicy", {}).get("checkpoint")
    if checkpoint:
        view["runPolicy"] = {"checkpoint": checkpoint}
    return view


def _checkpoint_dir(spec: TrainingJobSpec) -> str:
    checkpoint = spec.run_policy.checkpoint
    return pc.local_path(checkpoint.uri) if checkpoint else pc.DEFAULT_CHECKPOINT_DIR


def _resources(spec: TrainingJobSpec) -> dict[str, Any]:
    amounts: dict[str, str] = {"cpu": str(spec.resources.cpu), "memory": str(spec.resources.memory)}
    if spec.resources.gpus:
        amounts[GPU_RESOURCE] = str(spec.resources.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _scheduling(spec: TrainingJobSpec) -> dict[str, Any]:
    scheduling = spec.scheduling
    out: dict[str, Any] = {}
    if scheduling.node_selector:
        out["nodeSelector"] = dict(scheduling.node_selector)
    tolerations = [t.to_dict() for t in scheduling.tolerations or ()]
    if spec.resources.gpus and not any(t.get("key") == GPU_TAINT_KEY for t in tolerations):
        tolerations.append({"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        out["tolerations"] = tolerations
    if spec.resources.gpu_type:
        out["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": GPU_PRODUCT_LABEL,
                                    "operator": "In",
                                    "values": [spec.resources.gpu_type],
                                }
                            ]
                        }
                    ]
                }
            }
        }
    if scheduling.priority_class_name:
        out["priorityClassName"] = scheduling.priority_class_name
    return out


def pod_template(owner: Owner, spec: TrainingJobSpec, defaults: PodDefaults) -> dict[str, Any]:
    command, args = _command(spec)
    mounts: list[dict[str, Any]] = [
        {"name": "scratch", "mountPath": pc.SCRATCH_DIR},
        {"name": "dshm", "mountPath": pc.SHM_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
    ]
    for claim, read_only in _claims(spec):
        volume = _volume_name_for_claim(claim)
        mounts.append({"name": volume, "mountPath": f"{pc.PVC_MOUNT_ROOT}/{claim}", "readOnly": read_only})
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": resolved_image(spec, defaults),
        "command": command,
        "env": _env(owner, spec, defaults),
        "resources": _resources(spec),
        "securityContext": restricted_container_security_context(),
        "volumeMounts": mounts,
        "terminationMessagePath": pc.DEFAULT_TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if args:
        container["args"] = args
    env_from = mlflow_env(spec.mlflow, defaults.mlflow_tracking_uri)[1]
    if env_from:
        container["envFrom"] = env_from
    if spec.resources.nodes > 1 or spec.resources.world_size > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": pc.DEFAULT_MASTER_PORT}]
    extra = spec.pod_metadata
    pod_metadata: dict[str, Any] = {
        "labels": {**((extra.labels if extra else None) or {}), **labels(owner, COMPONENT)},
        "annotations": {**((extra.annotations if extra else None) or {}), OWNER_NAME_ANNOTATION: owner.name},
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": restricted_pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": False,
        **_scheduling(spec),
    }
    if spec.resources.nodes > 1:
        pod_spec["subdomain"] = service_name(owner)
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    return {"metadata": pod_metadata, "spec": pod_spec}
