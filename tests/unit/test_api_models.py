"""The pydantic models: defaults (and their parity with the CRD defaults), round trips, helpers, layering."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mlops_operator.api import crdgen
from mlops_operator.api.v1alpha1 import (
    API_VERSION,
    FIELD_MANAGER,
    GROUP,
    KINDS,
    LABEL_PREFIX,
    RESOURCES,
    Condition,
    DriftPolicySpec,
    ModelDeploymentSpec,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
    default_runtime_image,
    find_condition,
    set_condition,
)
from mlops_operator.api.v1alpha1.common import MetricThreshold, MustBeat, plain, utcnow
from mlops_operator.api.v1alpha1.driftpolicy import DEFAULT_THRESHOLDS
from mlops_operator.api.v1alpha1.modeldeployment import Replicas
from mlops_operator.api.v1alpha1.trainingjob import DatasetSpec, TrainingProgress, TrainingResources

ROOT = Path(__file__).resolve().parents[2]

MINIMAL_SPECS: dict[str, dict[str, Any]] = {
    "TrainingJob": {
        "model": {"name": "m"},
        "dataset": {"uri": "/data/x.csv", "target": "y"},
        "trainer": {"builtin": {"task": "regression"}},
    },
    "ModelDeployment": {"model": {"name": "m", "alias": "champion"}},
    "DriftPolicy": {"targetRef": {"name": "m"}},
}


def apiserver_defaults(value: Any, node: dict[str, Any]) -> Any:
    """Apply a structural schema's defaults the way the apiserver does (absent fields, recursively)."""
    if isinstance(value, dict) and node.get("type") == "object":
        for name, sub in node.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apiserver_defaults(value[name], sub)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                apiserver_defaults(item, extra)
    elif isinstance(value, list) and node.get("type") == "array":
        for item in value:
            apiserver_defaults(item, node["items"])
    return value


def test_constants_are_kept() -> None:
    assert GROUP == "mlops.dev"
    assert API_VERSION == "mlops.dev/v1alpha1"
    assert LABEL_PREFIX == "mlops.dev/"
    assert FIELD_MANAGER == "mlops-operator"
    assert [k.kind for k in KINDS] == ["TrainingJob", "ModelDeployment", "DriftPolicy"]


def test_trainingjob_defaults() -> None:
    spec = TrainingJobSpec.model_validate(MINIMAL_SPECS["TrainingJob"])
    assert spec.dataset.split.validation == 0.2
    assert spec.dataset.split.test == 0.0
    assert spec.dataset.split.seed == 42
    assert spec.dataset.features is None
    builtin = spec.trainer.builtin
    assert builtin is not None
    assert (builtin.hidden, builtin.epochs, builtin.batch_size, builtin.lr) == ([64, 64], 20, 64, 0.001)
    assert builtin.optimizer == "adam"
    assert builtin.early_stopping is None
    assert (spec.resources.cpu, spec.resources.memory, spec.resources.gpus, spec.resources.nodes) == (
        "1",
        "2Gi",
        0,
        1,
    )
    assert spec.resources.effective_proc_per_node == 1
    assert spec.resources.world_size == 1
    assert spec.scheduling.suspend is False
    assert spec.run_policy.backoff_limit == 3
    assert spec.gate is None and spec.registration is None and spec.mlflow is None and spec.image is None
    assert spec.experiment_name == "m"


def test_mutable_defaults_are_not_shared() -> None:
    a = TrainingJobSpec.model_validate(MINIMAL_SPECS["TrainingJob"])
    b = TrainingJobSpec.model_validate(MINIMAL_SPECS["TrainingJob"])
    assert a.trainer.builtin is not None and b.trainer.builtin is not None
    a.trainer.builtin.hidden.append(1)
    assert b.trainer.builtin.hidden == [64, 64]


def test_modeldeployment_defaults() -> None:
    spec = ModelDeploymentSpec.model_validate(MINIMAL_SPECS["ModelDeployment"])
    assert (spec.replicas.min, spec.replicas.max, spec.replicas.effective_max) == (1, None, 1)
    assert spec.autoscaling_enabled is False
    assert spec.autoscaling.scale_to_zero is False
    assert spec.service_type == "ClusterIP"
    assert spec.logging.sample_rate == 0.0
    assert spec.challenger is None


def test_driftpolicy_defaults() -> None:
    spec = DriftPolicySpec.model_validate(MINIMAL_SPECS["DriftPolicy"])
    assert spec.method == "auto"
    assert (spec.drift_share, spec.window_seconds, spec.min_samples) == (0.5, 3600, 500)
    assert (spec.interval_seconds, spec.for_seconds) == (300, 0)
    assert spec.action is None and spec.promotion is None


