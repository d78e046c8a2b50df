"""The registration gate, as pure functions: thresholds on the run's final metrics and the comparison with
the version holding ``gate.mustBeat.alias`` (scored by the caller on the same held-out rows).

Metric names follow the split prefix: ``test_<m>`` is scored on the test split, ``val_<m>`` on the
validation split, and an unprefixed ``<m>`` on the test split when there is one (else validation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mlops_operator.api.v1alpha1.common import GateSpec, MetricThreshold, MustBeat
from mlops_operator.api.v1alpha1.trainingjob import GateResult, MetricResult

SplitName = Literal["validation", "test"]
_PREFIXES: dict[str, SplitName] = {"test_": "test", "val_": "validation"}


def metric_split(name: str, *, has_test: bool) -> tuple[SplitName, str]:
    """(split, metric without prefix) of a gate metric name."""
    for prefix, split in _PREFIXES.items():
        if name.startswith(prefix):
            return split, name[len(prefix) :]
    return ("test" if has_test else "validation"), name


def lookup_metric(name: str, metrics: Mapping[str, float], *, has_test: bool) -> float | None:
    """The value of ``name`` in ``metrics``; an unprefixed name falls back to its test_ (else val_) form."""
    if name in metrics:
        return metrics[name]
    split, base = metric_split(name, has_test=has_test)
    if base == name:
        key = f"{'test' if split == 'test' else 'val'}_{name}"
        return metrics.get(key)
    return None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def evaluate_thresholds(
    thresholds: Sequence[MetricThreshold], metrics: Mapping[str, float], *, has_test: bool
) -> list[MetricResult]:
    results = []
    for t in thresholds:
        value = lookup_metric(t.name, metrics, has_test=has_test)
        usable = value is not None and math.isfinite(value)
        results.append(
            MetricResult(
                name=t.name,
                op=t.op,
                threshold=t.threshold,
                value=value if usable else None,
                passed=bool(usable and value is not None and t.passed(value)),
            )
        )
    return results


def describe_threshold(result: MetricResult) -> str:
    if result.value is None:
        return f"{result.name} was not logged (required {result.op} {result.threshold:g})"
    if result.passed:
        return f"{result.name} {_fmt(result.value)} {result.op} {result.threshold:g}"
    return f"{result.name} {_fmt(result.value)} does not meet {result.op} {result.threshold:g}"


@dataclass(frozen=True)
class Comparison:
    """The scores of the new model and of the incumbent (the version holding the alias) on the same rows."""

    rule: MustBeat
    incumbent_version: int | None
    new_value: float
    incumbent_value: float | None

    @property
    def passed(self) -> bool:
        if self.incumbent_version is None or self.incumbent_value is None:
            return True
        return math.isfinite(self.new_value) and self.rule.beats(self.new_value, self.incumbent_value)

    def describe(self) -> str:
        r = self.rule
        if self.incumbent_version is None or self.incumbent_value is None:
            return f"no version holds alias {r.alias} yet: nothing to beat"
        margin = f" by margin {r.margin:g}" if r.margin else ""
        if self.passed:
            return (
                f"{r.metric} {_fmt(self.new_value)} beats {r.alias} v{self.incumbent_version} "
                f"({_fmt(self.incumbent_value)}){margin}"
            )
        return (
            f"{r.metric} {_fmt(self.new_value)} does not beat {r.alias} v{self.incumbent_version} "
            f"({_fmt(self.incumbent_value)}){margin}"
        )


def evaluate_gate(
    gate: GateSpec | None,
    metrics: Mapping[str, float],
    *,
    has_test: bool,
    comparison: Comparison | None = None,
) -> GateResult:
    """The gate's verdict; ``comparison`` is required when the gate has mustBeat."""
    if gate is None:
        return GateResult(passed=True, message="no gate")
    results = evaluate_thresholds(gate.metrics or [], metrics, has_test=has_test)
    parts = [(r.passed, describe_threshold(r)) for r in results]
    if gate.must_beat is not None:
        if comparison is None:
            raise ValueError("gate.mustBeat needs a comparison")
        parts.append((comparison.passed, comparison.describe()))
    passed = all(ok for ok, _ in parts)
    shown = [text for ok, text in parts if not ok] if not passed else [text for _, text in parts]
    return GateResult(
        passed=passed,
        message="; ".join(shown)[:4096],
        results=results,
        incumbent_version=comparison.incumbent_version if comparison else None,
        incumbent_value=comparison.incumbent_value if comparison else None,
    )
