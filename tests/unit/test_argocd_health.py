"""The Argo CD health checks in docs/argocd/*.lua, run by a real Lua 5.1 (lupa; Argo CD's gopher-lua speaks
5.1) on status objects built from the operator's own status models, so a renamed status field breaks here.

Argo CD calls the script with the live object as global ``obj`` and reads ``{status, message}`` back.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa
import pytest
import yaml

from mlops_operator.api.v1alpha1.common import Condition
from mlops_operator.api.v1alpha1.driftpolicy import DriftPolicyStatus
from mlops_operator.api.v1alpha1.modeldeployment import ModelDeploymentStatus
from mlops_operator.api.v1alpha1.trainingjob import Failure, TrainingJobStatus, TrainingProgress

DOCS = Path(__file__).resolve().parents[2] / "docs" / "argocd"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def cond(type_: str, status: str, reason: str, message: str = "", generation: int = 1) -> Condition:
    return Condition(
        type=type_,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        lastTransitionTime=NOW,
        observedGeneration=generation,
    )


def obj(kind: str, status: Any | None, generation: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "iris", "namespace": "ml", "generation": generation},
        "spec": {},
    }
    if status is not None:
        body["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def health(script: str, body: dict[str, Any]) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(body, recursive=True)
    result = lua.execute((DOCS / script).read_text())
    assert result is not None, "the script returned nothing"
    status, message = result["status"], result["message"]
    assert status in ARGO_STATUSES
    return str(status), str(message or "")


def tj(phase: str | None, *conditions: Condition, **fields: Any) -> dict[str, Any]:
    return obj("TrainingJob", TrainingJobStatus(phase=phase, conditions=list(conditions), **fields))


@pytest.mark.parametrize(
    ("body", "expected", "in_message"),
    [
        (obj("TrainingJob", None), "Progressing", "Waiting"),
        (
            tj("Pending", cond("Ready", "False", "Pending", "waiting for 1 pod(s) to be scheduled")),
            "Progressing",
            "scheduled",
        ),
        (tj("Queued"), "Progressing", "Kueue"),
        (
            tj("Running", progress=TrainingProgress(epoch=3, total_epochs=20, summary="3/20")),
            "Progressing",
            "3/20",
        ),
        (tj("Suspended", cond("Suspended", "True", "Suspended")), "Suspended", "suspended"),
        (tj("Succeeded", cond("Ready", "True", "Succeeded"), modelVersion=4), "Healthy", "version 4"),
        (
            tj("Failed", failure=Failure(reason="Unschedulable", message="0/3 nodes have 4 nvidia.com/gpu")),
            "Degraded",
            "Unschedulable: 0/3 nodes",
        ),
        (
            tj("Failed", cond("Valid", "False", "InvalidSpec", "spec.dataset.uri: required")),
            "Degraded",
            "InvalidSpec",
        ),
        (
            obj("TrainingJob", TrainingJobStatus(phase="Succeeded", observedGeneration=1), generation=2),
            "Progressing",
            "generation 2",
        ),
    ],
)
def test_trainingjob(body: dict[str, Any], expected: str, in_message: str) -> None:
    status, message = health("trainingjob.lua", body)
    assert status == expected, message
    assert in_message in message


def md(*conditions: Condition, **fields: Any) -> dict[str, Any]:
    return obj("ModelDeployment", ModelDeploymentStatus(conditions=list(conditions), **fields))


@pytest.mark.parametrize(
    ("body", "expected", "in_message"),
    [
        (obj("ModelDeployment", None), "Progressing", "Waiting"),
        (
            md(
                cond("Valid", "True", "SpecValid"),
                cond("ModelResolved", "True", "Resolved"),
                cond("Available", "True", "MinimumReplicasAvailable"),
                cond("Progressing", "False", "RolloutComplete"),
                cond("Ready", "True", "Serving", "serving models:/iris/3"),
                resolvedVersion=3,
            ),
            "Healthy",
            "version 3",
        ),
        # the registry is down but version 2 keeps serving: still healthy (ServingLastKnownVersion)
        (
            md(
                cond("ModelResolved", "False", "RegistryUnavailable", "connection refused"),
                cond("Available", "True", "MinimumReplicasAvailable"),
                cond("Ready", "True", "ServingLastKnownVersion"),
                resolvedVersion=2,
            ),
            "Healthy",
            "version 2",
        ),
        # nothing was ever resolved: degraded with the registry's reason
        (
            md(
                cond("ModelResolved", "False", "RegistryUnavailable", "http://127.0.0.1:9 unreachable"),
                cond("Available", "False", "NoDeployment"),
                cond("Ready", "False", "RegistryUnavailable"),
            ),
            "Degraded",
            "RegistryUnavailable",
        ),
        (
            md(cond("ModelResolved", "False", "AliasNotFound", "no alias champion")),
            "Degraded",
            "AliasNotFound",
        ),
        (
            md(
                cond("ModelResolved", "True", "Resolved"),
                cond("Available", "False", "ReplicasUnavailable"),
                cond("Progressing", "True", "RollingOut", "rolling out model version 4 (primary)"),
                cond("Ready", "False", "ReplicasUnavailable"),
                resolvedVersion=4,
            ),
            "Progressing",
            "ReplicasUnavailable",
        ),
        (
            md(
                cond("ModelResolved", "True", "Resolved"),
                cond("Available", "False", "ReplicasUnavailable", "ImagePullBackOff"),
                cond("Progressing", "False", "RolloutComplete"),
                cond("Ready", "False", "ReplicasUnavailable"),
                resolvedVersion=4,
            ),
            "Degraded",
            "ImagePullBackOff",
        ),
        (md(cond("Valid", "False", "InvalidSpec", "replicas.min > replicas.max")), "Degraded", "InvalidSpec"),
    ],
)
def test_modeldeployment(body: dict[str, Any], expected: str, in_message: str) -> None:
    status, message = health("modeldeployment.lua", body)
    assert status == expected, message
    assert in_message in message


def dp(*conditions: Condition, **fields: Any) -> dict[str, Any]:
    return obj("DriftPolicy", DriftPolicyStatus(conditions=list(conditions), **fields))


@pytest.mark.parametrize(
    ("body", "expected", "in_message"),
    [
        (obj("DriftPolicy", None), "Progressing", "first evaluation"),
        (
            dp(
                cond("Ready", "True", "Evaluating", "evaluating every 300s"),
                cond("Drifted", "Unknown", "InsufficientData", "12 of 200 samples"),
            ),
            "Healthy",
            "InsufficientData",
        ),
        (
            dp(
                cond("Ready", "True", "Evaluating"),
                cond("Drifted", "False", "NoDrift", "0/4 features drifted"),
                drifted=False,
            ),
            "Healthy",
            "NoDrift",
        ),
        (
            dp(
                cond("Ready", "True", "Evaluating"),
                cond("Drifted", "True", "DriftDetected", "3/4 features drifted (petal_length psi=0.41)"),
                drifted=True,
            ),
            "Degraded",
            "petal_length",
        ),
        (
            dp(
                cond("Ready", "True", "Evaluating"),
                cond("Drifted", "True", "DriftDetected"),
                cond("Retraining", "True", "RetrainStarted", "created TrainingJob iris-retrain-1"),
            ),
            "Progressing",
            "iris-retrain-1",
        ),
        (
            dp(
                cond("Ready", "True", "Evaluating"),
                cond(
                    "AwaitingApproval", "True", "AwaitingApproval", "version 5 beat the champion; approve it"
                ),
            ),
            "Suspended",
            "approve",
        ),
        (
            dp(cond("Ready", "False", "TargetNotFound", "ModelDeployment iris not found in ml")),
            "Degraded",
            "TargetNotFound",
        ),
        (dp(cond("Valid", "False", "InvalidSpec", "threshold must be > 0")), "Degraded", "InvalidSpec"),
    ],
)
def test_driftpolicy(body: dict[str, Any], expected: str, in_message: str) -> None:
    status, message = health("driftpolicy.lua", body)
    assert status == expected, message
    assert in_message in message


def test_argocd_cm_embeds_the_scripts_verbatim() -> None:
    data = yaml.safe_load((DOCS / "argocd-cm.yaml").read_text())["data"]
    for kind, script in [
        ("TrainingJob", "trainingjob.lua"),
        ("ModelDeployment", "modeldeployment.lua"),
        ("DriftPolicy", "driftpolicy.lua"),
    ]:
        assert data[f"resource.customizations.health.mlops.dev_{kind}"] == (DOCS / script).read_text()
