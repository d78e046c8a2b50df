"""Drift statistics (drift/stats.py) against independent references: scipy for every statistic, p-value
and correction, hand-computed values for PSI, closed forms for the Wasserstein approximations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special
from scipy import stats as ss
from scipy.spatial.distance import jensenshannon as scipy_js

from mlops_operator.drift import stats
from mlops_operator.drift.profile import QUANTILE_PROBS, profile_numeric

PROBS = np.asarray(QUANTILE_PROBS)


# --------------------------------------------------------------------------------------------------------
# special functions
# --------------------------------------------------------------------------------------------------------


def test_gammaincc_matches_scipy() -> None:
    a = np.array([0.05, 0.5, 1.0, 1.5, 3.0, 10.0, 37.5, 100.0, 1000.0, 25000.0])
    for aa in a:
        x = np.r_[0.0, np.geomspace(1e-6, 50 * aa + 50, 60), aa, aa + 1, aa - 0.5 if aa > 0.5 else 0.1]
        ours = stats.gammaincc(aa, x)
        ref = special.gammaincc(aa, x)
        ok = ref > 1e-300
        np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-9, atol=1e-300)
    assert stats.gammaincc(2.0, np.inf) == 0.0
    with pytest.raises(ValueError):
        stats.gammaincc(0.0, 1.0)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 49, 99, 500, 4999])
def test_chi2_sf_matches_scipy_over_the_whole_range(df: int) -> None:
    p = np.r_[np.geomspace(1e-280, 1.0, 200), 0.5, 0.05, 0.95]
    x = ss.chi2.isf(p, df)
    x = x[np.isfinite(x)]
    np.testing.assert_allclose(stats.chi2_sf(x, df), ss.chi2.sf(x, df), rtol=1e-9)
    assert stats.chi2_sf(0.0, df) == 1.0
    assert stats.chi2_sf(5.0, 0) == 1.0  # no degree of freedom: nothing to test


def test_kolmogorov_sf_matches_scipy_kstwobign() -> None:
    lam = np.r_[0.0, np.linspace(0.01, 4.0, 800), 1.18, 1.1799999]
    np.testing.assert_allclose(stats.kolmogorov_sf(lam), ss.kstwobign.sf(lam), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("en", [30, 100, 500, 5000, 50000])
def test_ks_pvalue_matches_scipys_asymptotic_two_sample_pvalue(en: int) -> None:
    """scipy's ks_2samp(method="asymp") uses the exact one-sample distribution kstwo(round(en))."""
    d = np.linspace(0.0005, 0.9, 3000 if en <= 500 else 300)
    ref = ss.kstwo.sf(d, en)
    ours = stats.ks_pvalue(d, en)
    assert np.max(np.abs(ours - ref)) < 5e-4
    big = ref >= 1e-4
    rel = np.abs(ours[big] / ref[big] - 1)
    assert rel.max() < {30: 0.25, 100: 0.07, 500: 0.015, 5000: 0.002, 50000: 3e-4}[en]


def test_ks_2samp_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    for n, m, shift in [(50, 70, 0.0), (300, 1000, 0.2), (2000, 2000, 0.05), (10_000, 700, 0.0)]:
        x, y = rng.normal(size=n), rng.normal(shift, 1.0, size=m)
        ref = ss.ks_2samp(x, y, method="asymp")
        d, p = stats.ks_2samp(x, y)
        assert d == pytest.approx(ref.statistic, abs=1e-12)
        # scipy rounds the effective size to an integer; at the same size the p-values agree closely
        en = n * m / (n + m)
        assert float(stats.ks_pvalue(d, round(en))) == pytest.approx(ref.pvalue, abs=5e-4)
        assert p == pytest.approx(ref.pvalue, abs=5e-3)
    ties = rng.integers(0, 5, 400), rng.integers(0, 6, 300)
    assert stats.ks_2samp(*ties)[0] == pytest.approx(ss.ks_2samp(*ties).statistic, abs=1e-12)


