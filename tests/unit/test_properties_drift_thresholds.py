"""DriftPolicySpec and the drift engine's DriftConfig resolve every feature's method and threshold the same
way: checked exhaustively over a small grid of policies (methods x thresholds x overrides) that the model
accepts, so the status a user reads and the evaluation that runs never disagree."""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import ValidationError

from mlops_operator.api.v1alpha1.driftpolicy import DEFAULT_THRESHOLDS, DriftPolicySpec
from mlops_operator.controllers.driftpolicy.evaluation import drift_config

METHODS = ["auto", "psi", "ks", "chi2", "wasserstein", "jensenshannon"]
RESOLVED = sorted(DEFAULT_THRESHOLDS)
THRESHOLDS: list[float | None] = [None, 0.01, 0.3, 2.0]


def _override(feature: str, method: str | None, threshold: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"feature": feature}
    if method is not None:
        out["method"] = method
    if threshold is not None:
        out["threshold"] = threshold
    return out


def _policies() -> list[DriftPolicySpec]:
    specs = []
    for method, threshold, o_method, o_threshold in itertools.product(
        METHODS, THRESHOLDS, [None, *METHODS], THRESHOLDS
    ):
        body: dict[str, Any] = {"targetRef": {"name": "m"}, "method": method}
        if threshold is not None:
            body["threshold"] = threshold
        body["overrides"] = [_override("a", o_method, o_threshold), _override("b", "ks", None)]
        try:
            specs.append(DriftPolicySpec.model_validate(body))
        except ValidationError:
            continue
    return specs


POLICIES = _policies()


def test_the_grid_covers_accepted_policies_of_every_method() -> None:
    assert len(POLICIES) > 300
    assert {p.method for p in POLICIES} == set(METHODS)


def test_spec_and_engine_agree_on_every_features_method_and_threshold() -> None:
    disagreements = []
    for spec in POLICIES:
        config = drift_config(spec)
        for feature in ("a", "b", "not-overridden"):
            if spec.method_for(feature) != config.method_for(feature):
                disagreements.append((spec.to_dict(), feature, "method"))
            for method in RESOLVED:
                if spec.threshold_for(feature, method) != config.threshold_for(feature, method):  # type: ignore[arg-type]
                    disagreements.append((spec.to_dict(), feature, method))
    assert not disagreements, disagreements[:5]


def test_a_psi_threshold_is_not_handed_to_a_feature_overridden_to_ks() -> None:
    spec = DriftPolicySpec.model_validate(
        {
            "targetRef": {"name": "m"},
            "method": "psi",
            "threshold": 0.3,
            "overrides": [{"feature": "a", "method": "ks"}, {"feature": "b", "method": "psi"}],
        }
    )
    assert spec.method_for("a") == "ks"
    assert spec.threshold_for("a", "ks") == DEFAULT_THRESHOLDS["ks"]  # not psi's 0.3: a p-value of 0.3
    assert spec.threshold_for("b", "psi") == 0.3
    assert spec.threshold_for("c", "psi") == 0.3
    # a p-value threshold carries over between the two p-value tests, never to a distance
    pvalue = DriftPolicySpec.model_validate(
        {
            "targetRef": {"name": "m"},
            "method": "ks",
            "threshold": 0.01,
            "overrides": [{"feature": "a", "method": "chi2"}, {"feature": "b", "method": "wasserstein"}],
        }
    )
    assert pvalue.threshold_for("a", "chi2") == 0.01
    assert pvalue.threshold_for("b", "wasserstein") == DEFAULT_THRESHOLDS["wasserstein"]
