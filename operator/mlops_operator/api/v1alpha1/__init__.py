"""mlops.dev/v1alpha1: names shared by every layer (group, version, kinds, label prefix) and the pydantic
models of the three kinds, the only source of the CRD schemas.

Controllers parse at the boundary, once per event::

    spec = TrainingJobSpec.model_validate(plain(body["spec"]))   # or TrainingJob.from_body(body)

and write back with ``model.to_dict()`` (camelCase, unset fields left out).
"""

from typing import Final

GROUP: Final = "mlops.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "mlops"

#: Prefix of every label and annotation the project sets (kopf's own annotations included).
LABEL_PREFIX: Final = "mlops.dev/"
#: Field manager used for every server-side apply the operator performs.
FIELD_MANAGER: Final = "mlops-operator"

#: Repository of the runtime image (trainer + model server); the tag is the operator's version.
RUNTIME_IMAGE_REPOSITORY: Final = "ghcr.io/mlops-operator/runtime"


def default_runtime_image(operator_version: str) -> str:
    """The runtime image used when a spec sets no ``image``: ``ghcr.io/mlops-operator/runtime:<version>``."""
    tag = operator_version.split("+", 1)[0] or "latest"
    return f"{RUNTIME_IMAGE_REPOSITORY}:{tag}"


# The models import nothing from this module, so importing them after the constants is cycle-free.
from . import driftpolicy, modeldeployment, trainingjob  # noqa: E402
from .common import (  # noqa: E402
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    READY,
    VALID,
    ApiModel,
    Condition,
    ConditionStatus,
    GateSpec,
    KindInfo,
    MetricThreshold,
    MustBeat,
    Rule,
    StatusModel,
    find_condition,
    plain,
    set_condition,
    utcnow,
)
from .driftpolicy import DriftPolicy, DriftPolicySpec, DriftPolicyStatus  # noqa: E402
from .modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus  # noqa: E402
from .trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus  # noqa: E402

#: The kinds of this version, in CRD generation order.
KINDS: Final[tuple[KindInfo, ...]] = (trainingjob.INFO, modeldeployment.INFO, driftpolicy.INFO)

#: Resource model of each kind, by kind name (``RESOURCES["TrainingJob"].from_body(body)``).
RESOURCES: Final[dict[str, type[TrainingJob] | type[ModelDeployment] | type[DriftPolicy]]] = {
    "TrainingJob": TrainingJob,
    "ModelDeployment": ModelDeployment,
    "DriftPolicy": DriftPolicy,
}

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "FIELD_MANAGER",
    "GPU_PRODUCT_LABEL",
    "GPU_RESOURCE",
    "GROUP",
    "KINDS",
    "LABEL_PREFIX",
    "READY",
    "RESOURCES",
    "RUNTIME_IMAGE_REPOSITORY",
    "VALID",
    "VERSION",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "DriftPolicy",
    "DriftPolicySpec",
    "DriftPolicyStatus",
    "GateSpec",
    "KindInfo",
    "MetricThreshold",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "MustBeat",
    "Rule",
    "StatusModel",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
    "default_runtime_image",
    "driftpolicy",
    "find_condition",
    "modeldeployment",
    "plain",
    "set_condition",
    "trainingjob",
    "utcnow",
]