# --------------------------------------------------------------------------------------------------------
# histogram statistics
# --------------------------------------------------------------------------------------------------------


def test_psi_of_a_hand_computed_example() -> None:
    expected = [0.25, 0.25, 0.25, 0.25]
    actual = [0.10, 0.20, 0.30, 0.40]
    by_hand = (
        (0.10 - 0.25) * math.log(0.10 / 0.25)
        + (0.20 - 0.25) * math.log(0.20 / 0.25)
        + (0.30 - 0.25) * math.log(0.30 / 0.25)
        + (0.40 - 0.25) * math.log(0.40 / 0.25)
    )
    assert by_hand == pytest.approx(0.228218, abs=1e-6)
    assert float(stats.psi(expected, actual)) == pytest.approx(by_hand, rel=1e-12)
    # counts instead of shares: the same
    assert float(stats.psi([250, 250, 250, 250], [10, 20, 30, 40])) == pytest.approx(by_hand, rel=1e-12)
    # symmetric in its arguments
    assert float(stats.psi(actual, expected)) == pytest.approx(by_hand, rel=1e-12)


def test_psi_textbook_decile_example() -> None:
    """Ten reference deciles (10% each) against a scorecard's current shares (a textbook layout)."""
    current = np.array([8, 9, 10, 11, 12, 12, 11, 10, 9, 8]) / 100
    by_hand = sum((c - 0.1) * math.log(c / 0.1) for c in current)
    assert float(stats.psi([0.1] * 10, current)) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.020232, abs=1e-6)


def test_psi_smooths_empty_bins_with_epsilon() -> None:
    ref, cur = [50, 50, 0], [40, 40, 20]
    eps = stats.PSI_EPSILON
    by_hand = (0.4 - 0.5) * math.log(0.4 / 0.5) * 2 + (0.2 - eps) * math.log(0.2 / eps)
    assert float(stats.psi(ref, cur)) == pytest.approx(by_hand, rel=1e-12)
    assert math.isfinite(float(stats.psi([1, 0], [0, 1])))
    # zero-padded bins (both empty) change nothing
    assert float(stats.psi([50, 50, 0, 0], [40, 40, 20, 0])) == pytest.approx(by_hand, rel=1e-12)


def test_jensenshannon_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    for k in (2, 3, 10, 40):
        p = rng.integers(0, 50, size=(20, k)).astype(float)
        q = rng.integers(0, 50, size=(20, k)).astype(float)
        p[:, 0] = 0  # empty bins on one or both sides
        q[::2, -1] = 0
        p[:, 1] += 1
        q[:, 1] += 1
        np.testing.assert_allclose(stats.jensenshannon(p, q), scipy_js(p, q, axis=1), rtol=1e-12, atol=1e-15)
    assert float(stats.jensenshannon([1, 0], [0, 1])) == pytest.approx(math.sqrt(math.log(2)), rel=1e-12)
    with_eps = stats.jensenshannon([5, 0, 5], [0, 5, 5], epsilon=1e-3)
    manual = scipy_js(np.array([0.5, 0, 0.5]) + 1e-3, np.array([0, 0.5, 0.5]) + 1e-3)
    assert float(with_eps) == pytest.approx(manual, rel=1e-12)


def test_chi2_homogeneity_matches_chi2_contingency() -> None:
    rng = np.random.default_rng(11)
    for k in (2, 3, 7, 30):
        for _ in range(20):
            r = rng.integers(0, 200, size=k).astype(float)
            c = rng.integers(0, 80, size=k).astype(float)
            r[0] = c[0] = 0  # an empty column is left out
            if k > 2:
                r[1] = 0  # a column empty on one side only stays
            keep = (r + c) > 0
            if keep.sum() < 2 or r.sum() == 0 or c.sum() == 0:
                continue
            stat, p, dof, _ = ss.chi2_contingency(np.vstack([r[keep], c[keep]]), correction=False)
            ours = stats.chi2_homogeneity(r, c)
            assert float(ours[0]) == pytest.approx(stat, rel=1e-10)
            assert float(ours[1]) == dof
            assert float(ours[2]) == pytest.approx(p, rel=1e-8, abs=1e-300)


