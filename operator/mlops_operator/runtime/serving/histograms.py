"""Counters of what the model sees and answers, on the reference profile's bins.

:class:`FeatureCounters` counts request rows per bin of each numeric feature (exactly
``NumericFeatureProfile.bin_index``), per category of each categorical feature (``category_key``, unlisted
categories under ``OTHER_CATEGORY``) and missing values per feature. :class:`PredictionCounters` counts
predicted classes (classifiers) or predicted values per bin (regressors). Counts live in numpy arrays and
are rendered as Prometheus counters at scrape time, so a request costs a few vectorised numpy calls and no
per-bin counter increments. Not thread-safe: the server updates and renders them on its event loop.
"""

from __future__ import annotations

import itertools
import logging
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from mlops_operator.api.v1alpha1.pod_contract import OTHER_CATEGORY
from mlops_operator.drift.profile import (
    CategoricalFeatureProfile,
    NumericFeatureProfile,
    ReferenceProfile,
    category_key,
)

from .payload import Batch
from .schema import Column

log = logging.getLogger(__name__)

#: Above this many comparisons (rows x features x edges) bins come from per-feature searchsorted instead of
#: one broadcast comparison.
_BROADCAST_LIMIT: Final = 1 << 16
_ALL: Final = slice(None)
#: Rows queued before they are binned in one vectorised pass (reads flush too, so counts are exact).
FLUSH_ROWS: Final = 1024
#: Requests of at most this many rows (all-double models) are binned at once with bisect instead.
_SMALL_BATCH: Final = 2
#: Most distinct predicted class labels counted separately; the rest go to OTHER_CATEGORY.
MAX_CLASS_LABELS: Final = 100
#: Bins of predicted values when the profile has no numeric target: signed decades.
_DECADES: Final = tuple(10.0**e for e in range(-2, 7))
FALLBACK_VALUE_EDGES: Final = (*(-d for d in reversed(_DECADES)), 0.0, *_DECADES)