@pytest.mark.parametrize("info", KINDS, ids=[k.kind for k in KINDS])
def test_python_defaults_match_crd_defaults(info: Any) -> None:
    """A body defaulted by the apiserver parses to the same model as the raw body: no default drifts."""
    spec_schema = crdgen.openapi_schema(info)["properties"]["spec"]
    raw = MINIMAL_SPECS[info.kind]
    defaulted = apiserver_defaults(copy.deepcopy(raw), spec_schema)
    assert info.spec.model_validate(raw).to_dict() == defaulted
    assert info.spec.model_validate(defaulted) == info.spec.model_validate(raw)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_defaults_match_crd_defaults(path: Path) -> None:
    import yaml

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    info = next(i for i in KINDS if i.kind == doc["kind"])
    spec_schema = crdgen.openapi_schema(info)["properties"]["spec"]
    defaulted = apiserver_defaults(copy.deepcopy(doc["spec"]), spec_schema)
    assert info.spec.model_validate(doc["spec"]).to_dict() == defaulted


def test_round_trip_by_alias_and_by_name() -> None:
    spec = TrainingJobSpec.model_validate(MINIMAL_SPECS["TrainingJob"])
    body = spec.to_dict()
    assert "runPolicy" in body and "run_policy" not in body
    assert body["trainer"]["builtin"]["batchSize"] == 64
    assert TrainingJobSpec.model_validate(body) == spec
    by_name = TrainingJobSpec(
        model={"name": "m"},
        dataset={"uri": "/data/x.csv", "target": "y"},
        trainer={"builtin": {"task": "regression"}},
        run_policy={"backoff_limit": 3},
    )
    assert by_name == spec
    json.dumps(body)  # JSON-ready


def test_to_dict_leaves_out_unset_optionals() -> None:
    body = ModelDeploymentSpec.model_validate(MINIMAL_SPECS["ModelDeployment"]).to_dict()
    assert "challenger" not in body
    assert "max" not in body["replicas"]
    assert "version" not in body["model"]
    assert body["autoscaling"] == {"scaleToZero": False, "idleSeconds": 300}


def test_special_alias_target_cpu_utilization() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {**MINIMAL_SPECS["ModelDeployment"], "autoscaling": {"targetCPUUtilization": 60}}
    )
    assert spec.autoscaling.target_cpu_utilization == 60
    assert spec.to_dict()["autoscaling"]["targetCPUUtilization"] == 60


def test_spec_rejects_unknown_fields_status_ignores_them() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TrainingJobSpec.model_validate({**MINIMAL_SPECS["TrainingJob"], "replicas": 2})
    status = TrainingJobStatus.model_validate({"phase": "Running", "somethingNewer": {"a": 1}})
    assert status.phase == "Running"


def test_from_body_accepts_mapping_views() -> None:
    """kopf hands out read-only Mapping views, not dicts."""
    body = types.MappingProxyType(
        {
            "apiVersion": "mlops.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": types.MappingProxyType({"name": "x", "namespace": "ns", "uid": "u", "generation": 2}),
            "spec": types.MappingProxyType(MINIMAL_SPECS["TrainingJob"]),
            "status": {"phase": "Pending", "conditions": []},
        }
    )
    tj = TrainingJob.from_body(body)
    assert tj.metadata.name == "x" and tj.metadata.generation == 2
    assert tj.spec.model.name == "m"
    assert tj.status is not None and tj.status.phase == "Pending"
    manifest = tj.to_dict()
    assert manifest["apiVersion"] == "mlops.dev/v1alpha1"
    assert manifest["kind"] == "TrainingJob"
    assert manifest["metadata"]["uid"] == "u"  # unknown metadata is kept
    assert RESOURCES["TrainingJob"] is TrainingJob


def test_plain_copies_deeply() -> None:
    inner = [types.MappingProxyType({"a": (1, 2)})]
    out = plain(types.MappingProxyType({"x": inner}))
    assert out == {"x": [{"a": [1, 2]}]}
    assert isinstance(out["x"][0], dict)


def test_set_condition_keeps_transition_time_unless_status_changes() -> None:
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    t1 = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
    conds = set_condition([], "Ready", "False", "Pending", "waiting", 1, now=t0)
    conds = set_condition(conds, "Valid", "True", "Validated", "", 1, now=t0)
    same = set_condition(conds, "Ready", "False", "StillPending", "still waiting", 2, now=t1)
    ready = find_condition(same, "Ready")
    assert ready is not None
    assert ready.last_transition_time == t0
    assert (ready.reason, ready.message, ready.observed_generation) == ("StillPending", "still waiting", 2)
    changed = set_condition(same, "Ready", "True", "Serving", "", 2, now=t1)
    ready = find_condition(changed, "Ready")
    assert ready is not None and ready.last_transition_time == t1
    assert [c.type for c in changed] == ["Ready", "Valid"]
    assert find_condition(changed, "Missing") is None
    assert len(conds) == 2  # input untouched


