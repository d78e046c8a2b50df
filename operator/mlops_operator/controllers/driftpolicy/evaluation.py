"""Glue between the DriftPolicy API and the drift engine, and the operator's own drift metrics.

``drift_config`` and ``to_evaluation`` convert between the CRD models and the engine's types (the engine,
``mlops_operator.drift``, knows no API model). ``evaluate_window`` turns a window of model-server counters
into the engine's input and its result into the status entry. :class:`DriftMetrics` publishes the last
evaluation of each policy as Prometheus gauges on the operator's metrics endpoint
(``mlops-operator run --metrics-port``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

from mlops_operator.api.v1alpha1.driftpolicy import DriftPolicySpec, Evaluation, FeatureScore
from mlops_operator.controllers.driftpolicy.window import BIN, CATEGORY, MISSING, CounterKey

if TYPE_CHECKING:  # numpy: imported by the first evaluation, not at start
    from mlops_operator.drift.engine import DriftConfig, DriftResult, FeatureDrift
    from mlops_operator.drift.profile import ReferenceProfile
    from mlops_operator.drift.stats import Correction

#: Most per-feature scores kept in a status entry.
MAX_FEATURE_SCORES = 256


def drift_config(
    spec: DriftPolicySpec,
    *,
    features: Sequence[str] | None = None,
    correction: Correction = "bh",
    auto_sample_limit: int | None = None,
) -> DriftConfig:
    """The engine's configuration of a DriftPolicy spec; ``features`` (default ``spec.features``, else
    every feature of the profile) for when the controller resolves the model signature itself."""
    from mlops_operator.drift.engine import AUTO_SAMPLE_LIMIT, DriftConfig, FeatureSetting

    names = features if features is not None else spec.features
    return DriftConfig(
        method=spec.method,
        threshold=spec.threshold,
        overrides={o.feature: FeatureSetting(o.method, o.threshold) for o in spec.overrides or ()},
        features=tuple(names) if names is not None else None,
        drift_share=spec.drift_share,
        min_samples=spec.min_samples,
        correction=correction,
        auto_sample_limit=AUTO_SAMPLE_LIMIT if auto_sample_limit is None else auto_sample_limit,
    )


def _finite(x: float) -> float:
    return x if math.isfinite(x) else (1e308 if x > 0 else 0.0)


def feature_score(drift: FeatureDrift) -> FeatureScore:
    """A feature's status entry (``pValue`` is the adjusted p-value, the one ``drifted`` is decided on)."""
    return FeatureScore(
        feature=drift.feature,
        method=drift.method,
        score=_finite(drift.score),
        p_value=drift.p_value,
        threshold=drift.threshold,
        drifted=drift.drifted,
    )


def to_evaluation(result: DriftResult, *, time: dt.datetime, model_version: int | None = None) -> Evaluation:
    """The status entry of an evaluation."""
    return Evaluation(
        time=time,
        model_version=model_version,
        samples=result.samples,
        drifted_share=result.drifted_share,
        drifted=result.drifted,
        message=result.message[:4096],
        feature_scores=[feature_score(f) for f in result.features[:MAX_FEATURE_SCORES]],
    )


def evaluate_window(
    spec: DriftPolicySpec,
    profile: ReferenceProfile,
    counts: Mapping[CounterKey, float],
    now: dt.datetime,
    version: int,
) -> Evaluation:
    # the statistics need numpy (~14 MiB): loaded once a DriftPolicy is evaluated, not by every operator
    from mlops_operator.drift.engine import DriftInputError, counts_from_samples, evaluate

    live = counts_from_samples(
        bin_samples=[
            (feature, detail, value) for (kind, feature, detail), value in counts.items() if kind == BIN
        ],
        category_samples=[
            (f, detail, value) for (kind, f, detail), value in counts.items() if kind == CATEGORY
        ],
        missing_samples=[(feature, value) for (kind, feature, _), value in counts.items() if kind == MISSING],
    )
    try:
        result = evaluate(profile, live, drift_config(spec))
    except DriftInputError as error:
        return Evaluation(
            time=now,
            model_version=version,
            message=f"the live counters do not fit the reference profile: {error}",
        )
    return to_evaluation(result, time=now, model_version=version)


class DriftMetrics:
    """The operator's drift gauges, in a registry of their own (what ``--metrics-port`` serves)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["namespace", "policy"]
        self.score = Gauge(
            "mlops_drift_feature_score",
            "Drift score of a feature at the last evaluation (statistic or distance)",
            [*labels, "feature", "method"],
            registry=self.registry,
        )
        self.threshold = Gauge(
            "mlops_drift_feature_threshold",
            "Threshold the feature's score or p-value is compared with",
            [*labels, "feature", "method"],
            registry=self.registry,
        )
        self.p_value = Gauge(
            "mlops_drift_feature_p_value",
            "Adjusted p-value (ks, chi2)",
            [*labels, "feature", "method"],
            registry=self.registry,
        )
        self.share = Gauge(
            "mlops_drift_drifted_share", "Fraction of features that drifted", labels, registry=self.registry
        )
        self.drifted = Gauge(
            "mlops_drift_drifted",
            "1 when the model drifted at the last evaluation",
            labels,
            registry=self.registry,
        )
        self.samples = Gauge(
            "mlops_drift_samples",
            "Live samples compared at the last evaluation",
            labels,
            registry=self.registry,
        )

    def export(self, namespace: str, policy: str, evaluation: Evaluation) -> None:
        self.samples.labels(namespace, policy).set(evaluation.samples)
        if evaluation.drifted_share is None:
            return
        self.share.labels(namespace, policy).set(evaluation.drifted_share)
        self.drifted.labels(namespace, policy).set(1 if evaluation.drifted else 0)
        for score in evaluation.feature_scores:
            labels = (namespace, policy, score.feature, score.method)
            self.score.labels(*labels).set(score.score)
            if score.threshold is not None:
                self.threshold.labels(*labels).set(score.threshold)
            if score.p_value is not None:
                self.p_value.labels(*labels).set(score.p_value)

    def forget(self, namespace: str, policy: str) -> None:
        """The policy was deleted: its gauges go with it."""
        for gauge in (self.samples, self.share, self.drifted):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, policy)
        for gauge in (self.score, self.threshold, self.p_value):
            for labels in [
                tuple(sample.labels[name] for name in ("namespace", "policy", "feature", "method"))
                for metric in gauge.collect()
                for sample in metric.samples
            ]:
                if labels[:2] == (namespace, policy):
                    with contextlib.suppress(KeyError):
                        gauge.remove(*labels)