class FeatureCounters:
    """Per-feature counts of request rows on a reference profile's bins and categories."""

    def __init__(self, profile: ReferenceProfile, columns: Sequence[Column]) -> None:
        by_name = {c.name: c for c in columns}
        self.numeric: list[NumericFeatureProfile] = []
        self.categorical: list[CategoricalFeatureProfile] = []
        self.skipped: list[str] = []
        for feature in profile.features:
            col = by_name.get(feature.name)
            if col is None:
                self.skipped.append(feature.name)
            elif isinstance(feature, NumericFeatureProfile):
                if col.is_numeric:
                    self.numeric.append(feature)
                else:
                    self.skipped.append(feature.name)
            else:
                self.categorical.append(feature)
        if self.skipped:
            log.warning(
                "reference profile features not counted (absent from the signature or of another type): %s",
                ", ".join(self.skipped),
            )
        n_num = len(self.numeric)
        self._width = max((f.bins for f in self.numeric), default=1)
        self._inner = [np.asarray(f.bin_edges[1:-1], dtype=np.float64) for f in self.numeric]
        edges = np.full((n_num, max(self._width - 1, 1)), np.inf)
        for j, inner in enumerate(self._inner):
            edges[j, : inner.size] = inner
        self._edges = edges
        self._offsets = np.arange(n_num, dtype=np.intp) * self._width
        self._missing_slots = n_num * self._width + np.arange(n_num, dtype=np.intp)
        self._counts = np.zeros(n_num * self._width + n_num, dtype=np.int64)
        self._numeric_names = [f.name for f in self.numeric]
        self._pending_dense: list[npt.NDArray[np.float64]] = []
        self._pending_columns: list[list[npt.NDArray[Any]]] = []
        self._pending_categories: list[list[npt.NDArray[Any]]] = []
        self._pending_rows = 0
        self._small_counts = [0] * self._counts.size
        self._small_layout = [
            (int(o), inner.tolist()) for o, inner in zip(self._offsets, self._inner, strict=True)
        ]
        # where the numeric features sit in an all-double batch's matrix (None: not such a schema)
        self._matrix_index: Any = None
        if all(c.type == "double" and c.required for c in columns) and self.numeric:
            names = [c.name for c in columns]
            index = [names.index(n) for n in self._numeric_names]
            self._matrix_index = (
                _ALL if index == list(range(len(names))) else np.asarray(index, dtype=np.intp)
            )
        self._cat_index = [{c: i for i, c in enumerate(f.categories)} for f in self.categorical]
        self._cat_counts = [[0] * (len(f.categories) + 1) for f in self.categorical]
        self._cat_missing = [0] * len(self.categorical)

    @property
    def features(self) -> list[str]:
        return [f.name for f in self.numeric] + [f.name for f in self.categorical]

    def observe(self, batch: Batch) -> None:
        """Count the rows of a validated batch. Cheap: small batches are queued (a list append) and
        binned together, vectorised, once ``FLUSH_ROWS`` rows are pending or when counts are read."""
        matrix = batch.matrix
        if (
            batch.rows <= _SMALL_BATCH
            and matrix is not None
            and self._matrix_index is _ALL
            and not self.categorical
        ):
            # one-row requests of an all-double model, the common case: bisect in Python right away (cheaper
            # than queueing: nothing is kept alive; bisect_right counts edges <= x like searchsorted "right")
            counts, layout = self._small_counts, self._small_layout
            for row in matrix.tolist():
                for (offset, edges), value in zip(layout, row, strict=True):
                    counts[offset + bisect_right(edges, value)] += 1
            return
        if self.numeric:
            if matrix is not None and self._matrix_index is not None:  # required doubles: no NaN
                part = matrix if self._matrix_index is _ALL else matrix[:, self._matrix_index]
                self._pending_dense.append(part)
            else:
                self._pending_columns.append([batch.columns[n] for n in self._numeric_names])
        if self.categorical:
            self._pending_categories.append([batch.columns[f.name] for f in self.categorical])
        self._pending_rows += batch.rows
        if self._pending_rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Bin what is queued."""
        if not self._pending_rows:
            return
        self._pending_rows = 0
        dense, self._pending_dense = self._pending_dense, []
        columns, self._pending_columns = self._pending_columns, []
        categories, self._pending_categories = self._pending_categories, []
        if dense:
            self._bin(np.concatenate(dense) if len(dense) > 1 else dense[0], has_missing=False)
        if columns:
            stacked = np.column_stack(
                [np.concatenate([part[j] for part in columns]) for j in range(len(self.numeric))]
            ).astype(np.float64, copy=False)
            self._bin(stacked, has_missing=True)
        for j in range(len(self.categorical)):
            index = self._cat_index[j]
            counts = self._cat_counts[j]
            other = len(counts) - 1
            for part in categories:
                for value in part[j].tolist():
                    if value is None or (type(value) is float and value != value):
                        self._cat_missing[j] += 1
                        continue
                    counts[index.get(value if type(value) is str else category_key(value), other)] += 1

    def _bin(self, x: npt.NDArray[np.float64], *, has_missing: bool) -> None:
        rows, n_num = x.shape
        if rows * n_num * self._edges.shape[1] <= _BROADCAST_LIMIT:
            # bin = number of inner edges <= x (searchsorted side="right"); the +inf padding never counts
            idx = (x[:, :, None] >= self._edges).sum(axis=2)
        else:
            idx = np.empty((rows, n_num), dtype=np.intp)
            for j, inner in enumerate(self._inner):
                idx[:, j] = np.searchsorted(inner, x[:, j], side="right")
        flat = idx + self._offsets
        if has_missing:
            nan = np.isnan(x)
            if nan.any():
                flat = np.where(nan, self._missing_slots, flat)
        self._counts += np.bincount(flat.ravel(), minlength=self._counts.size)

    def _totals(self) -> list[int]:
        self.flush()
        return [int(c) + small for c, small in zip(self._counts.tolist(), self._small_counts, strict=True)]

    def bin_samples(self) -> Iterator[tuple[str, str, int]]:
        """(feature, bin index, count) for every bin of every numeric feature."""
        totals = self._totals()
        for j, feature in enumerate(self.numeric):
            base = j * self._width
            for b in range(feature.bins):
                yield feature.name, str(b), totals[base + b]

    def category_samples(self) -> Iterator[tuple[str, str, int]]:
        """(feature, category, count) including OTHER_CATEGORY per categorical feature."""
        self.flush()
        for j, feature in enumerate(self.categorical):
            counts = self._cat_counts[j]
            for i, category in enumerate(feature.categories):
                yield feature.name, category, counts[i]
            yield feature.name, OTHER_CATEGORY, counts[-1]

    def missing_samples(self) -> Iterator[tuple[str, int]]:
        n_num = len(self.numeric)
        totals = self._totals()
        for j, feature in enumerate(self.numeric):
            yield feature.name, totals[n_num * self._width + j]
        for j, cat in enumerate(self.categorical):
            yield cat.name, self._cat_missing[j]


PredictionMode = Literal["classes", "bins"]


class PredictionCounters:
    """Counts of predictions: per class label (classifiers) or per value bin (regressors)."""

    def __init__(
        self, mode: PredictionMode, edges: Sequence[float] | None = None, *, labels: str = "index"
    ) -> None:
        self.mode = mode
        self._classes: dict[str, int] = {}
        self._other = 0
        edge_list = list(edges) if edges is not None else list(FALLBACK_VALUE_EDGES)
        if labels == "index":  # a profile's bins: edges[0] and edges[-1] are outer edges
            self._inner = np.asarray(edge_list[1:-1], dtype=np.float64)
            self._labels = [str(i) for i in range(self._inner.size + 1)]
        else:  # open-ended intervals around the given edges
            self._inner = np.asarray(edge_list, dtype=np.float64)
            self._labels = _interval_labels(edge_list)
        self._bins = np.zeros(len(self._labels), dtype=np.int64)
        self._pending: list[npt.NDArray[Any]] = []
        self._pending_rows = 0

    @classmethod
    def for_model(cls, profile: ReferenceProfile | None, output: npt.NDArray[Any]) -> PredictionCounters:
        """Classes for a categorical target or non-float outputs; otherwise bins of the profile's numeric
        target, or signed decades without one."""
        target = profile.target if profile is not None else None
        if isinstance(target, CategoricalFeatureProfile) or output.dtype.kind not in "f":
            return cls("classes")
        if isinstance(target, NumericFeatureProfile) and target.bins >= 1:
            return cls("bins", target.bin_edges)
        return cls("bins", FALLBACK_VALUE_EDGES, labels="interval")

    def observe(self, values: npt.NDArray[Any]) -> None:
        """Count one request's predictions: a few class labels at once, anything else queued and counted
        in bulk (like the feature counters)."""
        if self.mode == "classes" and values.size <= _SMALL_BATCH:
            classes = self._classes
            for key in values.tolist():
                kind = type(key)
                label = key if kind is str else str(key) if kind is int else category_key(key)
                if label in classes:
                    classes[label] += 1
                elif len(classes) < MAX_CLASS_LABELS:
                    classes[label] = 1
                else:
                    self._other += 1
            return
        self._pending.append(values)
        self._pending_rows += values.size
        if self._pending_rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        parts, self._pending, self._pending_rows = self._pending, [], 0
        values = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if self.mode == "bins":
            x = values.astype(np.float64, copy=False)
            x = x[np.isfinite(x)]
            if x.size:
                self._bins += np.bincount(
                    np.searchsorted(self._inner, x, side="right"), minlength=self._bins.size
                )
            return
        classes = self._classes
        for key, count in _unique_counts(values):
            kind = type(key)
            label = key if kind is str else str(key) if kind is int else category_key(key)
            if label in classes:
                classes[label] += count
            elif len(classes) < MAX_CLASS_LABELS:
                classes[label] = count
            else:
                self._other += count

    def samples(self) -> Iterator[tuple[str, int]]:
        self.flush()
        if self.mode == "bins":
            yield from zip(self._labels, self._bins.tolist(), strict=True)
            return
        yield from self._classes.items()
        if self._other:
            yield OTHER_CATEGORY, self._other


def _unique_counts(values: npt.NDArray[Any]) -> list[tuple[Any, int]]:
    if values.dtype.kind in "iub" and values.size and int(values.max()) - int(values.min()) < 65536:
        lo = int(values.min())  # integer class labels in a small range: bincount, no sort
        counts = np.bincount((values.astype(np.int64) - lo).ravel())
        return [
            (int(i) + lo if values.dtype.kind != "b" else bool(i), int(c))
            for i, c in enumerate(counts.tolist())
            if c
        ]
    try:
        uniq, counts = np.unique(values, return_counts=True)
        return [(u, int(c)) for u, c in zip(uniq.tolist(), counts.tolist(), strict=True)]
    except TypeError:  # unorderable objects
        out: dict[Any, int] = {}
        for v in values.tolist():
            key = category_key(v)
            out[key] = out.get(key, 0) + 1
        return list(out.items())


def _interval_labels(edges: Sequence[float]) -> list[str]:
    def fmt(x: float) -> str:
        return f"{x:g}"

    labels = [f"<{fmt(edges[0])}"]
    labels += [f"[{fmt(a)},{fmt(b)})" for a, b in itertools.pairwise(edges)]
    labels.append(f">={fmt(edges[-1])}")
    return labels