def test_condition_serializes_like_metav1() -> None:
    cond = Condition(
        type="Ready",
        status="True",
        reason="Serving",
        message="",
        last_transition_time=dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC),
    )
    assert cond.to_dict() == {
        "type": "Ready",
        "status": "True",
        "reason": "Serving",
        "message": "",
        "lastTransitionTime": "2025-01-01T12:00:00Z",
    }
    with pytest.raises(ValidationError):
        Condition.model_validate({**cond.to_dict(), "reason": "not camel case"})
    assert utcnow().microsecond == 0


def test_progress_summary_and_non_finite_metrics() -> None:
    p = TrainingProgress.of(3, 20, {"val_loss": 0.5, "bad": float("nan"), "worse": float("inf")})
    assert p.summary == "3/20"
    assert p.metrics == {"val_loss": 0.5}
    assert TrainingProgress.of(4, None).summary == "4"


def test_dataset_format_resolution() -> None:
    def fmt(uri: str, format: str | None = None) -> str:
        return DatasetSpec.model_validate({"uri": uri, "target": "y", "format": format}).resolved_format()

    assert fmt("s3://b/x.parquet") == "parquet"
    assert fmt("pvc://c/x.PQ") == "parquet"
    assert fmt("https://h/x.csv?token=1") == "csv"
    assert fmt("/data/x") == "csv"
    assert fmt("/data/x.parquet", "csv") == "csv"


def test_ddp_world_size() -> None:
    r = TrainingResources.model_validate({"nodes": 2, "gpus": 4})
    assert (r.effective_proc_per_node, r.world_size, r.total_gpus) == (4, 8, 8)
    r = TrainingResources.model_validate({"nodes": 3, "procPerNode": 2})
    assert (r.effective_proc_per_node, r.world_size, r.total_gpus) == (2, 6, 0)


def test_replicas_effective_max() -> None:
    assert Replicas(min=2).effective_max == 2
    assert Replicas(min=0).effective_max == 1
    assert Replicas(min=1, max=4).effective_max == 4


def test_gate_helpers() -> None:
    assert MetricThreshold(name="val_accuracy", op=">=", threshold=0.9).passed(0.9)
    assert not MetricThreshold(name="val_accuracy", op=">", threshold=0.9).passed(0.9)
    assert MetricThreshold(name="val_rmse", op="<", threshold=3).passed(2.5)
    assert MetricThreshold(name="val_loss", threshold=100).op == ">="  # non-ratio metric: any threshold
    beat = MustBeat(metric="test_f1", margin=0.01)
    assert beat.alias == "champion"
    assert beat.beats(0.92, 0.91) and not beat.beats(0.915, 0.91)
    lower = MustBeat(metric="test_rmse", direction="minimize")
    assert lower.beats(1.0, 1.0) and not lower.beats(1.1, 1.0)


def test_drift_threshold_resolution() -> None:
    spec = DriftPolicySpec.model_validate(
        {
            "targetRef": {"name": "m"},
            "method": "ks",
            "threshold": 0.01,
            "overrides": [
                {"feature": "a", "method": "psi", "threshold": 0.3},
                {"feature": "b", "method": "chi2"},
            ],
        }
    )
    assert spec.method_for("a") == "psi" and spec.threshold_for("a", "psi") == 0.3
    assert spec.method_for("b") == "chi2" and spec.threshold_for("b", "chi2") == 0.01
    assert spec.method_for("c") == "ks"
    auto = DriftPolicySpec.model_validate({"targetRef": {"name": "m"}})
    assert auto.threshold_for("x", "wasserstein") == DEFAULT_THRESHOLDS["wasserstein"]


def test_hyperparameters_are_scalars_with_mlflow_keys() -> None:
    base = copy.deepcopy(MINIMAL_SPECS["TrainingJob"])
    base["trainer"]["hyperparameters"] = {"lr": 0.1, "layers": 3, "opt": "adam", "amp": True}
    spec = TrainingJobSpec.model_validate(base)
    assert spec.trainer.hyperparameters == {"lr": 0.1, "layers": 3, "opt": "adam", "amp": True}
    assert type(spec.trainer.hyperparameters["layers"]) is int
    assert type(spec.trainer.hyperparameters["amp"]) is bool
    base["trainer"]["hyperparameters"] = {"bad key!": 1}
    with pytest.raises(ValidationError, match="not valid MLflow parameter names"):
        TrainingJobSpec.model_validate(base)


def test_default_runtime_image() -> None:
    assert default_runtime_image("0.1.0") == "ghcr.io/mlops-operator/runtime:0.1.0"
    assert default_runtime_image("0.0.0+unknown") == "ghcr.io/mlops-operator/runtime:0.0.0"


def test_api_layer_imports_neither_kopf_nor_other_layers() -> None:
    code = (
        "import sys, mlops_operator.api.crdgen, mlops_operator.api.docgen, mlops_operator.api.v1alpha1;"
        "bad = sorted(m for m in sys.modules if m == 'kopf' or m.startswith(('kopf.', "
        "'mlops_operator.controllers', 'mlops_operator.resources', 'mlops_operator.runtime')));"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": ""},
    )
    assert out.stdout.strip() == ""
