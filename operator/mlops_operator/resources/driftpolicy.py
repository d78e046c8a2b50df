"""The TrainingJob a DriftPolicy creates on sustained drift: the policy's template, owned by the policy,
labelled with the evaluation that caused it. Pure."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from mlops_operator.api.v1alpha1 import API_VERSION, LABEL_PREFIX
from mlops_operator.api.v1alpha1.driftpolicy import TrainingJobTemplate
from mlops_operator.resources.common import Owner, child_metadata, label_child_name

COMPONENT: Final = "retrain"
EVALUATION_ANNOTATION: Final = f"{LABEL_PREFIX}drift-evaluation"
REASON_ANNOTATION: Final = f"{LABEL_PREFIX}drift-reason"


def retrain_name(owner: Owner, number: int) -> str:
    """``<policy>-retrain-<n>``: deterministic, so a repeated create is a harmless conflict. A TrainingJob's
    name must be a DNS-1035 label, the policy's need not be (``drift.v2``): then it is made one."""
    return label_child_name(owner.name, f"retrain-{number}")


def retrain_trainingjob(
    owner: Owner, template: TrainingJobTemplate, number: int, evaluated_at: dt.datetime, reason: str
) -> dict[str, Any]:
    metadata = child_metadata(owner, retrain_name(owner, number), COMPONENT)
    extra = template.metadata
    if extra is not None and extra.labels:
        metadata["labels"] = {**extra.labels, **metadata["labels"]}
    metadata["annotations"] = {
        **((extra.annotations if extra else None) or {}),
        EVALUATION_ANNOTATION: evaluated_at.isoformat().replace("+00:00", "Z"),
        REASON_ANNOTATION: reason[:1024],
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": metadata,
        "spec": template.spec.to_dict(),
    }
