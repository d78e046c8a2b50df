"""DriftPolicy decisions, the sliding window over scraped counters and the retrain TrainingJob, all pure."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlops_operator.api.v1alpha1.driftpolicy import (
    DriftPolicySpec,
    DriftPolicyStatus,
    Evaluation,
    FeatureScore,
    PromotionRecord,
    RetrainRecord,
)
from mlops_operator.api.v1alpha1.trainingjob import Failure, GateResult, TrainingJobStatus
from mlops_operator.controllers.driftpolicy.status import apply_evaluation, promotion_decision, retrain_due
from mlops_operator.controllers.driftpolicy.window import WindowedCounts, parse_feature_counters
from mlops_operator.resources.common import Owner
from mlops_operator.resources.driftpolicy import retrain_trainingjob

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
TEMPLATE_SPEC = {
    "model": {"name": "iris"},
    "dataset": {"uri": "s3://data/latest.csv", "target": "species"},
    "trainer": {"builtin": {"task": "classification"}},
    "gate": {"mustBeat": {"metric": "accuracy"}},
}


def make_spec(**overrides: Any) -> DriftPolicySpec:
    body: dict[str, Any] = {
        "targetRef": {"name": "iris"},
        "minSamples": 100,
        "forSeconds": 60,
        "action": {
            "retrain": {"template": {"spec": TEMPLATE_SPEC}},
            "cooldownSeconds": 3600,
            "maxRetrainsPerDay": 2,
        },
        "promotion": {"mode": "auto"},
    }
    body.update(overrides)
    return DriftPolicySpec.model_validate(body)


def evaluation(time: dt.datetime, drifted: bool, samples: int = 500) -> Evaluation:
    scores = [
        FeatureScore(
            feature="petal_length",
            method="psi",
            score=0.9 if drifted else 0.01,
            threshold=0.1,
            drifted=drifted,
        ),
        FeatureScore(feature="sepal_width", method="psi", score=0.02, threshold=0.1, drifted=False),
    ]
    return Evaluation(
        time=time,
        samples=samples,
        drifted_share=0.5 if drifted else 0.0,
        drifted=drifted,
        feature_scores=scores,
    )


def test_sustained_drift_starts_a_retrain_only_after_for_seconds() -> None:
    spec = make_spec()
    status, events = apply_evaluation(spec, DriftPolicyStatus(), evaluation(T0, drifted=True), 1)
    assert status.drifted is True and status.drifting_since == T0
    assert [e.reason for e in events] == ["DriftDetected"]
    assert retrain_due(spec, status, T0, None) == (False, "drift for 0s of the 60s required")
    status, events = apply_evaluation(
        spec, status, evaluation(T0 + dt.timedelta(seconds=60), drifted=True), 1
    )
    assert events == []  # still drifting: no new event
    assert status.drifting_since == T0
    due, reason = retrain_due(spec, status, T0 + dt.timedelta(seconds=60), None)
    assert due and reason.startswith("1/2 features drifted on 500 samples (petal_length psi score=0.9)")
    assert len(status.history) == 2


def test_insufficient_data_is_not_a_verdict() -> None:
    spec = make_spec()
    drifting, _ = apply_evaluation(spec, DriftPolicyStatus(), evaluation(T0, drifted=True), 1)
    status, events = apply_evaluation(
        spec, drifting, evaluation(T0 + dt.timedelta(seconds=30), drifted=False, samples=20), 1
    )
    assert status.drifted is True and status.drifting_since == T0
    drifted_condition = next(c for c in status.conditions if c.type == "Drifted")
    assert (drifted_condition.status, drifted_condition.reason) == ("Unknown", "InsufficientData")
    assert [e.reason for e in events] == ["InsufficientData"]


def test_cooldown_daily_limit_and_one_retrain_at_a_time() -> None:
    spec = make_spec(forSeconds=0)
    status, _ = apply_evaluation(spec, DriftPolicyStatus(), evaluation(T0, drifted=True), 1)
    running = status.model_copy(
        update={
            "last_retrain": RetrainRecord(name="iris-retrain-1", time=T0),
            "retrains_today": 1,
            "retrains_day": T0.date(),
        }
    )
    assert retrain_due(spec, running, T0, "Running") == (False, "retrain iris-retrain-1 is still Running")
    due, why = retrain_due(spec, running, T0 + dt.timedelta(minutes=10), "Succeeded")
    assert not due and why.startswith("cooldown after iris-retrain-1 until")
    later = T0 + dt.timedelta(hours=2)
    assert retrain_due(spec, running, later, "Succeeded")[0]
    limited = running.model_copy(update={"retrains_today": 2})
    assert retrain_due(spec, limited, later, "Succeeded") == (False, "2 retrain(s) today, the limit is 2")
    tomorrow = T0 + dt.timedelta(days=1)
    assert retrain_due(spec, limited, tomorrow, "Succeeded")[0]
    assert retrain_due(make_spec(action=None, promotion=None), status, T0, None) == (
        False,
        "no action configured: drift is only reported",
    )


def test_promotion_needs_a_registered_version_that_passed_every_gate() -> None:
    spec = make_spec(
        promotion={"mode": "auto", "gate": {"metrics": [{"name": "test_accuracy", "threshold": 0.9}]}}
    )
    status = DriftPolicyStatus(last_retrain=RetrainRecord(name="iris-retrain-1", time=T0))
    running = TrainingJobStatus(phase="Running")
    assert promotion_decision(spec, status, running, {}, None).action == "none"
    gate_failed = TrainingJobStatus(
        phase="Failed",
        failure=Failure(reason="GateFailed", message="test_accuracy 0.61 does not beat champion v1 (0.93)"),
    )
    decision = promotion_decision(spec, status, gate_failed, {}, None)
    assert (decision.action, decision.message) == (
        "reject",
        "iris-retrain-1 registered no version (GateFailed: test_accuracy 0.61 does not beat champion v1 "
        "(0.93))",
    )
    done = TrainingJobStatus(phase="Succeeded", model_version=2, gate=GateResult(passed=True))
    low = promotion_decision(spec, status, done, {"test_accuracy": 0.85}, None)
    assert (low.action, low.message) == (
        "reject",
        "version 2 not promoted: test_accuracy 0.85 is not >= 0.9 (off by 0.05)",
    )
    assert (
        promotion_decision(spec, status, done, {}, None).message
        == "version 2 not promoted: test_accuracy was not logged"
    )
    ok = promotion_decision(spec, status, done, {"test_accuracy": 0.95}, None)
    assert (ok.action, ok.version) == ("promote", 2)
    promoted = status.model_copy(
        update={"last_promotion": PromotionRecord(version=2, alias="champion", time=T0)}
    )
    assert promotion_decision(spec, promoted, done, {"test_accuracy": 0.95}, None).action == "none"


def test_manual_promotion_waits_for_the_approval_annotation() -> None:
    spec = make_spec(promotion={"mode": "manual"})
    status = DriftPolicyStatus(last_retrain=RetrainRecord(name="iris-retrain-1", time=T0))
    done = TrainingJobStatus(phase="Succeeded", model_version=3)
    waiting = promotion_decision(spec, status, done, {}, None)
    assert (waiting.action, waiting.message) == (
        "await",
        "version 3 passed; approve with annotation mlops.dev/approve-version=3",
    )
    assert promotion_decision(spec, status, done, {}, 2).action == "await"
    assert promotion_decision(spec, status, done, {}, 3).action == "promote"


EXPOSITION = """# HELP mlops_feature_bin_total rows per bin
# TYPE mlops_feature_bin_total counter
mlops_feature_bin_total{feature="x",bin="0"} 10.0
mlops_feature_bin_total{feature="x",bin="1"} 5.0
mlops_feature_category_total{feature="color",category="red"} 7.0
mlops_feature_missing_total{feature="x"} 1.0
mlops_inference_requests_total{endpoint="infer",code="200"} 15.0
"""


def test_parse_counters_and_window_over_two_pods() -> None:
    counts = parse_feature_counters(EXPOSITION)
    assert counts == {
        ("bin", "x", "0"): 10.0,
        ("bin", "x", "1"): 5.0,
        ("category", "color", "red"): 7.0,
        ("missing", "x", ""): 1.0,
    }

    window = WindowedCounts()
    old_pod_start = T0 - dt.timedelta(hours=1)
    window.add("old", old_pod_start, T0, {("bin", "x", "0"): 100.0})
    window.add("old", old_pod_start, T0 + dt.timedelta(seconds=30), {("bin", "x", "0"): 130.0})
    window.add("old", old_pod_start, T0 + dt.timedelta(seconds=90), {("bin", "x", "0"): 150.0})
    new_pod_start = T0 + dt.timedelta(seconds=50)
    window.add("new", new_pod_start, T0 + dt.timedelta(seconds=90), {("bin", "x", "0"): 8.0})
    totals, since = window.window(T0 + dt.timedelta(seconds=90), dt.timedelta(seconds=60))
    assert totals == {
        ("bin", "x", "0"): 20.0 + 8.0
    }  # 150 - 130 (baseline at the window start) + all of the new pod
    assert since == T0 + dt.timedelta(seconds=30)
    window.forget_except(["new"])
    assert list(window.pods) == ["new"]


def test_counter_reset_is_not_counted_as_negative() -> None:
    window = WindowedCounts()
    start = T0 - dt.timedelta(hours=1)
    window.add("p", start, T0, {("bin", "x", "0"): 100.0})
    window.add("p", start, T0 + dt.timedelta(seconds=10), {("bin", "x", "0"): 3.0})
    totals, _ = window.window(T0 + dt.timedelta(seconds=10), dt.timedelta(seconds=60))
    assert totals == {}


def test_retrain_trainingjob_is_owned_labelled_and_deterministic() -> None:
    owner = Owner(kind="DriftPolicy", name="iris", namespace="prod", uid="dp-uid")
    spec = make_spec(
        action={"retrain": {"template": {"metadata": {"labels": {"team": "ml"}}, "spec": TEMPLATE_SPEC}}}
    )
    assert spec.action is not None
    manifest = retrain_trainingjob(owner, spec.action.retrain.template, 3, T0, "1/2 features drifted")
    assert manifest["metadata"] == {
        "name": "iris-retrain-3",
        "namespace": "prod",
        "labels": {
            "team": "ml",
            "app.kubernetes.io/managed-by": "mlops-operator",
            "app.kubernetes.io/part-of": "mlops-operator",
            "app.kubernetes.io/component": "retrain",
            "mlops.dev/driftpolicy": "iris",
        },
        "annotations": {
            "mlops.dev/drift-evaluation": "2026-11-29T12:00:00Z",
            "mlops.dev/drift-reason": "1/2 features drifted",
        },
        "ownerReferences": [
            {
                "apiVersion": "mlops.dev/v1alpha1",
                "kind": "DriftPolicy",
                "name": "iris",
                "uid": "dp-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    assert manifest["spec"]["dataset"]["uri"] == "s3://data/latest.csv"
    assert (manifest["apiVersion"], manifest["kind"]) == ("mlops.dev/v1alpha1", "TrainingJob")
