"""Drift statistics (numpy), reference profiles and drift decisions. Shared by the runtime and controllers."""

from .accumulate import HistogramAccumulator, accumulate_counts
from .engine import (
    DriftConfig,
    DriftInputError,
    DriftResult,
    FeatureCounts,
    FeatureDrift,
    FeatureSetting,
    counts_from_samples,
    evaluate,
    evaluate_samples,
)

__all__ = [
    "DriftConfig",
    "DriftInputError",
    "DriftResult",
    "FeatureCounts",
    "FeatureDrift",
    "FeatureSetting",
    "HistogramAccumulator",
    "accumulate_counts",
    "counts_from_samples",
    "evaluate",
    "evaluate_samples",
]
