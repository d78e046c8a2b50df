"""Histogram counts of raw data on a reference profile's bins, accumulated chunk by chunk.

:class:`HistogramAccumulator` turns rows into the same :class:`~.engine.FeatureCounts` that the model
server's counters give the DriftPolicy controller, so :func:`~.engine.evaluate` scores both alike. Memory is
one chunk (converted to float32 by default) plus a few counters: 10^6 rows x 100 features in chunks of
65,536 rows stays far below 1 GiB, whatever the total.

Binning is exact for the profile's float64 edges: a float32 value ``x`` satisfies ``x >= e`` exactly when
``x >= e32``, ``e32`` being the smallest float32 not below ``e``. Up to 32 inner edges it counts values at
or above each edge (one vectorised comparison per edge); above that it sorts the chunk's column once and
looks the edges up. NaN is missing; +-inf lands in the outer bins, as on the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .engine import FeatureCounts, categorical_histogram
from .methods import OTHER_CATEGORY
from .profile import CategoricalFeatureProfile, NumericFeatureProfile, ReferenceProfile

#: Up to this many inner edges a column is binned by comparisons, above by sorting.
COMPARE_MAX_EDGES: Final = 32
DEFAULT_CHUNK_ROWS: Final = 65_536


def lower_edges(edges: npt.ArrayLike, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """``edges`` in ``dtype``, each rounded up to the smallest value not below it, so ``x >= out[i]``
    exactly when ``x >= edges[i]`` for every ``x`` of that dtype."""
    e = np.asarray(edges, dtype=np.float64)
    with np.errstate(over="ignore"):
        out = e.astype(dtype)
    low = out.astype(np.float64) < e
    out[low] = np.nextafter(out[low], np.asarray(np.inf, dtype=out.dtype))
    return out


def count_bins(x: npt.NDArray[Any], inner: npt.NDArray[Any], bins: int) -> tuple[npt.NDArray[np.int64], int]:
    """Counts of ``x`` per bin (bin k: ``inner[k-1] <= x < inner[k]``; ``inner`` from :func:`lower_edges`
    in x's dtype) and the number of NaN."""
    nan = int(np.count_nonzero(np.isnan(x)))
    present = x.size - nan
    if bins == 1:
        return np.array([present], dtype=np.int64), nan
    if inner.size <= COMPARE_MAX_EDGES:
        at_or_above = np.fromiter((np.count_nonzero(x >= e) for e in inner), dtype=np.int64, count=inner.size)
    else:
        xs = np.sort(x)[:present]  # NaN sorts last
        at_or_above = present - np.searchsorted(xs, inner, side="left").astype(np.int64)
    cum = np.r_[present, at_or_above, 0]
    return (cum[:-1] - cum[1:]).astype(np.int64), nan


class HistogramAccumulator:
    """Counts of raw rows on ``profile``'s bins and categories, fed chunk by chunk with :meth:`update`.

    ``features``: the features to count (default: every feature of the profile). ``columns``: the column
    order of 2-D array chunks (default: the profile's features). ``dtype``: numeric values are converted to
    it (float32 halves the memory of float64; binning stays exact for the values as converted).
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        features: Sequence[str] | None = None,
        *,
        columns: Sequence[str] | None = None,
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        names = list(features) if features is not None else profile.feature_names
        self.profile = profile
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError("dtype must be a floating point type")
        self.columns = list(columns) if columns is not None else profile.feature_names
        self.numeric: list[NumericFeatureProfile] = []
        self.categorical: list[CategoricalFeatureProfile] = []
        for name in names:
            feature = profile.feature(name)
            if isinstance(feature, NumericFeatureProfile):
                self.numeric.append(feature)
            else:
                self.categorical.append(feature)
        self._inner = [lower_edges(f.bin_edges[1:-1], self.dtype) for f in self.numeric]
        self._bins = [np.zeros(f.bins, dtype=np.int64) for f in self.numeric]
        self._num_missing = [0] * len(self.numeric)
        self._cats = [np.zeros(len(f.counts) + 1) for f in self.categorical]
        self._cat_missing = [0.0] * len(self.categorical)
        self.rows = 0

    def update(self, chunk: Mapping[str, npt.ArrayLike] | npt.NDArray[Any]) -> None:
        """Count a chunk: a mapping feature -> values, or a 2-D array (rows x ``columns``)."""
        if isinstance(chunk, Mapping):
            names = [f.name for f in self.numeric] + [f.name for f in self.categorical]
            rows = {len(np.asarray(chunk[name])) for name in names if name in chunk}
            if len(rows) > 1:
                raise ValueError(f"chunk columns differ in length: {sorted(rows)}")
            missing = [name for name in names if name not in chunk]
            if missing:
                raise KeyError(f"chunk lacks features {missing}")
            for j, feature in enumerate(self.numeric):
                self._count_numeric(j, np.asarray(chunk[feature.name], dtype=self.dtype).ravel())
            for j, cat in enumerate(self.categorical):
                self._count_categorical(j, chunk[cat.name])
            self.rows += rows.pop() if rows else 0
            return
        array = np.asarray(chunk)
        if array.ndim != 2 or array.shape[1] != len(self.columns):
            raise ValueError(f"a 2-D chunk needs {len(self.columns)} columns ({', '.join(self.columns)})")
        index = {c: i for i, c in enumerate(self.columns)}
        if self.numeric:
            cols = [index[f.name] for f in self.numeric]
            block = array if cols == list(range(array.shape[1])) else array[:, cols]
            # feature-major copy: one pass, and each feature's comparisons then run on contiguous memory
            by_feature = np.ascontiguousarray(block.T, dtype=self.dtype)
            for j in range(len(self.numeric)):
                self._count_numeric(j, by_feature[j])
            del by_feature
        for j, cat in enumerate(self.categorical):
            self._count_categorical(j, array[:, index[cat.name]])
        self.rows += array.shape[0]

    def _count_numeric(self, j: int, x: npt.NDArray[Any]) -> None:
        counts, nan = count_bins(x, self._inner[j], self.numeric[j].bins)
        self._bins[j] += counts
        self._num_missing[j] += nan

    def _count_categorical(self, j: int, values: npt.ArrayLike) -> None:
        counts, missing = categorical_histogram(self.categorical[j], values)
        self._cats[j] += counts
        self._cat_missing[j] += missing

    def counts(self) -> dict[str, FeatureCounts]:
        """The counts so far, ready for :func:`~.engine.evaluate`."""
        out: dict[str, FeatureCounts] = {}
        for j, feature in enumerate(self.numeric):
            out[feature.name] = FeatureCounts(bins=self._bins[j].copy(), missing=self._num_missing[j])
        for j, cat in enumerate(self.categorical):
            names = [*cat.counts, OTHER_CATEGORY]
            out[cat.name] = FeatureCounts(
                categories=dict(zip(names, self._cats[j].tolist(), strict=True)), missing=self._cat_missing[j]
            )
        return out


def accumulate_counts(
    profile: ReferenceProfile,
    chunks: Iterable[Mapping[str, npt.ArrayLike] | npt.NDArray[Any]],
    features: Sequence[str] | None = None,
    *,
    columns: Sequence[str] | None = None,
    dtype: npt.DTypeLike = np.float32,
) -> dict[str, FeatureCounts]:
    """Counts of all ``chunks`` (see :class:`HistogramAccumulator`)."""
    acc = HistogramAccumulator(profile, features, columns=columns, dtype=dtype)
    for chunk in chunks:
        acc.update(chunk)
    return acc.counts()


__all__ = [
    "COMPARE_MAX_EDGES",
    "DEFAULT_CHUNK_ROWS",
    "HistogramAccumulator",
    "accumulate_counts",
    "count_bins",
    "lower_edges",
]
