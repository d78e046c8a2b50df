"""Desired children of a ModelDeployment: the model-server Deployment (a pinned model version in its pod
template, so a new version is an ordinary rolling update), its Service, an ``autoscaling/v2``
HorizontalPodAutoscaler, and for a challenger a second Deployment with its own Service.

Canary traffic is split by replica ratio: the main Service selects primary and canary pods alike
(``mlops.dev/serving: "true"``), so the share follows the replica counts. With ``spec.gateway`` and Gateway
API installed, an HTTPRoute splits it by exact weights between the ``-primary`` and ``-challenger``
Services instead. A shadow challenger is not selected by the main Service; the primary servers mirror a
share of requests to its Service. With ``autoscaling.scaleToZero`` and KEDA installed, a ScaledObject
replaces the HorizontalPodAutoscaler.

Pure: ``desired_children(...)`` returns manifests as dicts, given the versions the controller resolved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from mlops_operator.api.v1alpha1 import LABEL_PREFIX
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.common import GPU_RESOURCE
from mlops_operator.api.v1alpha1.modeldeployment import DEFAULT_TARGET_CPU_UTILIZATION, ModelDeploymentSpec
from mlops_operator.resources.common import (
    Owner,
    PodDefaults,
    child_metadata,
    child_name,
    labels,
    mlflow_env,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from mlops_operator.resources.httproute import Backend, httproute
from mlops_operator.resources.scaledobject import scaled_object

COMPONENT: Final = "model-server"
CONTAINER_NAME: Final = "server"
ROLE_LABEL: Final = f"{LABEL_PREFIX}role"
SERVING_LABEL: Final = f"{LABEL_PREFIX}serving"
VERSION_LABEL: Final = f"{LABEL_PREFIX}model-version"
PRIMARY: Final = "primary"
CHALLENGER: Final = "challenger"
SHADOW: Final = "shadow"
#: Per-pod request rate the HPA reads through the custom metrics API (e.g. prometheus-adapter's rule on
#: ``mlops_inference_requests_total``).
RPS_METRIC: Final = "mlops_inference_requests_per_second"
INFERENCE_LOG_DIR: Final = "/var/log/mlops"


@dataclass(frozen=True)
class ResolvedVersions:
    """What the controller resolved in the registry: the versions to serve now."""

    primary: int
    challenger: int | None = None


@dataclass(frozen=True)
class ClusterApis:
    """Optional APIs the cluster serves (found by discovery): what the builders may use."""

    gateway_api: bool = False
    """gateway.networking.k8s.io/v1 HTTPRoute."""
    keda: bool = False
    """keda.sh/v1alpha1 ScaledObject."""


def routes_by_gateway(spec: ModelDeploymentSpec, apis: ClusterApis) -> bool:
    """Whether an HTTPRoute carries the traffic (asked for, and Gateway API is installed)."""
    return spec.gateway is not None and apis.gateway_api


def scales_with_keda(spec: ModelDeploymentSpec, apis: ClusterApis) -> bool:
    """Whether a KEDA ScaledObject scales the primary (scale-to-zero asked for, KEDA installed)."""
    return spec.autoscaling.scale_to_zero and spec.autoscaling.keda is not None and apis.keda


def route_name(owner: Owner) -> str:
    return child_name(owner.name)


def deployment_name(owner: Owner, role: str = PRIMARY) -> str:
    return child_name(owner.name) if role == PRIMARY else child_name(owner.name, CHALLENGER)


def service_name(owner: Owner, role: str | None = None) -> str:
    return child_name(owner.name) if role is None else child_name(owner.name, role)


def url(owner: Owner, spec: ModelDeploymentSpec | None = None, apis: ClusterApis | None = None) -> str:
    """The gateway's first non-wildcard hostname when an HTTPRoute routes, else the main Service."""
    if spec is not None and spec.gateway is not None and apis is not None and routes_by_gateway(spec, apis):
        host = spec.gateway.url_host
        if host is not None:
            return f"{spec.gateway.scheme}://{host}"
    return f"http://{service_name(owner)}.{owner.namespace}.svc:{pc.DEFAULT_SERVER_PORT}"


