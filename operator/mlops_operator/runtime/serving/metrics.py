"""The server's Prometheus metrics, in a registry of its own (created with the app, never the global
default registry: no import-time side effects, one registry per server instance, like MLServer).

Names and labels are the pod contract's ``METRIC_*`` (the DriftPolicy controller sums the feature counters
over replicas). Everything is kept in plain Python/numpy structures updated on the event loop and turned
into Prometheus families by a custom collector at scrape time, so the request path pays a few dict/list
updates (measured in benchmarks/serving) rather than prometheus_client's locked counter objects.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from mlops_operator.api.v1alpha1.pod_contract import (
    METRIC_FEATURE_BIN,
    METRIC_FEATURE_CATEGORY,
    METRIC_FEATURE_MISSING,
    METRIC_INFLIGHT,
    METRIC_LATENCY,
    METRIC_MODEL_INFO,
    METRIC_PREDICTIONS,
    METRIC_REQUESTS,
)

from .histograms import FeatureCounters, PredictionCounters

#: Latency buckets (seconds): fine below a millisecond, where a fast model server lives.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
METRIC_ROWS: Final = "mlops_inference_rows_total"
METRIC_MODEL_READY: Final = "mlops_model_ready"
METRIC_LOG_RECORDS: Final = "mlops_inference_log_records_total"
METRIC_SHADOW_REQUESTS: Final = "mlops_shadow_requests_total"


class ServerMetrics:
    """All metrics of one server. ``features``/``predictions`` are attached once the model is loaded."""

    def __init__(
        self,
        *,
        model: str,
        version: str,
        role: str,
        histograms: bool = True,
        log_stats: Callable[[], dict[str, int]] | None = None,
        shadow_stats: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.histograms = histograms
        self._info = (model, version, role)
        # request counts and latency histograms as plain dicts/lists (one event loop writes them, the
        # scrape on the same loop reads them): a few hundred nanoseconds per request
        self._requests: dict[tuple[str, int], int] = {}
        self._latency: dict[str, list[Any]] = {}  # endpoint -> [per-bucket counts (+Inf last), sum]
        self._bucket_labels = [floatToGoString(b) for b in LATENCY_BUCKETS]  # type: ignore[no-untyped-call]
        self.inflight = 0
        self.rows = 0
        self.ready = False
        self.features: FeatureCounters | None = None
        self.predictions: PredictionCounters | None = None
        self._log_stats = log_stats
        self._shadow_stats = shadow_stats
        self.registry.register(_Collector(self))

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        key = (endpoint, code)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        latency = self._latency.get(endpoint)
        if latency is None:
            latency = self._latency[endpoint] = [[0] * (len(LATENCY_BUCKETS) + 1), 0.0]
        latency[0][bisect_left(LATENCY_BUCKETS, seconds)] += 1  # first bucket with le >= seconds
        latency[1] += seconds

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (OpenMetrics when the scraper asks for it) and its content type."""
        if "application/openmetrics-text" in accept:
            return generate_openmetrics(self.registry), OPENMETRICS_CONTENT_TYPE  # type: ignore[no-untyped-call]
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            METRIC_REQUESTS,
            "Inference server requests by endpoint and HTTP status code.",
            labels=["endpoint", "code"],
        )
        for (endpoint, code), count in sorted(self._requests.items()):
            requests.add_metric([endpoint, str(code)], float(count))
        yield requests
        latency = HistogramMetricFamily(
            METRIC_LATENCY,
            "Request duration in seconds by endpoint (receive to response).",
            labels=["endpoint"],
        )
        for endpoint, (counts, total) in sorted(self._latency.items()):
            cumulative = list(accumulate(counts))
            buckets = [*zip(self._bucket_labels, cumulative, strict=False), ("+Inf", cumulative[-1])]
            latency.add_metric([endpoint], buckets=buckets, sum_value=total)
        yield latency
        model, version, role = self._info
        info = GaugeMetricFamily(
            METRIC_MODEL_INFO, "The served model version (value 1).", labels=["model", "version", "role"]
        )
        info.add_metric([model, version, role], 1.0)
        yield info
        yield GaugeMetricFamily(
            METRIC_MODEL_READY, "1 once the model is loaded and warmed up.", value=float(self.ready)
        )
        yield GaugeMetricFamily(
            METRIC_INFLIGHT, "Inference requests being processed.", value=float(self.inflight)
        )
        yield CounterMetricFamily(METRIC_ROWS, "Rows predicted.", value=float(self.rows))
        if self._log_stats is not None:
            records = CounterMetricFamily(
                METRIC_LOG_RECORDS, "Sampled inference-log records by outcome.", labels=["outcome"]
            )
            for outcome, count in self._log_stats().items():
                records.add_metric([outcome], float(count))
            yield records
        if self._shadow_stats is not None:
            shadow = CounterMetricFamily(
                METRIC_SHADOW_REQUESTS,
                "Requests mirrored to the shadow deployment by outcome.",
                labels=["outcome"],
            )
            for outcome, count in self._shadow_stats().items():
                shadow.add_metric([outcome], float(count))
            yield shadow
        if self.predictions is not None:
            predictions = CounterMetricFamily(
                METRIC_PREDICTIONS, "Predictions by class label or value bin.", labels=["output"]
            )
            for label, count in self.predictions.samples():
                predictions.add_metric([label], float(count))
            yield predictions
        if self.features is not None:
            bins = CounterMetricFamily(
                METRIC_FEATURE_BIN,
                "Rows per reference-profile bin of each numeric feature.",
                labels=["feature", "bin"],
            )
            for feature, b, count in self.features.bin_samples():
                bins.add_metric([feature, b], float(count))
            yield bins
            categories = CounterMetricFamily(
                METRIC_FEATURE_CATEGORY,
                "Rows per reference-profile category of each categorical feature.",
                labels=["feature", "category"],
            )
            for feature, category, count in self.features.category_samples():
                categories.add_metric([feature, category], float(count))
            yield categories
            missing = CounterMetricFamily(
                METRIC_FEATURE_MISSING, "Missing values per feature.", labels=["feature"]
            )
            for feature, count in self.features.missing_samples():
                missing.add_metric([feature], float(count))
            yield missing


class _Collector:
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()

    def describe(self) -> list[Metric]:
        return []
