"""Reference profiles: what the training data looked like, per feature, in a small versioned JSON document.

The trainer builds one from the rows the model was trained on and logs it to the MLflow run as
``reference_profile.json`` (``pod_contract.PROFILE_ARTIFACT``); drift detection compares live inputs with it.

Format (``version`` 1, camelCase keys)::

    {
      "kind": "ReferenceProfile",
      "version": 1,
      "rowCount": 120,                      # rows profiled
      "datasetDigest": "sha256:<hex>",      # or null
      "features": [                         # the model's input columns, in model order
        {"name": "x", "type": "numeric", "count": 120, "missing": 0,
         "mean": 0.1, "std": 1.02, "min": -2.9, "max": 3.1,
         "quantiles": [q0, q0.01, ..., q1],  # 101 values at probabilities 0, 0.01, ..., 1
         "binEdges": [e0, ..., eK],          # K+1 increasing edges (K >= 1), quantile based
         "binCounts": [c1, ..., cK]},        # rows per bin, sum == count
        {"name": "color", "type": "categorical", "count": 120, "missing": 0,
         "counts": {"red": 70, "blue": 50},  # most frequent categories (at most maxCategories)
         "frequencies": {"red": 0.583, "blue": 0.417},
         "otherCount": 0}                    # rows whose category is not listed
      ],
      "target": { ...one feature entry... } or null   # the label / value column, when known
    }

Binning rule (``NumericFeatureProfile.bin_index``): bin ``i`` holds ``binEdges[i] <= x < binEdges[i+1]``;
values below the first edge fall into the first bin and values at or above the last inner edge into the last
bin, so every finite value lands in exactly one bin. A numeric feature with few distinct values gets one bin
per value (edges at the midpoints). Categories are compared as strings (:func:`category_key`). Missing
values (None, NaN) are counted in ``missing`` and left out of everything else.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

#: Version of the profile format written by :func:`build_profile`; :func:`load_profile` reads this one.
PROFILE_FORMAT_VERSION: Final = 1
PROFILE_KIND: Final = "ReferenceProfile"
#: Probabilities of the stored quantiles: 0, 0.01, ..., 1.
QUANTILE_PROBS: Final[tuple[float, ...]] = tuple(round(i / 100, 2) for i in range(101))
DEFAULT_BINS: Final = 10
DEFAULT_MAX_CATEGORIES: Final = 100

FeatureType = Literal["numeric", "categorical"]


class ProfileError(ValueError):
    """A profile document that cannot be read (not JSON, wrong kind or version, inconsistent numbers)."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, protected_namespaces=()
    )