def model_uri(name: str, version: int) -> str:
    return f"models:/{name}/{version}"


def replica_split(spec: ModelDeploymentSpec, weighted: bool = False) -> tuple[int, int]:
    """(primary, canary) replicas at the minimum size; the canary gets ``trafficPercent`` of the pods,
    at least one while its share is above zero. ``weighted``: an HTTPRoute sets the traffic share, so the
    pods only need to carry their share of the load (no bigger pool to reach a ratio)."""
    total = max(spec.replicas.min, 1)
    challenger = spec.challenger
    if challenger is None or challenger.mode != "canary" or challenger.traffic_percent == 0:
        return total, 0
    if challenger.traffic_percent == 100:
        return 0, total
    canary = max(1, round(total * challenger.traffic_percent / 100))
    if weighted:
        return max(1, total - canary), canary
    if canary >= total:  # keep the ratio with a bigger pool instead of starving the primary
        canary = max(1, math.ceil(challenger.traffic_percent / (100 - challenger.traffic_percent)))
        return 1, canary
    return total - canary, canary


def desired_children(
    owner: Owner,
    spec: ModelDeploymentSpec,
    versions: ResolvedVersions,
    defaults: PodDefaults,
    apis: ClusterApis = ClusterApis(),
) -> list[dict[str, Any]]:
    weighted = routes_by_gateway(spec, apis)
    primary_replicas, canary_replicas = replica_split(spec, weighted)
    children = [
        service(owner, spec),
        service(owner, spec, PRIMARY),
        deployment(owner, spec, versions.primary, PRIMARY, primary_replicas, defaults),
    ]
    if scales_with_keda(spec, apis):
        children.append(scaled_object(owner, deployment_name(owner), COMPONENT, spec))
    elif spec.autoscaling_enabled:
        children.append(autoscaler(owner, spec))
    if spec.challenger is not None and versions.challenger is not None:
        role = CHALLENGER if spec.challenger.mode == "canary" else SHADOW
        replicas = canary_replicas if role == CHALLENGER else 1
        children.append(service(owner, spec, CHALLENGER))
        children.append(deployment(owner, spec, versions.challenger, role, replicas, defaults))
    if weighted:
        children.append(route(owner, spec, versions))
    return children


def traffic_weights(spec: ModelDeploymentSpec, versions: ResolvedVersions) -> tuple[int, int]:
    """(primary, challenger) percent of requests when the route's weights decide: the canary's
    ``trafficPercent`` while a challenger version is served, else everything to the primary."""
    challenger = spec.challenger
    if challenger is None or challenger.mode != "canary" or versions.challenger is None:
        return 100, 0
    return 100 - challenger.traffic_percent, challenger.traffic_percent


def route(owner: Owner, spec: ModelDeploymentSpec, versions: ResolvedVersions) -> dict[str, Any]:
    """The HTTPRoute: weighted backendRefs to the ``-primary`` and (canary) ``-challenger`` Services."""
    assert spec.gateway is not None
    primary, challenger = traffic_weights(spec, versions)
    backends = [Backend(service_name(owner, PRIMARY), pc.DEFAULT_SERVER_PORT, primary)]
    if spec.challenger is not None and spec.challenger.mode == "canary" and versions.challenger is not None:
        backends.append(Backend(service_name(owner, CHALLENGER), pc.DEFAULT_SERVER_PORT, challenger))
    return httproute(owner, route_name(owner), COMPONENT, spec.gateway, backends)


