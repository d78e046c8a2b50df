"""A KEDA ``ScaledObject`` (``keda.sh/v1alpha1``) that scales a ModelDeployment's primary Deployment between
zero and ``replicas.max`` on the model servers' request rate in Prometheus. KEDA creates and owns the HPA
behind it (``keda-hpa-<name>``), so the operator renders no HorizontalPodAutoscaler of its own then.

Pure: the caller decides whether KEDA is installed.
"""

from __future__ import annotations

from typing import Any, Final

from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.modeldeployment import (
    DEFAULT_TARGET_REQUESTS_PER_SECOND,
    ModelDeploymentSpec,
)
from mlops_operator.resources.common import Owner, child_metadata

API_VERSION: Final = "keda.sh/v1alpha1"
KIND: Final = "ScaledObject"
#: Inference endpoints (label ``endpoint`` of the request counter): health checks and /metrics scrapes
#: must not keep a deployment awake.
INFERENCE_ENDPOINTS: Final = "/v2/models/.+/infer|/invocations"
#: Kubernetes cuts generated pod names' prefix (``<deployment>-<pod-template-hash>-``) to 58 characters.
_GENERATED_PREFIX_LIMIT: Final = 58
_MAX_EXACT_NAME: Final = 36


def pod_regex(deployment: str) -> str:
    """RE2 matching the pods of Deployment ``deployment`` (``<deployment>-<hash>-<suffix>``) and not those
    of ``<deployment>-challenger``; for long names (whose pod names Kubernetes cuts) the kept prefix."""
    literal = deployment.replace(".", "\\\\.")
    if len(deployment) <= _MAX_EXACT_NAME:
        return f"{literal}-[a-z0-9]+-[a-z0-9]+"
    prefix = f"{deployment}-"[:_GENERATED_PREFIX_LIMIT].replace(".", "\\\\.")
    return f"{prefix}.*"


def default_query(namespace: str, deployment: str) -> str:
    """Requests per second answered by the Deployment's pods, from the servers' own request counter as a
    Prometheus pod scrape labels it (``namespace``, ``pod``)."""
    return (
        f'sum(rate({pc.METRIC_REQUESTS}{{namespace="{namespace}",pod=~"{pod_regex(deployment)}",'
        f'endpoint=~"{INFERENCE_ENDPOINTS}"}}[1m]))'
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def scaled_object(owner: Owner, name: str, component: str, spec: ModelDeploymentSpec) -> dict[str, Any]:
    autoscaling = spec.autoscaling
    keda = autoscaling.keda
    assert keda is not None, "scaled_object() needs spec.autoscaling.keda"
    target = autoscaling.target_requests_per_second or DEFAULT_TARGET_REQUESTS_PER_SECOND
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": "requests-per-second",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": keda.prometheus_address,
                "query": keda.query or default_query(owner.namespace, name),
                "threshold": _number(target),
                "activationThreshold": _number(keda.activation_requests_per_second),
            },
        }
    ]
    if autoscaling.target_cpu_utilization is not None:
        triggers.append(
            {
                "type": "cpu",
                "name": "cpu",
                "metricType": "Utilization",
                "metadata": {"value": str(autoscaling.target_cpu_utilization)},
            }
        )
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": child_metadata(owner, name, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": 0,
            "maxReplicaCount": spec.replicas.effective_max,
            "cooldownPeriod": autoscaling.idle_seconds,
            "pollingInterval": keda.polling_interval_seconds,
            "triggers": triggers,
        },
    }