def test_chi2_homogeneity_is_vectorised_and_padded_rows_agree() -> None:
    rng = np.random.default_rng(12)
    rows = [rng.integers(1, 100, size=k).astype(float) for k in (3, 5, 9)]
    cols = [rng.integers(1, 100, size=k).astype(float) for k in (3, 5, 9)]
    padded_r = np.zeros((3, 9))
    padded_c = np.zeros((3, 9))
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        padded_r[i, : r.size], padded_c[i, : c.size] = r, c
    stat, dof, p = stats.chi2_homogeneity(padded_r, padded_c)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        ref = ss.chi2_contingency(np.vstack([r, c]), correction=False)
        assert stat[i] == pytest.approx(ref.statistic, rel=1e-10)
        assert dof[i] == ref.dof and p[i] == pytest.approx(ref.pvalue, rel=1e-8)


def test_chi2_goodness_of_fit_matches_scipy_chisquare() -> None:
    rng = np.random.default_rng(13)
    for k in (2, 5, 12):
        obs = rng.integers(0, 100, size=k).astype(float)
        exp_share = rng.dirichlet(np.ones(k))
        ref = ss.chisquare(obs, exp_share * obs.sum())
        stat, dof, p = stats.chi2_goodness_of_fit(obs, exp_share)
        assert float(stat) == pytest.approx(ref.statistic, rel=1e-10)
        assert float(dof) == k - 1
        assert float(p) == pytest.approx(ref.pvalue, rel=1e-8)
    stat, _, p = stats.chi2_goodness_of_fit([5, 5, 1], [0.5, 0.5, 0.0])
    assert math.isinf(float(stat)) and float(p) == 0.0


def test_binned_ks_is_the_exact_ks_of_data_on_one_bin_per_value() -> None:
    rng = np.random.default_rng(17)
    ref = rng.poisson(3.0, size=5000)
    cur = rng.poisson(3.3, size=800)
    values = np.arange(0, max(ref.max(), cur.max()) + 1)
    r = np.array([(ref == v).sum() for v in values], dtype=float)
    c = np.array([(cur == v).sum() for v in values], dtype=float)
    d, en = stats.ks_binned(r, c)
    exact = ss.ks_2samp(ref, cur)
    assert float(d) == pytest.approx(exact.statistic, abs=1e-12)
    assert float(en) == pytest.approx(5000 * 800 / 5800)
    # binning continuous data can only lower D
    x, y = rng.normal(size=3000), rng.normal(0.1, 1.0, size=3000)
    edges = np.quantile(x, np.linspace(0, 1, 11))[1:-1]
    hx = np.bincount(np.searchsorted(edges, x, side="right"), minlength=10)
    hy = np.bincount(np.searchsorted(edges, y, side="right"), minlength=10)
    assert float(stats.ks_binned(hx, hy)[0]) <= ss.ks_2samp(x, y).statistic + 1e-12


# --------------------------------------------------------------------------------------------------------
# raw samples against a profile
# --------------------------------------------------------------------------------------------------------


def test_wasserstein_1d_matches_scipy() -> None:
    rng = np.random.default_rng(19)
    for n, m in [(10, 13), (500, 2000), (3000, 3000)]:
        x, y = rng.normal(size=n), rng.gamma(2.0, size=m)
        assert stats.wasserstein_1d(x, y) == pytest.approx(ss.wasserstein_distance(x, y), rel=1e-10)
    assert stats.wasserstein_1d([0, 0, 1], [0, 1, 1]) == pytest.approx(
        ss.wasserstein_distance([0, 0, 1], [0, 1, 1])
    )


