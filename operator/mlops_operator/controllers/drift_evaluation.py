"""Glue between the scraped counters and the drift engine, and the operator's own drift metrics.

``evaluate_window`` turns a window of model-server counters into the engine's input and its result into
the status entry. ``export_metrics`` publishes the last evaluation of each policy as Prometheus gauges
on the operator's metrics endpoint (``mlops-operator run --metrics-port``), from a registry created on
first use.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

from mlops_operator.api.v1alpha1.driftpolicy import DriftPolicySpec, Evaluation
from mlops_operator.controllers.drift_window import BIN, CATEGORY, MISSING, CounterKey

if TYPE_CHECKING:
    from mlops_operator.drift.profile import ReferenceProfile


def evaluate_window(
    spec: DriftPolicySpec,
    profile: ReferenceProfile,
    counts: Mapping[CounterKey, float],
    now: dt.datetime,
    version: int,
) -> Evaluation:
    # the statistics need numpy (~14 MiB): loaded once a DriftPolicy is evaluated, not by every operator
    from mlops_operator.drift.engine import DriftConfig, DriftInputError, counts_from_samples, evaluate

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
        result = evaluate(profile, live, DriftConfig.from_spec(spec))
    except DriftInputError as error:
        return Evaluation(
            time=now,
            model_version=version,
            message=f"the live counters do not fit the reference profile: {error}",
        )
    return result.to_evaluation(time=now, model_version=version)


class _Metrics:
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


_metrics: _Metrics | None = None
_lock = threading.Lock()


def metrics_registry() -> CollectorRegistry:
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()
        return _metrics.registry


def export_metrics(namespace: str, policy: str, evaluation: Evaluation) -> None:
    metrics_registry()
    assert _metrics is not None
    _metrics.samples.labels(namespace, policy).set(evaluation.samples)
    if evaluation.drifted_share is None:
        return
    _metrics.share.labels(namespace, policy).set(evaluation.drifted_share)
    _metrics.drifted.labels(namespace, policy).set(1 if evaluation.drifted else 0)
    for score in evaluation.feature_scores:
        labels = (namespace, policy, score.feature, score.method)
        _metrics.score.labels(*labels).set(score.score)
        if score.threshold is not None:
            _metrics.threshold.labels(*labels).set(score.threshold)
        if score.p_value is not None:
            _metrics.p_value.labels(*labels).set(score.p_value)
