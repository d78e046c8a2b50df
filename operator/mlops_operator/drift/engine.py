"""The drift engine: a reference profile against live data, per feature and for the whole model.

Two entry points, one result type (:class:`DriftResult`):

* :func:`evaluate` -- live HISTOGRAM COUNTS on the profile's own bins and categories, which is what the
  DriftPolicy controller has (the model server's ``mlops_feature_bin_total``,
  ``mlops_feature_category_total`` and ``mlops_feature_missing_total`` counters summed over replicas,
  differenced over the window; :func:`counts_from_samples` turns such label/value triples into the
  input, and :class:`~.accumulate.HistogramAccumulator` makes the same counts from raw data in chunks).
  Numeric features: PSI, chi-square and Jensen-Shannon on the bins; KS as the largest difference of the
  cumulative shares at the bin edges (effective size ``n m / (n + m)``); Wasserstein between the binned
  distributions (see :func:`~.stats.wasserstein_binned` for the approximation), divided by the reference
  standard deviation.
* :func:`evaluate_samples` -- live RAW values. PSI, chi-square and Jensen-Shannon as above after binning
  onto the reference bins; KS of the exact live ECDF against the reference's 101 quantiles and its bin
  edges (:func:`~.stats.ks_to_reference`: a supremum on a 1% grid, so it also sees changes inside one
  bin); Wasserstein between the live and the reference quantile functions at the reference's percentiles,
  exact beyond its range (:func:`~.stats.wasserstein_to_quantiles`). Memory: one feature's values at a time
  (float64, sorted) besides the input.

Methods, thresholds and decisions follow the DriftPolicy API (``controllers/driftpolicy/evaluation.py``
builds a :class:`DriftConfig` from a spec and a status entry from a :class:`DriftResult`):

* ``auto`` picks as Evidently does, by the size of the REFERENCE (the training rows profiled, so the
  choice is stable for a model version and a p-value test never sees an effective size above the limit):
  numeric features ks when it is <= 1000 (:data:`AUTO_SAMPLE_LIMIT`), else wasserstein (normed by the
  reference std); categorical features, and numeric ones with at most 5 distinct values
  (:data:`DISCRETE_MAX_VALUES`, seen in the profile's quantiles), chi2 when <= 1000, else jensenshannon.
  ks and wasserstein asked for a categorical feature become chi2 and jensenshannon (noted per feature).
* Thresholds: a feature override's, else the policy's when meant for the method used (same method, or
  both p-value tests), else :data:`~.methods.DEFAULT_THRESHOLDS`.
* p-value methods (ks, chi2) drift when the ADJUSTED p-value is below the threshold; the adjustment is a
  multiple-testing correction over the features tested with p-values (``correction``, default
  Benjamini-Hochberg: controls the false discovery rate, and when nothing drifted the chance of any
  false alarm, at the threshold; ``bonferroni`` controls the latter under any dependence, at a loss of
  power; ``none`` tests each feature alone). Distances drift when the score is above the threshold.
* The model drifted when at least ``drift_share`` of the evaluated features drifted and the window had
  at least ``min_samples`` rows (else ``insufficient``: reported, never drifted).

Edge cases: missing values are counted (``missing``) and left out of the comparison; categories unseen in
the reference (and ``OTHER_CATEGORY``) go to the reference's "other" bucket; a feature without live or
reference values is reported with ``evaluated=False`` and left out of ``driftedShare``; a reference
feature with a single value (zero variance) has one bin, so live COUNTS cannot show a change there (noted),
while raw values are compared as "equal to the value" vs "different" and by their distance to it (the
Wasserstein norm is then :data:`WASSERSTEIN_MIN_STD`, Evidently's floor).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from . import stats
from .methods import DEFAULT_THRESHOLDS, P_VALUE_METHODS, DriftMethod
from .profile import (
    QUANTILE_PROBS,
    CategoricalFeatureProfile,
    NumericFeatureProfile,
    ReferenceProfile,
    category_key,
)
from .stats import PSI_EPSILON, Correction, FloatArray

ResolvedMethod = Literal["psi", "ks", "chi2", "wasserstein", "jensenshannon"]
DRIFT_METHODS: Final[tuple[str, ...]] = get_args(DriftMethod)
#: ``auto`` uses the p-value tests (ks, chi2) up to this many reference rows, distances above.
AUTO_SAMPLE_LIMIT: Final = 1000
#: ``auto`` treats a numeric feature with at most this many distinct values as categorical.
DISCRETE_MAX_VALUES: Final = 5
#: Floor of the reference standard deviation that divides the Wasserstein distance (Evidently's).
WASSERSTEIN_MIN_STD: Final = 1e-3
_PROBS: Final = np.asarray(QUANTILE_PROBS, dtype=np.float64)

FeatureKind = Literal["numeric", "categorical"]
BinCounts = Sequence[float] | npt.NDArray[Any] | Mapping[int, float] | Mapping[str, float]


class DriftInputError(ValueError):
    """Live data that does not fit the reference profile (e.g. another number of bins: another model
    version's counters)."""


# --------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FeatureCounts:
    """Live counts of one feature in a window.

    ``bins``: a numeric feature's count per reference bin, in bin order (a sequence of the profile's
    length, or a mapping bin index -> count, absent bins 0). ``categories``: a categorical feature's count
    per category (``OTHER_CATEGORY`` and names absent from the reference go to its "other" bucket).
    ``missing``: missing values. Counts are non-negative numbers (Prometheus increases may be fractional).
    """

    bins: BinCounts = ()
    categories: Mapping[str, float] = field(default_factory=dict)
    missing: float = 0.0


CountsLike = FeatureCounts | Sequence[float] | npt.NDArray[Any] | Mapping[str, float]


def counts_from_samples(
    bin_samples: Iterable[tuple[str, str | int, float]] = (),
    category_samples: Iterable[tuple[str, str, float]] = (),
    missing_samples: Iterable[tuple[str, float]] = (),
) -> dict[str, FeatureCounts]:
    """:class:`FeatureCounts` per feature from (feature, bin, count), (feature, category, count) and
    (feature, count) triples -- the label values and values of the model server's feature counters
    (``FeatureCounters.bin_samples()`` etc., or a Prometheus query result). Repeated keys (several
    replicas) are added up."""
    bins: dict[str, dict[int, float]] = {}
    cats: dict[str, dict[str, float]] = {}
    missing: dict[str, float] = {}
    for feature, b, value in bin_samples:
        try:
            index = int(b)
        except ValueError as error:
            raise DriftInputError(f"feature {feature!r}: bin label {b!r} is not an index") from error
        per = bins.setdefault(feature, {})
        per[index] = per.get(index, 0.0) + float(value)
    for feature, category, value in category_samples:
        per_c = cats.setdefault(feature, {})
        per_c[category] = per_c.get(category, 0.0) + float(value)
    for feature, value in missing_samples:
        missing[feature] = missing.get(feature, 0.0) + float(value)
    return {
        name: FeatureCounts(
            bins=bins.get(name, {}), categories=cats.get(name, {}), missing=missing.get(name, 0.0)
        )
        for name in [
            *bins,
            *[c for c in cats if c not in bins],
            *[m for m in missing if m not in bins and m not in cats],
        ]
    }


# --------------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSetting:
    """Method and/or threshold of one feature (None: the policy's)."""

    method: DriftMethod | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftConfig:
    """How to evaluate: a DriftPolicy spec's drift fields plus engine options."""

    method: DriftMethod = "auto"
    threshold: float | None = None
    overrides: Mapping[str, FeatureSetting] = field(default_factory=dict)
    features: tuple[str, ...] | None = None
    """Features to evaluate, in this order (None: every feature of the profile)."""
    drift_share: float = 0.5
    min_samples: int = 500
    correction: Correction = "bh"
    auto_sample_limit: int = AUTO_SAMPLE_LIMIT
    psi_epsilon: float = PSI_EPSILON

    def __post_init__(self) -> None:
        for name, setting in [("", FeatureSetting(self.method, self.threshold)), *self.overrides.items()]:
            where = f"overrides[{name}]" if name else "method"
            if setting.method is not None and setting.method not in DRIFT_METHODS:
                raise ValueError(f"{where}: unknown method {setting.method!r}")
            if setting.threshold is not None:
                if not (math.isfinite(setting.threshold) and setting.threshold >= 0):
                    raise ValueError(f"{where}: threshold must be a finite number >= 0")
                method = setting.method or self.method
                if method in P_VALUE_METHODS and not 0 < setting.threshold < 1:
                    raise ValueError(f"{where}: threshold of {method} is a p-value, between 0 and 1")
        if not 0 < self.drift_share <= 1:
            raise ValueError("drift_share must be in (0, 1]")
        if self.min_samples < 0:
            raise ValueError("min_samples must be >= 0")
        if self.correction not in stats.CORRECTIONS:
            raise ValueError(f"unknown correction {self.correction!r}")

    def method_for(self, feature: str) -> DriftMethod:
        """The method configured for ``feature`` (may be auto)."""
        setting = self.overrides.get(feature)
        return setting.method if setting is not None and setting.method is not None else self.method

    def threshold_for(self, feature: str, method: ResolvedMethod) -> float:
        """Threshold for ``feature`` evaluated with ``method``: the feature's override, else the policy's
        threshold when it is meant for ``method`` (the policy's own method, or both are p-value tests),
        else the method's default (a psi threshold is not handed to a feature overridden to ks), like
        ``DriftPolicySpec.threshold_for``."""
        setting = self.overrides.get(feature)
        if setting is not None and setting.threshold is not None:
            return setting.threshold
        if self.threshold is not None and self.method != "auto":
            same_family = self.method in P_VALUE_METHODS and method in P_VALUE_METHODS
            if method == self.method or same_family:
                return self.threshold
        return DEFAULT_THRESHOLDS[method]


def is_discrete(feature: NumericFeatureProfile) -> bool:
    """A numeric feature with at most :data:`DISCRETE_MAX_VALUES` distinct values in its reference
    quantiles (one bin per value, or a constant)."""
    return feature.bins <= DISCRETE_MAX_VALUES and len(set(feature.quantiles)) <= DISCRETE_MAX_VALUES


def resolve_method(
    feature: NumericFeatureProfile | CategoricalFeatureProfile,
    method: DriftMethod,
    *,
    auto_sample_limit: int = AUTO_SAMPLE_LIMIT,
) -> tuple[ResolvedMethod, str | None]:
    """The method actually used for ``feature`` and, when it differs from the one asked for (other than by
    auto), why."""
    numeric = isinstance(feature, NumericFeatureProfile)
    if method == "auto":
        small = feature.count + feature.missing <= auto_sample_limit
        if isinstance(feature, NumericFeatureProfile) and not is_discrete(feature):
            return ("ks" if small else "wasserstein"), None
        return ("chi2" if small else "jensenshannon"), None
    if not numeric and method == "ks":
        return "chi2", "ks needs ordered values; chi2 used for a categorical feature"
    if not numeric and method == "wasserstein":
        return (
            "jensenshannon",
            "wasserstein needs ordered values; jensenshannon used for a categorical feature",
        )
    return method, None


# --------------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    """The drift result of one feature."""

    feature: str
    type: FeatureKind | None
    """numeric or categorical (None: not in the reference profile)."""
    method: str
    """Method used (auto resolved)."""
    score: float
    """Statistic or distance: KS D, chi-square statistic, PSI, Jensen-Shannon distance, Wasserstein
    distance in reference standard deviations."""
    p_value: float | None
    """For ks and chi2: the p-value ADJUSTED for multiple testing, the one compared with threshold."""
    raw_p_value: float | None
    """For ks and chi2: the p-value of this feature's test alone."""
    threshold: float
    drifted: bool
    samples: int
    """Live non-missing values compared."""
    missing: int = 0
    """Live missing values (not compared)."""
    reference_samples: int = 0
    evaluated: bool = True
    """False when there was nothing to compare (no live or no reference values): never drifted and left
    out of driftedShare."""
    note: str | None = None

    def describe(self) -> str:
        """e.g. ``petal_length (ks p=0.001)`` or ``color (jensenshannon 0.23)``."""
        if self.p_value is not None:
            return f"{self.feature} ({self.method} p={self.p_value:.3g})"
        return f"{self.feature} ({self.method} {self.score:.3g})"


@dataclass(frozen=True)
class DriftResult:
    """The drift result of a model: per feature and overall."""

    features: tuple[FeatureDrift, ...]
    drifted_share: float
    """Drifted / evaluated features (0 when none was evaluated)."""
    drifted: bool
    """drifted_share >= drift_share, with enough samples."""
    samples: int
    """Live rows in the window (the most any feature saw, missing values included)."""
    insufficient: bool
    """samples < min_samples: never drifted."""
    min_samples: int
    drift_share: float
    correction: Correction

    @property
    def evaluated(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.evaluated]

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def feature(self, name: str) -> FeatureDrift:
        for entry in self.features:
            if entry.feature == name:
                return entry
        raise KeyError(name)

    @property
    def message(self) -> str:
        """One line for status and events, e.g. ``3/4 features drifted: petal_length (ks p=0.001), ...``."""
        evaluated = self.evaluated
        drifted = [f for f in evaluated if f.drifted]
        head = f"{len(drifted)}/{len(evaluated)} features drifted"
        if self.insufficient:
            return f"{self.samples} samples < minSamples {self.min_samples}"
        if not evaluated:
            return "no feature could be evaluated"
        if not drifted:
            return f"no drift: {head}"
        ranked = sorted(drifted, key=lambda f: (f.p_value if f.p_value is not None else 1.0, -f.score))
        listed = ", ".join(f.describe() for f in ranked[:5])
        more = f" and {len(ranked) - 5} more" if len(ranked) > 5 else ""
        return f"{head} (driftShare {self.drift_share:g}): {listed}{more}"


# --------------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One feature, ready to score: reference and live histograms on the same bins (+ raw values)."""

    name: str
    profile: NumericFeatureProfile | CategoricalFeatureProfile | None
    ref: FloatArray
    cur: FloatArray
    missing: float
    raw_statistic: float | None = None
    """From raw values: the KS statistic or the (unnormalised) Wasserstein distance, computed while the
    sorted values were at hand (they are not kept: 100 features x 10^6 rows would be 800 MB)."""
    note: str | None = None

    @property
    def kind(self) -> FeatureKind | None:
        return None if self.profile is None else self.profile.type

    @property
    def samples(self) -> float:
        return float(self.cur.sum())


def _reference_histogram(feature: NumericFeatureProfile | CategoricalFeatureProfile) -> FloatArray:
    if isinstance(feature, NumericFeatureProfile):
        return np.asarray(feature.bin_counts, dtype=np.float64)
    return np.asarray([*feature.counts.values(), feature.other_count], dtype=np.float64)


def _check_counts(name: str, values: FloatArray) -> FloatArray:
    if not (np.isfinite(values).all() and (values >= 0).all()):
        raise DriftInputError(f"feature {name!r}: counts must be finite and non-negative")
    return values


def _numeric_counts(name: str, feature: NumericFeatureProfile, bins: BinCounts) -> FloatArray:
    k = feature.bins
    if isinstance(bins, Mapping):
        out = np.zeros(k)
        for key, value in bins.items():
            try:
                index = int(key)
            except ValueError as error:
                raise DriftInputError(f"feature {name!r}: bin {key!r} is not an index") from error
            if not 0 <= index < k:
                raise DriftInputError(
                    f"feature {name!r}: bin {index} out of range: the reference profile has {k} bins "
                    "(live counters of another model version?)"
                )
            out[index] += float(value)
        return _check_counts(name, out)
    arr = np.asarray(bins, dtype=np.float64).ravel()
    if arr.size != k:
        raise DriftInputError(
            f"feature {name!r}: {arr.size} live bins, the reference profile has {k} "
            "(live counters of another model version?)"
        )
    return _check_counts(name, arr)


def _categorical_counts(
    name: str, feature: CategoricalFeatureProfile, counts: Mapping[str, float]
) -> FloatArray:
    index = {c: i for i, c in enumerate(feature.counts)}
    out = np.zeros(len(index) + 1)
    for category, value in counts.items():
        out[index.get(category, len(index))] += float(value)
    return _check_counts(name, out)


def _item_from_counts(
    name: str, feature: NumericFeatureProfile | CategoricalFeatureProfile, live: CountsLike | None
) -> _Item:
    ref = _reference_histogram(feature)
    missing = 0.0
    if live is None:
        cur = np.zeros(ref.size)
        return _Item(name, feature, ref, cur, 0.0, note="no live counts")
    if isinstance(live, FeatureCounts):
        missing = float(live.missing)
        if not (math.isfinite(missing) and missing >= 0):
            raise DriftInputError(f"feature {name!r}: missing count must be finite and non-negative")
        source: Any = live.bins if isinstance(feature, NumericFeatureProfile) else live.categories
    else:
        source = live
    if isinstance(feature, NumericFeatureProfile):
        cur = _numeric_counts(name, feature, source)
    else:
        if not isinstance(source, Mapping):
            raise DriftInputError(f"feature {name!r} is categorical: give counts per category")
        cur = _categorical_counts(name, feature, source)
    note = None
    if isinstance(feature, NumericFeatureProfile) and feature.bins == 1 and feature.count > 0:
        note = "the reference has a single value (one bin): live counts cannot show a change"
    return _Item(name, feature, ref, cur, missing, note=note)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(value != value)
    return type(value).__name__ in ("NAType", "NaTType")


def categorical_histogram(
    feature: CategoricalFeatureProfile, values: npt.ArrayLike
) -> tuple[FloatArray, float]:
    """Counts of ``values`` per category of ``feature`` (in profile order) followed by the count of values in
    none of them (the "other" bucket), and the number of missing values (None, NaN, pandas NA)."""
    raw = np.asarray(values, dtype=object).ravel().tolist()
    types = set(map(type, raw))
    counted: Counter[Any]
    try:
        if len(types) > 1 and (bool in types or np.bool_ in types):
            raise TypeError("True == 1 in a Counter, but they are different categories")
        counted = Counter(raw)
    except TypeError:  # unhashable or mixed values: count their names
        counted = Counter(None if _is_missing(v) else category_key(v) for v in raw)
    index = {c: i for i, c in enumerate(feature.counts)}
    out = np.zeros(len(index) + 1)
    missing = 0.0
    for value, count in counted.items():
        if _is_missing(value):
            missing += count
        else:
            out[index.get(value if type(value) is str else category_key(value), len(index))] += count
    return out, missing


def _item_from_values(
    name: str,
    feature: NumericFeatureProfile | CategoricalFeatureProfile,
    values: npt.ArrayLike | None,
    method: str,
) -> _Item:
    ref = _reference_histogram(feature)
    if values is None:
        return _Item(name, feature, ref, np.zeros(ref.size), 0.0, note="no live values")
    if isinstance(feature, CategoricalFeatureProfile):
        cur, missing_count = categorical_histogram(feature, values)
        return _Item(name, feature, ref, cur, missing_count)
    try:
        x = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as error:
        raise DriftInputError(f"feature {name!r} is numeric: {error}") from error
    nan = np.isnan(x)
    missing = float(np.count_nonzero(nan))
    xs = np.sort(x[~nan] if missing else x)
    del x, nan
    raw: float | None = None
    if method == "ks":
        edges, edge_cdf = _edge_cdf(feature)
        raw = stats.ks_to_reference(xs, feature.quantiles, _PROBS, edges, edge_cdf)
    elif method == "wasserstein":
        raw = stats.wasserstein_to_quantiles(xs, feature.quantiles, _PROBS)
    if feature.count > 0 and feature.bin_edges[0] == feature.bin_edges[-1]:
        # a constant reference: compare "equal to the value" vs "anything else"
        v = feature.bin_edges[0]
        equal = float(np.searchsorted(xs, v, side="right") - np.searchsorted(xs, v, side="left"))
        ref = np.asarray([float(feature.count), 0.0])
        cur = np.asarray([equal, xs.size - equal])
        return _Item(name, feature, ref, cur, missing, raw_statistic=raw)
    inner = np.asarray(feature.bin_edges[1:-1], dtype=np.float64)
    below = np.searchsorted(xs, inner, side="left")  # values < each inner edge
    cum = np.r_[0, below, xs.size]
    cur = np.diff(cum).astype(np.float64)
    return _Item(name, feature, ref, cur, missing, raw_statistic=raw)


def evaluate(
    profile: ReferenceProfile,
    counts_by_feature: Mapping[str, CountsLike],
    config: DriftConfig | None = None,
) -> DriftResult:
    """Drift of live histogram counts against ``profile``.

    ``counts_by_feature``: per feature a :class:`FeatureCounts` (numeric: ``bins``; categorical:
    ``categories``; both with ``missing``), or for short a sequence of bin counts (numeric) or a mapping
    category -> count (categorical). A watched feature without an entry is reported as not evaluated.
    Raises :class:`DriftInputError` when counts do not fit the profile (number of bins, negative counts).
    """
    config = config or DriftConfig()
    items: list[_Item] = []
    for name in config.features or profile.feature_names:
        feature = _profile_feature(profile, name)
        if feature is None:
            items.append(
                _Item(name, None, np.zeros(1), np.zeros(1), 0.0, note="not in the reference profile")
            )
            continue
        items.append(_item_from_counts(name, feature, counts_by_feature.get(name)))
    return _score(items, config)


def evaluate_samples(
    profile: ReferenceProfile,
    data: Mapping[str, npt.ArrayLike],
    config: DriftConfig | None = None,
) -> DriftResult:
    """Drift of live raw values (a column per feature: numbers for numeric features, NaN/None missing;
    any values for categorical ones, compared as :func:`~.profile.category_key`) against ``profile``."""
    config = config or DriftConfig()
    items: list[_Item] = []
    for name in config.features or profile.feature_names:
        feature = _profile_feature(profile, name)
        if feature is None:
            items.append(
                _Item(name, None, np.zeros(1), np.zeros(1), 0.0, note="not in the reference profile")
            )
            continue
        method, _ = resolve_method(
            feature, config.method_for(name), auto_sample_limit=config.auto_sample_limit
        )
        items.append(_item_from_values(name, feature, data.get(name), method))
    return _score(items, config)


def _profile_feature(
    profile: ReferenceProfile, name: str
) -> NumericFeatureProfile | CategoricalFeatureProfile | None:
    try:
        return profile.feature(name)
    except KeyError:
        return None


def _pad(rows: list[FloatArray]) -> FloatArray:
    width = max(r.size for r in rows)
    out = np.zeros((len(rows), width))
    for i, r in enumerate(rows):
        out[i, : r.size] = r
    return out


def _edge_cdf(feature: NumericFeatureProfile) -> tuple[FloatArray, FloatArray]:
    counts = np.asarray(feature.bin_counts, dtype=np.float64)
    total = counts.sum()
    return np.asarray(feature.bin_edges[1:-1], dtype=np.float64), np.cumsum(counts)[:-1] / total


def _score(items: list[_Item], config: DriftConfig) -> DriftResult:
    n = len(items)
    methods: list[str] = []
    notes: list[str | None] = []
    thresholds = np.zeros(n)
    scores = np.zeros(n)
    raw_p: list[float | None] = [None] * n
    ok = np.zeros(n, dtype=bool)
    for i, item in enumerate(items):
        configured = config.method_for(item.name)
        note = item.note
        if item.profile is None:
            methods.append(configured)
            thresholds[i] = DEFAULT_THRESHOLDS[configured] if configured != "auto" else 0.0
            notes.append(note)
            continue
        method, why = resolve_method(item.profile, configured, auto_sample_limit=config.auto_sample_limit)
        threshold = config.threshold_for(item.name, method)
        if why is not None:
            note = why if note is None else f"{note}; {why}"
            # a feature's own threshold was meant for the method it asked for
            if not (configured in P_VALUE_METHODS and method in P_VALUE_METHODS):
                threshold = DEFAULT_THRESHOLDS[method]
        methods.append(method)
        thresholds[i] = threshold
        if item.ref.sum() <= 0:
            note = "no reference values"
        elif item.cur.sum() <= 0:
            note = item.note or "no live values"
        else:
            ok[i] = True
        notes.append(note)

    by_method: dict[str, list[int]] = {}
    for i in range(n):
        if ok[i]:
            by_method.setdefault(methods[i], []).append(i)
    for group, idx in by_method.items():
        refs = [items[i].ref for i in idx]
        curs = [items[i].cur for i in idx]
        if group == "psi":
            scores[idx] = stats.psi(_pad(refs), _pad(curs), epsilon=config.psi_epsilon)
        elif group == "jensenshannon":
            scores[idx] = stats.jensenshannon(_pad(refs), _pad(curs))
        elif group == "chi2":
            stat, _, chi2_p = stats.chi2_homogeneity(_pad(refs), _pad(curs))
            scores[idx] = stat
            for j, i in enumerate(idx):
                raw_p[i] = float(chi2_p[j])
        elif group == "ks":
            for i in idx:
                item = items[i]
                feature = cast(NumericFeatureProfile, item.profile)
                if item.raw_statistic is not None:
                    d = item.raw_statistic
                    en = stats.effective_size(feature.count, item.samples)
                else:
                    d_arr, en = stats.ks_binned(item.ref, item.cur)
                    d = float(d_arr)
                scores[i] = d
                raw_p[i] = float(stats.ks_pvalue(d, en))
        elif group == "wasserstein":
            for i in idx:
                item = items[i]
                feature = cast(NumericFeatureProfile, item.profile)
                if item.raw_statistic is not None:
                    w = item.raw_statistic
                else:
                    w = stats.wasserstein_binned(
                        item.ref, item.cur, feature.bin_edges, feature.quantiles, _PROBS
                    )
                scores[i] = w / max(feature.std, WASSERSTEIN_MIN_STD)
        else:  # pragma: no cover - resolve_method returns only the five methods
            raise AssertionError(group)

    tested = {i: p for i, p in enumerate(raw_p) if ok[i] and p is not None}
    adjusted: dict[int, float] = {}
    if tested:
        adj = stats.adjust_pvalues(list(tested.values()), config.correction)
        adjusted = {i: float(a) for i, a in zip(tested, adj, strict=True)}

    results: list[FeatureDrift] = []
    for i, item in enumerate(items):
        p_adjusted = adjusted.get(i)
        if not ok[i]:
            drifted = False
        elif p_adjusted is not None:
            drifted = bool(p_adjusted < thresholds[i])
        else:
            drifted = bool(scores[i] > thresholds[i])
        results.append(
            FeatureDrift(
                feature=item.name,
                type=item.kind,
                method=methods[i],
                score=float(scores[i]),
                p_value=p_adjusted,
                raw_p_value=raw_p[i] if ok[i] else None,
                threshold=float(thresholds[i]),
                drifted=drifted,
                samples=round(item.samples),
                missing=round(item.missing),
                reference_samples=0 if item.profile is None else item.profile.count,
                evaluated=bool(ok[i]),
                note=notes[i],
            )
        )
    evaluated = [r for r in results if r.evaluated]
    share = float(sum(r.drifted for r in evaluated) / len(evaluated)) if evaluated else 0.0
    samples = max((round(it.samples + it.missing) for it in items), default=0)
    insufficient = samples < config.min_samples
    return DriftResult(
        features=tuple(results),
        drifted_share=share,
        drifted=bool(evaluated) and not insufficient and share >= config.drift_share - 1e-12,
        samples=samples,
        insufficient=insufficient,
        min_samples=config.min_samples,
        drift_share=config.drift_share,
        correction=config.correction,
    )


__all__ = [
    "AUTO_SAMPLE_LIMIT",
    "DISCRETE_MAX_VALUES",
    "WASSERSTEIN_MIN_STD",
    "CountsLike",
    "DriftConfig",
    "DriftInputError",
    "DriftResult",
    "FeatureCounts",
    "FeatureDrift",
    "FeatureSetting",
    "ResolvedMethod",
    "categorical_histogram",
    "counts_from_samples",
    "evaluate",
    "evaluate_samples",
    "is_discrete",
    "resolve_method",
]