def test_wasserstein_to_quantiles_of_a_uniform_reference() -> None:
    """Quantiles of U(0, 1) at 0, 0.01, .., 1 define it exactly; scipy approximates U(0, 1) by a fine grid.
    Only the sample's shape inside each percent is linearised."""
    rng = np.random.default_rng(23)
    grid = (np.arange(1_000_000) + 0.5) / 1_000_000
    for sample in (rng.uniform(size=500), rng.normal(0.6, 0.2, size=2000), rng.uniform(-1, 3, size=100)):
        ours = stats.wasserstein_to_quantiles(np.sort(sample), PROBS, PROBS)
        assert ours == pytest.approx(ss.wasserstein_distance(sample, grid), abs=5e-4)
    # beyond the reference's range the distance is exact
    assert stats.wasserstein_to_quantiles(np.array([-2.0, 3.0]), PROBS, PROBS) == pytest.approx(
        ss.wasserstein_distance([-2.0, 3.0], grid), abs=1e-6
    )


def test_wasserstein_to_quantiles_is_unbiased_without_drift() -> None:
    rng = np.random.default_rng(24)
    ref = rng.normal(size=200_000)
    p = profile_numeric("x", ref)
    for n in (1000, 200_000):
        cur = rng.normal(size=n)
        ours = stats.wasserstein_to_quantiles(np.sort(cur), p.quantiles, PROBS)
        assert ours == pytest.approx(ss.wasserstein_distance(ref, cur), abs=0.003)
    constant = profile_numeric("c", np.full(100, 3.0))
    assert stats.wasserstein_to_quantiles(np.array([1.0, 3.0, 6.0]), constant.quantiles, PROBS) == 5 / 3


def test_quantile_cdf_left_and_right_limits_at_an_atom() -> None:
    q = np.r_[np.zeros(31), np.linspace(0.1, 1.0, 70)]  # an atom of 30% at 0
    cdf = stats.QuantileCdf(q, PROBS)
    assert float(cdf.left(0.0)) == 0.0
    assert float(cdf.right(0.0)) == pytest.approx(0.30)
    assert float(cdf.right(-1)) == 0.0 and float(cdf.left(2.0)) == 1.0
    assert float(cdf.right(0.05)) == pytest.approx(0.305)


def _profile_of(values: np.ndarray, bins: int = 10):  # type: ignore[no-untyped-def]
    return profile_numeric("x", values, bins=bins)


def _edge_cdf(p):  # type: ignore[no-untyped-def]
    counts = np.asarray(p.bin_counts, float)
    return np.asarray(p.bin_edges[1:-1]), np.cumsum(counts)[:-1] / counts.sum()


@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (0.25, 1.0), (0.0, 1.1**0.5), (0.05, 1.0)])
def test_ks_to_reference_tracks_the_two_sample_statistic(shift: float, scale: float) -> None:
    rng = np.random.default_rng(29)
    ref = rng.normal(size=200_000)
    cur = np.sort(rng.normal(shift, scale, size=50_000))
    p = _profile_of(ref)
    d = stats.ks_to_reference(cur, p.quantiles, PROBS, *_edge_cdf(p))
    exact = ss.ks_2samp(ref, cur).statistic
    # a supremum over a 1%-grid: never above the exact statistic (up to the reference's 1/n rounding) and
    # close below it
    assert d <= exact + 1e-4
    assert d >= exact - 0.006


def test_ks_to_reference_of_a_discrete_reference_is_not_biased() -> None:
    """Integer values: the quantiles tie at atoms; the statistic must not see drift where there is none."""
    rng = np.random.default_rng(31)
    ref = rng.poisson(40.0, size=200_000).astype(float)
    p = _profile_of(ref)
    for seed in range(5):
        cur = np.sort(np.random.default_rng(seed).poisson(40.0, size=100_000).astype(float))
        d = stats.ks_to_reference(cur, p.quantiles, PROBS, *_edge_cdf(p))
        assert d <= ss.ks_2samp(ref, cur).statistic + 1e-4
        assert d < 0.008  # the 5% critical value at en = 66,667 is 0.0053 / sqrt-scaled ~ 0.0053
    shifted = np.sort(rng.poisson(41.0, size=100_000).astype(float))
    d = stats.ks_to_reference(shifted, p.quantiles, PROBS, *_edge_cdf(p))
    assert d == pytest.approx(ss.ks_2samp(ref, shifted).statistic, abs=0.01)


