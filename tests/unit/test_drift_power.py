"""False alarms and detection power of the drift engine, measured over many seeds.

* No drift: 200 seeds x 20 features (16 numeric of four shapes, 4 categorical) at 1,000 reference and
  1,000 live rows, where ``auto`` picks the p-value tests (ks, chi2): the chance that a seed flags ANY
  feature (family-wise false alarm rate) stays <= 7% with Benjamini-Hochberg or Bonferroni, on live counts
  and on raw values; without a correction it is several times that. At 20,000 rows ``auto`` picks the
  distances (wasserstein, jensenshannon), which never fire on identical distributions.
* Drift at 10^5 rows (reference and live), 20 seeds x (5 features shifted by 0.25 sigma, 5 with a 10%
  larger variance, 10 unchanged): recall per method and path, pinned below. KS (binned on the profile's 10
  quantile bins, or raw) and chi2 (on the same bins) catch both changes every time; Wasserstein (``auto``
  at this size) catches the shift and misses the variance change (W = 0.04 sigma < 0.1); PSI (0.06) and
  Jensen-Shannon (0.086) miss both at their default 0.1 thresholds -- whatever the number of bins, see
  benchmarks/drift/results.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest

from mlops_operator.drift.engine import DriftConfig, DriftResult, FeatureCounts, evaluate, evaluate_samples
from mlops_operator.drift.profile import NumericFeatureProfile, build_profile

Gen = Callable[[np.random.Generator, int], np.ndarray]
NUMERIC: dict[str, Gen] = {
    "normal": lambda r, n: r.normal(3.0, 2.0, n),
    "expo": lambda r, n: r.exponential(1.5, n),
    "uniform": lambda r, n: r.uniform(-1.0, 1.0, n),
    "lognormal": lambda r, n: r.lognormal(0.0, 1.0, n),
}
CATEGORIES = np.array(["a", "b", "c", "d", "e"])
SHARES = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


def _null_data(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    data: dict[str, np.ndarray] = {}
    for i in range(16):
        data[f"num{i}"] = list(NUMERIC.values())[i % 4](rng, n)
    for i in range(4):
        data[f"cat{i}"] = rng.choice(CATEGORIES, n, p=SHARES)
    return data


def _counts(
    profile_data: dict[str, np.ndarray], live: dict[str, np.ndarray]
) -> tuple[object, dict[str, FeatureCounts]]:
    profile = build_profile(profile_data)
    counts: dict[str, FeatureCounts] = {}
    for feature in profile.features:
        if isinstance(feature, NumericFeatureProfile):
            counts[feature.name] = FeatureCounts(bins=feature.histogram(live[feature.name]))
        else:
            hist, other = feature.histogram(live[feature.name].tolist())
            counts[feature.name] = FeatureCounts(
                categories={**dict(zip(feature.counts, hist.tolist(), strict=True)), "x": other}
            )
    return profile, counts


@pytest.fixture(scope="module")
def null_runs() -> dict[str, list[DriftResult]]:
    runs: dict[str, list[DriftResult]] = defaultdict(list)
    for seed in range(200):
        rng = np.random.default_rng(10_000 + seed)
        ref, live = _null_data(rng, 1000), _null_data(rng, 1000)
        profile, counts = _counts(ref, live)
        for correction in ("bh", "bonferroni", "none"):
            config = DriftConfig(correction=correction, min_samples=0)  # type: ignore[arg-type]
            runs[f"counts/{correction}"].append(evaluate(profile, counts, config))  # type: ignore[arg-type]
            runs[f"raw/{correction}"].append(evaluate_samples(profile, live, config))  # type: ignore[arg-type]
    return runs


def _any_alarm_rate(results: list[DriftResult]) -> float:
    return float(np.mean([bool(r.drifted_features) for r in results]))


@pytest.mark.parametrize("path", ["counts", "raw"])
def test_family_wise_false_alarm_rate_without_drift(
    null_runs: dict[str, list[DriftResult]], path: str
) -> None:
    first = null_runs[f"{path}/bh"][0]
    assert {f.method for f in first.features} == {"ks", "chi2"}  # auto at 1,000 reference rows
    bh = _any_alarm_rate(null_runs[f"{path}/bh"])
    bonferroni = _any_alarm_rate(null_runs[f"{path}/bonferroni"])
    uncorrected = _any_alarm_rate(null_runs[f"{path}/none"])
    assert bh <= 0.07 and bonferroni <= 0.07, (bh, bonferroni)
    assert bonferroni <= bh
    assert uncorrected >= 3 * max(bh, 0.03), uncorrected  # what the correction is for
    # and never a model-level alarm at driftShare 0.5
    assert not any(r.drifted for r in null_runs[f"{path}/bh"])


def test_distances_do_not_fire_without_drift_at_large_samples() -> None:
    alarms = 0
    for seed in range(20):
        rng = np.random.default_rng(20_000 + seed)
        ref, live = _null_data(rng, 20_000), _null_data(rng, 20_000)
        profile, counts = _counts(ref, live)
        for result in (evaluate(profile, counts), evaluate_samples(profile, live)):  # type: ignore[arg-type]
            assert {f.method for f in result.features} == {"wasserstein", "jensenshannon"}
            alarms += len(result.drifted_features)
        for method in ("psi", "jensenshannon", "wasserstein"):
            alarms += len(evaluate(profile, counts, DriftConfig(method=method)).drifted_features)  # type: ignore[arg-type]
    assert alarms == 0


ROWS = 100_000


@pytest.fixture(scope="module")
def power_runs() -> dict[tuple[str, str, str], list[bool]]:
    """(method, path, kind) -> drifted flags; kind m = 0.25-sigma mean shift, v = 10% variance, n = none."""
    flags: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    names = [f"m{i}" for i in range(5)] + [f"v{i}" for i in range(5)] + [f"n{i}" for i in range(10)]
    for seed in range(20):
        rng = np.random.default_rng(30_000 + seed)
        ref = {n: rng.normal(size=ROWS) for n in names}
        live = {
            n: rng.normal(0.25, 1.0, ROWS)
            if n[0] == "m"
            else rng.normal(0.0, 1.1**0.5, ROWS)
            if n[0] == "v"
            else rng.normal(size=ROWS)
            for n in names
        }
        profile = build_profile(ref)
        counts = {}
        for n in names:
            feature = profile.feature(n)
            assert isinstance(feature, NumericFeatureProfile)
            counts[n] = FeatureCounts(bins=feature.histogram(live[n]))
        for method in ("ks", "chi2", "wasserstein", "psi", "jensenshannon", "auto"):
            config = DriftConfig(method=method)  # type: ignore[arg-type]
            results = [("counts", evaluate(profile, counts, config))]
            if method in ("ks", "wasserstein"):
                results.append(("raw", evaluate_samples(profile, live, config)))
            for path, result in results:
                if method == "auto":
                    assert {f.method for f in result.features} == {"wasserstein"}
                for f in result.features:
                    flags[(method, path, f.feature[0])].append(f.drifted)
    return flags


@pytest.mark.parametrize(
    ("method", "path", "shift_recall", "variance_recall"),
    [
        ("ks", "counts", 0.95, 0.95),
        ("ks", "raw", 0.95, 0.95),
        ("chi2", "counts", 0.95, 0.95),
        ("wasserstein", "counts", 0.95, None),
        ("wasserstein", "raw", 0.95, None),
        ("auto", "counts", 0.95, None),
        ("psi", "counts", None, None),
        ("jensenshannon", "counts", None, None),
    ],
)
def test_detection_power_at_1e5_rows(
    power_runs: dict[tuple[str, str, str], list[bool]],
    method: str,
    path: str,
    shift_recall: float | None,
    variance_recall: float | None,
) -> None:
    shift = float(np.mean(power_runs[(method, path, "m")]))
    variance = float(np.mean(power_runs[(method, path, "v")]))
    false_alarms = float(np.mean(power_runs[(method, path, "n")]))
    # None: a documented miss at the default threshold (the change is below it, not lost in noise)
    assert shift >= shift_recall if shift_recall is not None else shift <= 0.05, shift
    assert variance >= variance_recall if variance_recall is not None else variance <= 0.05, variance
    assert false_alarms <= 0.06, false_alarms