class NumericFeatureProfile(_Model):
    """Distribution of a numeric column."""

    name: str
    type: Literal["numeric"] = "numeric"
    count: int = Field(ge=0)
    """Non-missing values."""
    missing: int = Field(0, ge=0)
    mean: float
    std: float = Field(ge=0)
    """Population standard deviation."""
    min: float
    max: float
    quantiles: list[float]
    """Values at QUANTILE_PROBS (101 of them)."""
    bin_edges: list[float] = Field(min_length=2)
    bin_counts: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> NumericFeatureProfile:
        if len(self.bin_edges) != len(self.bin_counts) + 1:
            raise ValueError(f"feature {self.name!r}: binEdges must have one more entry than binCounts")
        if any(b < a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError(f"feature {self.name!r}: binEdges must be non-decreasing")
        if sum(self.bin_counts) != self.count:
            raise ValueError(f"feature {self.name!r}: binCounts must add up to count")
        if len(self.quantiles) != len(QUANTILE_PROBS):
            raise ValueError(f"feature {self.name!r}: expected {len(QUANTILE_PROBS)} quantiles")
        return self

    @property
    def bins(self) -> int:
        return len(self.bin_counts)

    def bin_index(self, values: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Bin of each value (see the binning rule in the module docstring); NaN must be removed first."""
        return bin_index(self.bin_edges, values)

    def histogram(self, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Counts of ``values`` in this profile's bins (missing values ignored)."""
        x = np.asarray(values, dtype=np.float64)
        x = x[np.isfinite(x)]
        return np.bincount(self.bin_index(x), minlength=self.bins).astype(np.int64)

    def bin_frequencies(self) -> npt.NDArray[np.float64]:
        """Reference share of rows per bin."""
        counts = np.asarray(self.bin_counts, dtype=np.float64)
        total = counts.sum()
        return counts / total if total else counts


class CategoricalFeatureProfile(_Model):
    """Distribution of a categorical (string, boolean) column."""

    name: str
    type: Literal["categorical"] = "categorical"
    count: int = Field(ge=0)
    missing: int = Field(0, ge=0)
    counts: dict[str, Annotated[int, Field(ge=0)]]
    """Rows per category, most frequent first."""
    frequencies: dict[str, float]
    """Share of the non-missing rows per category."""
    other_count: int = Field(0, ge=0)
    """Rows whose category is not in counts (beyond maxCategories)."""

    @model_validator(mode="after")
    def _consistent(self) -> CategoricalFeatureProfile:
        if sum(self.counts.values()) + self.other_count != self.count:
            raise ValueError(f"feature {self.name!r}: counts + otherCount must add up to count")
        if set(self.frequencies) != set(self.counts):
            raise ValueError(f"feature {self.name!r}: frequencies and counts must name the same categories")
        return self

    @property
    def categories(self) -> list[str]:
        return list(self.counts)

    def histogram(self, values: Iterable[Any]) -> tuple[npt.NDArray[np.int64], int]:
        """Counts of ``values`` per category of this profile (in :attr:`categories` order) and the count of
        values in none of them; missing values ignored."""
        index = {c: i for i, c in enumerate(self.counts)}
        out = np.zeros(len(index), dtype=np.int64)
        other = 0
        for value in values:
            if _is_missing(value):
                continue
            i = index.get(category_key(value))
            if i is None:
                other += 1
            else:
                out[i] += 1
        return out, other


FeatureProfile = Annotated[NumericFeatureProfile | CategoricalFeatureProfile, Field(discriminator="type")]


class ReferenceProfile(_Model):
    """Per-feature reference distributions of a training set."""

    kind: Literal["ReferenceProfile"] = PROFILE_KIND
    version: int = PROFILE_FORMAT_VERSION
    row_count: int = Field(ge=0)
    dataset_digest: str | None = None
    features: list[FeatureProfile]
    target: FeatureProfile | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> NumericFeatureProfile | CategoricalFeatureProfile:
        """The profile of feature ``name`` (KeyError when absent)."""
        for entry in self.features:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self, *, indent: int | None = None) -> str:
        """The JSON document. Key order is fixed (fields in declaration order, categories most frequent
        first, ties by name), so the same data always serialises to the same bytes."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


# --------------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------------


def bin_index(edges: Sequence[float] | npt.ArrayLike, values: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Bin of each value for bin ``edges`` (K+1 edges, K bins): ``edges[i] <= x < edges[i+1]`` is bin i,
    values below ``edges[0]`` go to bin 0 and values at or above ``edges[-2]`` to bin K-1."""
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    return np.searchsorted(inner, np.asarray(values, dtype=np.float64), side="right")


def category_key(value: Any) -> str:
    """How a categorical value is named in a profile: ``str(value)``, booleans as ``true``/``false``,
    integral floats without the ``.0`` (so 1, 1.0 and "1" are the same category)."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    try:
        import pandas as pd  # type: ignore[import-untyped]  # the NA scalars of pandas columns
    except ImportError:  # pragma: no cover
        return False
    return value is pd.NA or value is pd.NaT


def infer_feature_type(values: npt.ArrayLike) -> FeatureType:
    """numeric for integer/float arrays (not booleans), categorical for everything else."""
    arr = np.asarray(values)
    return "numeric" if arr.dtype.kind in "iuf" else "categorical"


def profile_numeric(name: str, values: npt.ArrayLike, *, bins: int = DEFAULT_BINS) -> NumericFeatureProfile:
    """Profile of a numeric column (NaN/None count as missing; infinities are rejected)."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    raw = np.asarray(values, dtype=np.float64)
    if np.isinf(raw).any():
        raise ValueError(f"feature {name!r} has infinite values")
    present = raw[~np.isnan(raw)]
    missing = int(raw.size - present.size)
    if present.size == 0:
        return NumericFeatureProfile(
            name=name,
            count=0,
            missing=missing,
            mean=0.0,
            std=0.0,
            min=0.0,
            max=0.0,
            quantiles=[0.0] * len(QUANTILE_PROBS),
            bin_edges=[0.0, 0.0],
            bin_counts=[0],
        )
    edges = _bin_edges(present, bins)
    counts = np.bincount(bin_index(edges, present), minlength=len(edges) - 1)
    return NumericFeatureProfile(
        name=name,
        count=int(present.size),
        missing=missing,
        mean=float(present.mean()),
        std=float(present.std()),
        min=float(present.min()),
        max=float(present.max()),
        quantiles=[float(q) for q in np.quantile(present, QUANTILE_PROBS)],
        bin_edges=[float(e) for e in edges],
        bin_counts=[int(c) for c in counts],
    )


def _bin_edges(present: npt.NDArray[np.float64], bins: int) -> npt.NDArray[np.float64]:
    distinct = np.unique(present)
    if distinct.size == 1:
        return np.array([distinct[0], distinct[0]])
    if distinct.size <= bins:
        # one bin per value: inner edges at the midpoints
        mids = (distinct[:-1] + distinct[1:]) / 2
        return np.concatenate([[distinct[0]], mids, [distinct[-1]]])
    edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)))
    return edges if edges.size >= 2 else np.array([distinct[0], distinct[-1]])