def test_ks_to_reference_of_a_constant_reference() -> None:
    p = _profile_of(np.full(1000, 2.0))
    cur = np.sort(np.r_[np.full(90, 2.0), np.full(6, 1.0), np.full(4, 3.0)])
    assert stats.ks_to_reference(cur, p.quantiles, PROBS) == pytest.approx(0.06)
    assert stats.ks_to_reference(np.full(10, 2.0), p.quantiles, PROBS) == 0.0


def test_wasserstein_binned_closed_form() -> None:
    """U(0, 1) in ten equal bins vs everything in the last bin: W(U(0,1), U(0.9,1)) = 0.45."""
    edges = np.linspace(0, 1, 11)
    ref = np.full(10, 100.0)
    cur = np.r_[np.zeros(9), 100.0]
    assert stats.wasserstein_binned(ref, cur, edges) == pytest.approx(0.45, rel=1e-12)
    assert stats.wasserstein_binned(ref, cur, edges, PROBS, PROBS) == pytest.approx(0.45, rel=1e-12)
    assert stats.wasserstein_binned(ref, ref * 3, edges, PROBS, PROBS) == 0.0
    # a mass moved by one bin everywhere: W = 0.1
    assert stats.wasserstein_binned(np.r_[100.0, np.zeros(9)], np.r_[0.0, 100.0, np.zeros(8)], edges) == (
        pytest.approx(0.1, rel=1e-12)
    )


@pytest.mark.parametrize(
    ("shift", "scale", "rel_binned", "rel_raw"),
    [(0.25, 1.0, 0.04, 0.06), (0.5, 1.0, 0.05, 0.07), (0.0, 1.2, 0.3, 0.15), (0.0, 0.8, 0.1, 0.1)],
)
def test_wasserstein_approximations_against_the_unbinned_distance(
    shift: float, scale: float, rel_binned: float, rel_raw: float
) -> None:
    """Binned: shifts within a few percent, spread changes underestimated (mass moving past the outer
    edges stays in the outer bins). Raw values against the quantiles: a few percent high."""
    rng = np.random.default_rng(37)
    ref = rng.normal(size=200_000)
    cur = rng.normal(shift, scale, size=200_000)
    p = _profile_of(ref)
    hist = p.histogram(cur)
    binned = stats.wasserstein_binned(p.bin_counts, hist, p.bin_edges, p.quantiles, PROBS)
    uniform = stats.wasserstein_binned(p.bin_counts, hist, p.bin_edges)
    exact = ss.wasserstein_distance(ref, cur)
    assert binned == pytest.approx(exact, rel=rel_binned)
    # the reference's shape inside the bins beats a uniform spread, whose wide outer bins distort it
    assert abs(binned - exact) < abs(uniform - exact)
    raw = stats.wasserstein_to_quantiles(np.sort(cur), p.quantiles, PROBS)
    assert raw == pytest.approx(exact, rel=rel_raw)


