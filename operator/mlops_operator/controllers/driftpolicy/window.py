"""Live feature counts over a sliding window, from the model servers' cumulative Prometheus counters.

Each scrape of a serving pod gives cumulative counts per (feature, bin) since the pod started. The window's
counts are, per pod, the latest scrape minus the newest scrape at least ``window`` old (or zero when the
pod started inside the window), summed over pods. Pure and in memory: after an operator restart the first
windows are shorter (they start at the first scrape the operator saw), which status reports as samples.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from mlops_operator.api.v1alpha1 import pod_contract as pc

#: ("bin", feature, "3") | ("category", feature, "red") | ("missing", feature, "").
CounterKey = tuple[str, str, str]
Counts = dict[CounterKey, float]

BIN: Final = "bin"
CATEGORY: Final = "category"
MISSING: Final = "missing"
_KIND_BY_METRIC: Final = {
    pc.METRIC_FEATURE_BIN: BIN,
    pc.METRIC_FEATURE_CATEGORY: CATEGORY,
    pc.METRIC_FEATURE_MISSING: MISSING,
}


def parse_feature_counters(exposition: str) -> Counts:
    """The per-feature counters in one ``/metrics`` page (Prometheus text format)."""
    counts: Counts = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            kind = _KIND_BY_METRIC.get(sample.name)
            if kind is None:
                continue
            feature = sample.labels.get("feature", "")
            detail = sample.labels.get("bin") if kind == BIN else sample.labels.get("category", "")
            key = (kind, feature, detail or "")
            counts[key] = counts.get(key, 0.0) + float(sample.value)
    return counts


@dataclass
class _PodSeries:
    started: dt.datetime
    snapshots: deque[tuple[dt.datetime, Counts]] = field(default_factory=deque)


@dataclass
class WindowedCounts:
    """Scrapes of every pod of one target (named ``target``), kept just long enough to answer for
    ``window``."""

    target: str = ""
    pods: dict[str, _PodSeries] = field(default_factory=dict)

    def add(
        self, pod_uid: str, pod_started: dt.datetime, time: dt.datetime, counts: Mapping[CounterKey, float]
    ) -> None:
        series = self.pods.setdefault(pod_uid, _PodSeries(started=pod_started))
        series.snapshots.append((time, dict(counts)))

    def forget_except(self, live_pods: Iterable[str]) -> None:
        """Drop pods that no longer exist (their counters went with them)."""
        keep = set(live_pods)
        for uid in list(self.pods):
            if uid not in keep:
                del self.pods[uid]

    def window(self, now: dt.datetime, window: dt.timedelta) -> tuple[Counts, dt.datetime | None]:
        """Counts accumulated in ``[now - window, now]`` over all pods, and where the covered span starts
        (None when nothing was scraped)."""
        start = now - window
        total: Counts = {}
        covered_from: dt.datetime | None = None
        for series in self.pods.values():
            if not series.snapshots:
                continue
            # keep one snapshot at or before the window start as the baseline, drop older ones
            while len(series.snapshots) > 1 and series.snapshots[1][0] <= start:
                series.snapshots.popleft()
            latest_time, latest = series.snapshots[-1]
            base_time, base = series.snapshots[0]
            if series.started >= start:
                base, base_time = {}, series.started  # the pod started inside the window: count everything
            elif base_time == latest_time:
                continue  # one snapshot, older than the window: no rate yet
            for key, value in latest.items():
                delta = value - base.get(key, 0.0)
                if delta > 0:  # a counter reset shows as negative: ignore, the pod restarted
                    total[key] = total.get(key, 0.0) + delta
            covered_from = base_time if covered_from is None else min(covered_from, base_time)
        return total, covered_from
