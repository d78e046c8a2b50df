"""Invalid manifests are rejected by the models with a message naming the field.

``INVALID_CASES`` is a table of (example, edits, expected text): each case starts from a valid example under
``examples/``, applies edits, and must fail validation with ``expected`` in the error. The same table is
meant for the cluster tier, against a real kube-apiserver: for CEL rules the apiserver's message is the
model's message; for plain schema checks (enum, range, pattern) both name the field path. Cases with
``apiserver=False`` are only caught by the operator's parsing (the apiserver's schema cannot express them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import RESOURCES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

DELETE: Any = object()


@dataclass(frozen=True)
class Case:
    id: str
    example: str
    edits: dict[str, Any]
    expected: str
    #: Whether the apiserver rejects it too (False: only the operator's parsing can).
    apiserver: bool = True
    notes: str = field(default="")


def load_example(name: str) -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def apply_edits(doc: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    """Set (or DELETE) dotted paths, e.g. ``spec.resources.gpus``; list indexes are numbers."""
    doc = copy.deepcopy(doc)
    for path, value in edits.items():
        parts = path.split(".")
        node: Any = doc
        for part in parts[:-1]:
            key: Any = int(part) if part.isdigit() else part
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]
        last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return doc


TJ, TJ_GPU = "trainingjob-iris.yaml", "trainingjob-multinode-gpu.yaml"
MD, MD_CANARY = "modeldeployment.yaml", "modeldeployment-canary.yaml"
DP = "driftpolicy.yaml"

INVALID_CASES: list[Case] = [
    # ---- TrainingJob
    Case(
        "tj-builtin-and-command",
        TJ,
        {"spec.trainer.command": ["python", "train.py"]},
        "set exactly one of trainer.builtin (the built-in trainer) or user code",
    ),
    Case("tj-no-trainer", TJ, {"spec.trainer.builtin": DELETE}, "set exactly one of trainer.builtin"),
    Case(
        "tj-command-and-script",
        TJ,
        {
            "spec.trainer.builtin": DELETE,
            "spec.trainer.command": ["python"],
            "spec.trainer.script": "print(1)",
        },
        "trainer.command and trainer.script are mutually exclusive",
    ),
    Case(
        "tj-builtin-with-image",
        TJ,
        {"spec.trainer.image": "example.com/me/trainer:1"},
        "trainer.image is only for user code",
    ),
    Case(
        "tj-builtin-with-args",
        TJ,
        {"spec.trainer.args": ["--lr", "0.1"]},
        "trainer.args is only for user code",
    ),
    Case(
        "tj-split-too-large",
        TJ,
        {"spec.dataset.split.validation": 0.6, "spec.dataset.split.test": 0.5},
        "dataset.split: validation + test must be < 1",
    ),
    Case(
        "tj-target-in-features",
        TJ,
        {"spec.dataset.features": ["sepal_length", "species"]},
        "dataset.features must not contain dataset.target",
    ),
    Case("tj-duplicate-feature", TJ, {"spec.dataset.features": ["a", "a"]}, "spec.dataset.features"),
    Case(
        "tj-gputype-without-gpus",
        TJ,
        {"spec.resources.gpuType": "NVIDIA-H100-80GB-HBM3"},
        "resources.gpuType requires resources.gpus > 0",
    ),
    Case(
        "tj-procpernode-above-gpus",
        TJ_GPU,
        {"spec.resources.procPerNode": 8},
        "resources.procPerNode must not exceed resources.gpus",
    ),
    Case(
        "tj-ratio-threshold-out-of-range",
        TJ,
        {"spec.gate.metrics.0.threshold": 90},
        "gate.metrics[].threshold must be between 0 and 1",
    ),
    Case("tj-empty-gate", TJ, {"spec.gate": {}}, "gate: set gate.metrics and/or gate.mustBeat"),
    Case("tj-reserved-alias", TJ, {"spec.registration.alias": "latest"}, "reserved by MLflow"),
    Case("tj-version-like-alias", TJ, {"spec.registration.alias": "v3"}, "reserved by MLflow"),
    Case("tj-relative-dataset-uri", TJ, {"spec.dataset.uri": "iris.csv"}, "spec.dataset.uri"),
    Case("tj-unknown-format", TJ, {"spec.dataset.format": "json"}, "spec.dataset.format"),
    Case("tj-bad-cpu-quantity", TJ, {"spec.resources.cpu": "two"}, "spec.resources.cpu"),
    Case("tj-negative-memory", TJ, {"spec.resources.memory": -1}, "spec.resources.memory"),
    Case("tj-zero-epochs", TJ, {"spec.trainer.builtin.epochs": 0}, "spec.trainer.builtin.epochs"),
    Case("tj-zero-nodes", TJ, {"spec.resources.nodes": 0}, "spec.resources.nodes"),
    Case("tj-unknown-field", TJ, {"spec.trainer.builtin.layers": [8]}, "layers"),
    Case(
        "tj-toleration-exists-with-value",
        TJ_GPU,
        {"spec.scheduling.tolerations.0.value": "present"},
        "tolerations[].value must be empty when tolerations[].operator is Exists",
    ),
    Case(
        "tj-toleration-seconds-without-noexecute",
        TJ_GPU,
        {"spec.scheduling.tolerations.0.tolerationSeconds": 60},
        "tolerations[].tolerationSeconds requires tolerations[].effect NoExecute",
    ),
    Case(
        "tj-env-value-and-valuefrom",
        TJ,
        {
            "spec.trainer.env": [
                {"name": "X", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]
        },
        "env[].value and env[].valueFrom are mutually exclusive",
    ),
    Case("tj-missing-model", TJ, {"spec.model": DELETE}, "spec.model"),
    Case(
        "tj-nested-hyperparameter",
        TJ,
        {"spec.trainer.hyperparameters": {"layers": {"a": 1}}},
        "spec.trainer.hyperparameters",
        apiserver=False,
        notes="values are x-kubernetes-preserve-unknown-fields: CEL cannot type them, so only the "
        "operator checks",
    ),
    # ---- ModelDeployment
    Case(
        "md-alias-and-version",
        MD,
        {"spec.model.version": 3},
        "model: set exactly one of model.alias (follow an alias, e.g. champion) or model.version",
    ),
    Case(
        "md-neither-alias-nor-version",
        MD,
        {"spec.model.alias": DELETE},
        "model: set exactly one of model.alias",
    ),
    Case(
        "md-min-above-max",
        MD,
        {"spec.replicas.min": 6},
        "replicas.min must be less than or equal to replicas.max",
    ),
    Case(
        "md-zero-min-without-scale-to-zero",
        MD,
        {"spec.replicas.min": 0},
        "replicas.min may be 0 only with autoscaling.scaleToZero: true",
    ),
    Case(
        "md-scale-to-zero-with-min",
        MD,
        {"spec.autoscaling.scaleToZero": True},
        "autoscaling.scaleToZero requires replicas.min: 0",
    ),
    Case(
        "md-two-autoscaling-targets",
        MD,
        {"spec.autoscaling.targetRequestsPerSecond": 10},
        "set at most one of autoscaling.targetCPUUtilization and autoscaling.targetRequestsPerSecond",
    ),
    Case(
        "md-traffic-over-100",
        MD_CANARY,
        {"spec.challenger.trafficPercent": 150},
        "spec.challenger.trafficPercent",
    ),
    Case(
        "md-challenger-same-alias",
        MD_CANARY,
        {"spec.challenger.alias": "champion"},
        "challenger must name a different alias or version than model",
    ),
    Case(
        "md-challenger-alias-and-version",
        MD_CANARY,
        {"spec.challenger.version": 4},
        "challenger: set exactly one of challenger.alias or challenger.version",
    ),
    Case("md-sample-rate-over-1", MD, {"spec.logging.sampleRate": 1.5}, "spec.logging.sampleRate"),
    Case("md-bad-service-type", MD, {"spec.serviceType": "Ingress"}, "spec.serviceType"),
    Case("md-version-zero", MD, {"spec.model.alias": DELETE, "spec.model.version": 0}, "spec.model.version"),
    Case(
        "md-cpu-target-over-100", MD, {"spec.autoscaling.targetCPUUtilization": 120}, "targetCPUUtilization"
    ),
    # ---- DriftPolicy
    Case(
        "dp-threshold-with-auto",
        DP,
        {"spec.method": "auto", "spec.overrides": DELETE},
        "threshold requires an explicit method",
    ),
    Case(
        "dp-p-value-out-of-range",
        DP,
        {"spec.threshold": 1.5},
        "threshold is a p-value for method ks or chi2 and must be between 0 and 1",
    ),
    Case(
        "dp-override-unknown-feature",
        DP,
        {"spec.overrides.0.feature": "colour"},
        "overrides[].feature must be one of features",
    ),
    Case(
        "dp-override-p-value-out-of-range",
        DP,
        {"spec.overrides.0.method": "chi2", "spec.overrides.0.threshold": 2},
        "overrides[].threshold is a p-value for method ks or chi2",
    ),
    Case(
        "dp-override-inherited-p-value-out-of-range",
        DP,
        {"spec.overrides.0.method": DELETE, "spec.overrides.0.threshold": 2},
        "overrides[].threshold without its own method inherits method",
    ),
    Case(
        "dp-override-auto-with-threshold",
        DP,
        {"spec.overrides.0.method": "auto"},
        "overrides[].threshold requires an explicit overrides[].method",
    ),
    Case(
        "dp-promotion-without-action",
        DP,
        {"spec.action": DELETE},
        "promotion requires action.retrain",
    ),
    Case(
        "dp-auto-promotion-without-gate",
        DP,
        {"spec.promotion.gate": DELETE, "spec.action.retrain.template.spec.gate": DELETE},
        "promotion.mode auto requires a gate",
    ),
    Case("dp-drift-share-zero", DP, {"spec.driftShare": 0}, "spec.driftShare"),
    Case("dp-window-too-short", DP, {"spec.windowSeconds": 10}, "spec.windowSeconds"),
    Case("dp-bad-target-name", DP, {"spec.targetRef.name": "Bad_Name"}, "spec.targetRef.name"),
    Case(
        "dp-template-invalid-trainer",
        DP,
        {"spec.action.retrain.template.spec.trainer.script": "print(1)"},
        "set exactly one of trainer.builtin",
    ),
    Case("dp-retrains-per-day", DP, {"spec.action.maxRetrainsPerDay": 100}, "spec.action.maxRetrainsPerDay"),
]


def invalid_manifest(case: Case) -> dict[str, Any]:
    return apply_edits(load_example(case.example), case.edits)


def test_cases_have_unique_ids() -> None:
    ids = [c.id for c in INVALID_CASES]
    assert len(ids) == len(set(ids))
    assert sum(c.apiserver for c in INVALID_CASES) >= 20


@pytest.mark.parametrize("case", INVALID_CASES, ids=[c.id for c in INVALID_CASES])
def test_invalid_manifest_is_rejected_naming_the_field(case: Case) -> None:
    doc = invalid_manifest(case)
    model = RESOURCES[doc["kind"]]
    with pytest.raises(ValidationError) as excinfo:
        model.model_validate(doc)
    assert case.expected in str(excinfo.value), str(excinfo.value)


@pytest.mark.parametrize("case", INVALID_CASES, ids=[c.id for c in INVALID_CASES])
def test_each_case_only_breaks_its_example(case: Case) -> None:
    """The base example is valid, so the edit is what makes the case fail."""
    doc = load_example(case.example)
    RESOURCES[doc["kind"]].model_validate(doc)


def test_apply_edits_sets_and_deletes() -> None:
    doc = {"a": {"b": [{"c": 1}]}}
    out = apply_edits(doc, {"a.b.0.c": 2, "a.d": 3})
    assert out == {"a": {"b": [{"c": 2}], "d": 3}}
    assert apply_edits(out, {"a.d": DELETE}) == {"a": {"b": [{"c": 2}]}}
    assert doc == {"a": {"b": [{"c": 1}]}}


def test_a_null_field_is_an_absent_one_as_the_apiserver_reads_it() -> None:
    """No field of the CRDs is nullable: the apiserver prunes ``null`` before defaulting, so a defaulted
    field gets its default and a required one is missing (found by tests/cluster/test_api_properties.py)."""
    body = load_example("driftpolicy.yaml")
    absent = RESOURCES["DriftPolicy"].model_validate(apply_edits(body, {"spec.windowSeconds": DELETE}))
    null = RESOURCES["DriftPolicy"].model_validate(apply_edits(body, {"spec.windowSeconds": None}))
    assert null == absent
    with pytest.raises(ValidationError, match=r"spec\.targetRef\s+Field required"):
        RESOURCES["DriftPolicy"].model_validate(apply_edits(body, {"spec.targetRef": None}))
    # an unknown field stays unknown, null or not (the apiserver's strict field validation refuses it)
    with pytest.raises(ValidationError, match=r"spec\.unknownField\s+Extra inputs are not permitted"):
        RESOURCES["DriftPolicy"].model_validate(apply_edits(body, {"spec.unknownField": None}))