def effective_traffic(
    spec: ModelDeploymentSpec, versions: ResolvedVersions, apis: ClusterApis
) -> tuple[str, int, int] | None:
    """(method, primary percent, challenger percent) of what serves now; None without challenger and
    gateway. Replica ratio: the canary's share of the pods at the minimum size (the HPA scales the
    primary only, so under load the canary's share shrinks)."""
    challenger = spec.challenger
    if routes_by_gateway(spec, apis):
        primary, canary = traffic_weights(spec, versions)
        if challenger is not None and challenger.mode == "shadow" and versions.challenger is not None:
            return "Mirror", 100, challenger.traffic_percent
        return "HTTPRoute", primary, canary
    if challenger is None or versions.challenger is None:
        return None
    if challenger.mode == "shadow":
        return "Mirror", 100, challenger.traffic_percent
    primary_pods, canary_pods = replica_split(spec)
    canary_percent = round(100 * canary_pods / (primary_pods + canary_pods))
    return "ReplicaRatio", 100 - canary_percent, canary_percent


def _selector(owner: Owner) -> dict[str, str]:
    return {owner.label_key: owner.label_value}


def service(owner: Owner, spec: ModelDeploymentSpec, role: str | None = None) -> dict[str, Any]:
    """``<name>``: everything that serves (primary + canary); ``<name>-primary`` / ``<name>-challenger``:
    one role each, for direct calls (and the shadow mirror's target)."""
    selector = _selector(owner)
    if role is None:
        selector[SERVING_LABEL] = "true"
    else:
        selector[ROLE_LABEL] = PRIMARY if role == PRIMARY else CHALLENGER
    service_spec: dict[str, Any] = {
        "selector": selector,
        "ports": [{"name": "http", "port": pc.DEFAULT_SERVER_PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    service_spec["type"] = spec.service_type if role is None else "ClusterIP"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner, service_name(owner, role), COMPONENT),
        "spec": service_spec,
    }


def _probe(path: str, period: int, failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failure_threshold,
    }


def _env(
    owner: Owner, spec: ModelDeploymentSpec, version: int, role: str, defaults: PodDefaults
) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": pc.ENV_MODEL_NAME, "value": spec.model.name},
        {"name": pc.ENV_MODEL_VERSION, "value": str(version)},
        {"name": pc.ENV_MODEL_URI, "value": model_uri(spec.model.name, version)},
        {"name": pc.ENV_MODELDEPLOYMENT_NAME, "value": owner.name},
        {"name": pc.ENV_SERVING_ROLE, "value": role},
        {"name": pc.ENV_SERVER_PORT, "value": str(pc.DEFAULT_SERVER_PORT)},
        {"name": "HOME", "value": pc.SCRATCH_DIR},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    env.extend(mlflow_env(spec.mlflow, defaults.mlflow_tracking_uri)[0])
    if spec.logging.sample_rate > 0:
        env.append({"name": pc.ENV_INFERENCE_LOG, "value": _inference_log_path(owner, spec, role)})
        env.append({"name": pc.ENV_LOG_SAMPLE_RATE, "value": str(spec.logging.sample_rate)})
    challenger = spec.challenger
    if (
        role == PRIMARY
        and challenger is not None
        and challenger.mode == "shadow"
        and challenger.traffic_percent
    ):
        env.append(
            {
                "name": pc.ENV_SHADOW_URL,
                "value": f"http://{service_name(owner, CHALLENGER)}:{pc.DEFAULT_SERVER_PORT}",
            }
        )
        env.append({"name": pc.ENV_SHADOW_PERCENT, "value": str(challenger.traffic_percent)})
    batching = spec.server.batching
    if batching is not None:
        env.append({"name": pc.ENV_MAX_BATCH_SIZE, "value": str(batching.max_batch_size)})
        env.append({"name": pc.ENV_MAX_BATCH_DELAY_MS, "value": str(batching.max_latency_ms)})
    return env


def _inference_log_path(owner: Owner, spec: ModelDeploymentSpec, role: str) -> str:
    sink = spec.logging.sink
    base = pc.local_path(sink) if sink and (sink.startswith(pc.PVC_SCHEME) or sink.startswith("/")) else None
    return f"{base or INFERENCE_LOG_DIR}/{owner.name}-{role}.jsonl"


def deployment(
    owner: Owner,
    spec: ModelDeploymentSpec,
    version: int,
    role: str,
    replicas: int,
    defaults: PodDefaults,
) -> dict[str, Any]:
    amounts: dict[str, str] = {"cpu": str(spec.resources.cpu), "memory": str(spec.resources.memory)}
    if spec.resources.gpus:
        amounts[GPU_RESOURCE] = str(spec.resources.gpus)
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": pc.SCRATCH_DIR}]
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    sink_claim = pc.pvc_claim(spec.logging.sink) if spec.logging.sink else None
    if spec.logging.sample_rate > 0:
        if sink_claim:
            mounts.append({"name": "inference-log", "mountPath": f"{pc.PVC_MOUNT_ROOT}/{sink_claim}"})
            volumes.append({"name": "inference-log", "persistentVolumeClaim": {"claimName": sink_claim}})
        else:
            mounts.append({"name": "inference-log", "mountPath": INFERENCE_LOG_DIR})
            volumes.append({"name": "inference-log", "emptyDir": {}})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image or defaults.runtime_image,
        "command": ["mlops-serve"],
        "env": _env(owner, spec, version, role, defaults),
        "ports": [{"name": "http", "containerPort": pc.DEFAULT_SERVER_PORT, "protocol": "TCP"}],
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "readinessProbe": _probe("/v2/health/ready", period=5, failure_threshold=3),
        "livenessProbe": _probe("/v2/health/live", period=10, failure_threshold=6),
        "startupProbe": _probe("/v2/health/live", period=5, failure_threshold=60),
        "securityContext": restricted_container_security_context(),
        "volumeMounts": mounts,
    }
    env_from = mlflow_env(spec.mlflow, defaults.mlflow_tracking_uri)[1]
    if env_from:
        container["envFrom"] = env_from
    role_labels = {ROLE_LABEL: PRIMARY if role == PRIMARY else CHALLENGER}
    pod_labels = {
        **labels(owner, COMPONENT),
        **role_labels,
        SERVING_LABEL: "false" if role == SHADOW else "true",
        VERSION_LABEL: str(version),
    }
    pod_spec: dict[str, Any] = {
        "securityContext": restricted_pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
    }
    scheduling = spec.scheduling
    if scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(scheduling.node_selector)
    tolerations = [t.to_dict() for t in scheduling.tolerations or ()]
    if spec.resources.gpus and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if scheduling.priority_class_name:
        pod_spec["priorityClassName"] = scheduling.priority_class_name
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": {**_selector(owner), **role_labels}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {f"{LABEL_PREFIX}model-uri": model_uri(spec.model.name, version)},
            },
            "spec": pod_spec,
        },
    }
    if role != PRIMARY or not spec.autoscaling_enabled:
        deployment_spec["replicas"] = replicas  # with an HPA the autoscaler owns spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(
            owner, deployment_name(owner, role), COMPONENT, {**role_labels, VERSION_LABEL: str(version)}
        ),
        "spec": deployment_spec,
    }


def autoscaler(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any]:
    autoscaling = spec.autoscaling
    metric: dict[str, Any]
    if autoscaling.target_requests_per_second is not None:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": RPS_METRIC},
                "target": {
                    "type": "AverageValue",
                    "averageValue": _quantity(autoscaling.target_requests_per_second),
                },
            },
        }
    else:
        metric = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": autoscaling.target_cpu_utilization
                    or DEFAULT_TARGET_CPU_UTILIZATION,
                },
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(owner, deployment_name(owner), COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(owner)},
            "minReplicas": max(spec.replicas.min, 1),
            "maxReplicas": spec.replicas.effective_max,
            "metrics": [metric],
        },
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity for a rate: integers as is, fractions in milli-units."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"