def profile_categorical(
    name: str, values: Iterable[Any], *, max_categories: int = DEFAULT_MAX_CATEGORIES
) -> CategoricalFeatureProfile:
    """Profile of a categorical column: the ``max_categories`` most frequent categories (ties by name)."""
    counter: Counter[str] = Counter()
    missing = 0
    for value in values:
        if _is_missing(value):
            missing += 1
        else:
            counter[category_key(value)] += 1
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:max_categories])
    total = sum(counter.values())
    return CategoricalFeatureProfile(
        name=name,
        count=total,
        missing=missing,
        counts=kept,
        frequencies={k: v / total for k, v in kept.items()},
        other_count=total - sum(kept.values()),
    )


def profile_feature(
    name: str,
    values: npt.ArrayLike,
    *,
    type: FeatureType | None = None,
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> NumericFeatureProfile | CategoricalFeatureProfile:
    """Profile of one column, numeric or categorical (``type`` inferred from the dtype when None)."""
    kind = type or infer_feature_type(values)
    if kind == "numeric":
        return profile_numeric(name, values, bins=bins)
    return profile_categorical(name, np.asarray(values, dtype=object).tolist(), max_categories=max_categories)


def build_profile(
    columns: Mapping[str, npt.ArrayLike],
    *,
    features: Sequence[str] | None = None,
    types: Mapping[str, FeatureType] | None = None,
    target: str | None = None,
    target_type: FeatureType | None = None,
    dataset_digest: str | None = None,
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> ReferenceProfile:
    """Profile of a table given as columns (a dict of arrays; for pandas: ``{c: df[c].to_numpy() ...}``).

    ``features`` (default: every column but ``target``) fixes the order; ``types`` overrides the inferred
    type of a column; ``target`` adds the target's profile.
    """
    names = list(features) if features is not None else [c for c in columns if c != target]
    missing = [n for n in [*names, *([target] if target else [])] if n not in columns]
    if missing:
        raise KeyError(f"columns not in the data: {missing}")
    lengths = {len(np.asarray(columns[n])) for n in [*names, *([target] if target else [])]}
    if len(lengths) > 1:
        raise ValueError(f"columns have different lengths: {sorted(lengths)}")
    types = types or {}
    entries = [
        profile_feature(n, columns[n], type=types.get(n), bins=bins, max_categories=max_categories)
        for n in names
    ]
    target_entry = (
        profile_feature(target, columns[target], type=target_type, bins=bins, max_categories=max_categories)
        if target
        else None
    )
    return ReferenceProfile(
        row_count=lengths.pop() if lengths else 0,
        dataset_digest=dataset_digest,
        features=entries,
        target=target_entry,
    )


# --------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------


def load_profile(document: str | bytes | Mapping[str, Any]) -> ReferenceProfile:
    """Parse a profile document (JSON text or an already parsed dict); :class:`ProfileError` when it is not
    a readable version-1 profile."""
    if isinstance(document, str | bytes):
        try:
            data = json.loads(document)
        except ValueError as error:
            raise ProfileError(f"reference profile is not JSON: {error}") from error
    else:
        data = dict(document)
    if not isinstance(data, dict):
        raise ProfileError("reference profile must be a JSON object")
    if data.get("kind") != PROFILE_KIND:
        raise ProfileError(f"not a reference profile (kind {data.get('kind')!r}, expected {PROFILE_KIND!r})")
    if data.get("version") != PROFILE_FORMAT_VERSION:
        raise ProfileError(
            f"reference profile version {data.get('version')!r} is not supported "
            f"(this build reads version {PROFILE_FORMAT_VERSION})"
        )
    try:
        return ReferenceProfile.model_validate(data)
    except ValidationError as error:
        raise ProfileError(f"invalid reference profile: {error}") from error