# --------------------------------------------------------------------------------------------------------
# multiple testing
# --------------------------------------------------------------------------------------------------------


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(41)
    for m in (1, 2, 5, 20, 100):
        p = np.r_[rng.uniform(size=m // 2), rng.uniform(0, 0.01, size=m - m // 2)]
        np.testing.assert_allclose(
            stats.benjamini_hochberg(p), ss.false_discovery_control(p, method="bh"), rtol=1e-12
        )
    ties = np.array([0.01, 0.01, 0.04, 0.04, 0.5])
    np.testing.assert_allclose(stats.benjamini_hochberg(ties), ss.false_discovery_control(ties), rtol=1e-12)
    assert stats.benjamini_hochberg([]).size == 0


def test_bonferroni_and_textbook_bh_example() -> None:
    p = np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    np.testing.assert_allclose(stats.bonferroni(p), [0.05, 0.10, 0.15, 0.20, 0.25])
    np.testing.assert_allclose(stats.benjamini_hochberg(p), [0.05] * 5)  # m p_(i) / i == 0.05 for all
    assert stats.bonferroni([0.3, 0.5]).tolist() == [0.6, 1.0]
    np.testing.assert_allclose(stats.adjust_pvalues(p, "none"), p)
    with pytest.raises(ValueError):
        stats.adjust_pvalues(p, "holm")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# properties (seeded random cases: hypothesis is not among the project's locked dependencies)
# --------------------------------------------------------------------------------------------------------


def _random_counts(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(2, 31))
    sparse = rng.uniform() < 0.5  # many empty bins on either side
    r = rng.integers(0, 10_000, k) * (rng.uniform(size=k) < (0.6 if sparse else 1.0))
    c = rng.integers(0, 10_000, k) * (rng.uniform(size=k) < (0.6 if sparse else 1.0))
    return r.astype(float), c.astype(float)


def test_histogram_statistics_properties() -> None:
    rng = np.random.default_rng(101)
    for _ in range(300):
        r, c = _random_counts(rng)
        if r.sum() == 0 or c.sum() == 0:
            continue
        for f in (stats.psi, stats.jensenshannon):
            assert float(f(r, c)) >= 0
            assert float(f(r, c)) == pytest.approx(float(f(c, r)), rel=1e-9, abs=1e-12)  # symmetric
            assert float(f(r, r * 7)) == pytest.approx(0.0, abs=1e-12)  # same distribution
        assert float(stats.jensenshannon(r, c)) <= math.sqrt(math.log(2)) + 1e-12
        d, _ = stats.ks_binned(r, c)
        assert 0 <= float(d) <= 1 and float(d) == pytest.approx(float(stats.ks_binned(c, r)[0]))
        stat, _, p = stats.chi2_homogeneity(r, c)
        assert float(stat) >= 0 and 0 <= float(p) <= 1
        assert float(stats.chi2_homogeneity(r, r * 3)[0]) == pytest.approx(0.0, abs=1e-9)
        assert float(stats.chi2_homogeneity(r, c)[0]) == pytest.approx(float(stats.chi2_homogeneity(c, r)[0]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's own, on degenerate samples
def test_raw_sample_statistics_properties() -> None:
    rng = np.random.default_rng(102)
    for _ in range(200):
        x = np.round(
            rng.normal(size=int(rng.integers(1, 50))) * 10 ** rng.integers(0, 3), int(rng.integers(0, 3))
        )
        y = np.round(
            rng.normal(size=int(rng.integers(1, 50))) * 10 ** rng.integers(0, 3), int(rng.integers(0, 3))
        )
        w = stats.wasserstein_1d(x, y)
        assert w >= 0 and w == pytest.approx(stats.wasserstein_1d(y, x))
        assert w == pytest.approx(ss.wasserstein_distance(x, y), rel=1e-9, abs=1e-9)
        d, p = stats.ks_2samp(x, y)
        assert d == pytest.approx(ss.ks_2samp(x, y, method="asymp").statistic, abs=1e-12)
        assert 0 <= p <= 1
        assert stats.wasserstein_1d(x, x) == 0 and stats.ks_2samp(x, x)[0] == 0


def test_adjusted_pvalues_properties() -> None:
    rng = np.random.default_rng(103)
    for _ in range(200):
        arr = rng.uniform(size=int(rng.integers(1, 41))) ** rng.uniform(1, 6)
        if rng.uniform() < 0.3:
            arr[: arr.size // 2] = arr[0]  # ties
        bh, bonf = stats.benjamini_hochberg(arr), stats.bonferroni(arr)
        assert np.all(bh >= arr - 1e-15) and np.all(bh <= 1) and np.all(bonf >= bh - 1e-12)
        order = np.argsort(arr, kind="stable")
        assert np.all(np.diff(bh[order]) >= -1e-15)  # monotone in p
        np.testing.assert_allclose(bh, ss.false_discovery_control(arr), rtol=1e-12)
