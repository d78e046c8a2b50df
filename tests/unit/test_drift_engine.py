"""The drift engine (drift/engine.py, drift/accumulate.py): method choice, thresholds, multiple testing,
decisions, edge cases, the counts the model server exports, and chunked accumulation."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from scipy import stats as ss
from scipy.spatial.distance import jensenshannon as scipy_js

from mlops_operator.api.v1alpha1.driftpolicy import DEFAULT_THRESHOLDS, DriftPolicySpec, Evaluation
from mlops_operator.api.v1alpha1.pod_contract import OTHER_CATEGORY
from mlops_operator.controllers.driftpolicy.evaluation import drift_config, to_evaluation
from mlops_operator.drift import stats
from mlops_operator.drift.accumulate import HistogramAccumulator, accumulate_counts, count_bins, lower_edges
from mlops_operator.drift.engine import (
    DriftConfig,
    DriftInputError,
    FeatureCounts,
    FeatureSetting,
    counts_from_samples,
    evaluate,
    evaluate_samples,
    resolve_method,
)
from mlops_operator.drift.profile import (
    NumericFeatureProfile,
    ReferenceProfile,
    build_profile,
    profile_categorical,
    profile_numeric,
)

RNG = np.random.default_rng(2024)


def _profile(n: int, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    return build_profile(
        {
            "x": rng.normal(size=n),
            "y": rng.exponential(size=n),
            "few": rng.integers(0, 3, n).astype(float),
            "color": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
        }
    )


SMALL = _profile(800)
LARGE = _profile(20_000)


# --------------------------------------------------------------------------------------------------------
# method choice and thresholds
# --------------------------------------------------------------------------------------------------------


def test_auto_picks_by_type_and_reference_size_as_evidently() -> None:
    def picked(profile: ReferenceProfile) -> dict[str, str]:
        return {f.name: resolve_method(f, "auto")[0] for f in profile.features}

    assert picked(SMALL) == {"x": "ks", "y": "ks", "few": "chi2", "color": "chi2"}
    assert picked(LARGE) == {
        "x": "wasserstein",
        "y": "wasserstein",
        "few": "jensenshannon",
        "color": "jensenshannon",
    }
    # the limit is on reference rows, missing ones included (Evidently: reference_data.shape[0] <= 1000)
    at_limit = profile_numeric("x", np.r_[RNG.normal(size=990), [np.nan] * 10])
    over = profile_numeric("x", np.r_[RNG.normal(size=990), [np.nan] * 11])
    assert resolve_method(at_limit, "auto")[0] == "ks" and resolve_method(over, "auto")[0] == "wasserstein"
    assert resolve_method(over, "auto", auto_sample_limit=5000)[0] == "ks"
    # constant and 5-valued numeric features are compared like categories; 6 values are numeric
    assert resolve_method(profile_numeric("c", np.full(50, 1.0)), "auto")[0] == "chi2"
    assert resolve_method(profile_numeric("f", RNG.integers(0, 5, 5000) * 1.0), "auto")[0] == "jensenshannon"
    assert resolve_method(profile_numeric("s", RNG.integers(0, 6, 5000) * 1.0), "auto")[0] == "wasserstein"
    # ordered-only methods for a categorical feature
    color = SMALL.feature("color")
    assert (
        resolve_method(color, "ks")[0] == "chi2"
        and resolve_method(color, "wasserstein")[0] == "jensenshannon"
    )
    assert resolve_method(color, "psi") == ("psi", None)


def test_auto_in_an_evaluation_reports_the_resolved_method_and_default_threshold() -> None:
    live = {"x": RNG.normal(size=600), "y": RNG.exponential(size=600), "few": RNG.integers(0, 3, 600) * 1.0}
    live["color"] = RNG.choice(["red", "green", "blue"], 600)
    for profile, expected in (
        (SMALL, ["ks", "ks", "chi2", "chi2"]),
        (LARGE, ["wasserstein"] * 2 + ["jensenshannon"] * 2),
    ):
        result = evaluate_samples(profile, live)
        assert [f.method for f in result.features] == expected
        assert [f.threshold for f in result.features] == [DEFAULT_THRESHOLDS[m] for m in expected]


def test_config_from_spec_follows_the_policy_thresholds() -> None:
    spec = DriftPolicySpec.model_validate(
        {
            "targetRef": {"name": "m"},
            "method": "ks",
            "threshold": 0.01,
            "driftShare": 0.25,
            "minSamples": 1000,
            "overrides": [
                {"feature": "a", "method": "psi", "threshold": 0.3},
                {"feature": "b", "method": "chi2"},
                {"feature": "c", "method": "wasserstein"},
                {"feature": "d", "threshold": 0.2},
            ],
        }
    )
    config = drift_config(spec, correction="bonferroni")
    assert config.drift_share == 0.25 and config.min_samples == 1000 and config.correction == "bonferroni"
    for feature, method in [("a", "psi"), ("b", "chi2"), ("d", "ks"), ("e", "ks")]:
        assert config.method_for(feature) == spec.method_for(feature)
        assert config.threshold_for(feature, method) == spec.threshold_for(feature, method)
    # a ks p-value threshold is not handed to a feature overridden to a distance
    assert config.method_for("c") == "wasserstein" and config.threshold_for("c", "wasserstein") == 0.1
    assert drift_config(DriftPolicySpec.model_validate({"targetRef": {"name": "m"}})).method == "auto"
    with pytest.raises(ValueError, match="p-value"):
        DriftConfig(method="ks", threshold=2.0)
    with pytest.raises(ValueError, match="correction"):
        DriftConfig(correction="holm")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# counts vs raw values, and scipy on the engine's own inputs
# --------------------------------------------------------------------------------------------------------


def test_counts_and_raw_values_agree_on_the_binned_methods() -> None:
    live: dict[str, Any] = {
        "x": RNG.normal(0.3, 1.0, 3000),
        "y": RNG.exponential(1.2, 3000),
        "few": RNG.integers(0, 4, 3000) * 1.0,  # 3.0 is unseen: lands in the last bin
        "color": RNG.choice(["red", "green", "blue", "purple"], 3000),
    }
    counts = accumulate_counts(SMALL, [live])
    for method in ("psi", "jensenshannon", "chi2"):
        config = DriftConfig(method=method)  # type: ignore[arg-type]
        a, b = evaluate(SMALL, counts, config), evaluate_samples(SMALL, live, config)
        for fa, fb in zip(a.features, b.features, strict=True):
            assert fa.score == pytest.approx(fb.score, rel=1e-12)
            assert (fa.raw_p_value is None) == (fb.raw_p_value is None) == (method != "chi2")
            if fa.raw_p_value is not None:
                assert fa.raw_p_value == pytest.approx(fb.raw_p_value, rel=1e-9)


def test_engine_scores_equal_scipy_on_the_same_histograms() -> None:
    live = {"x": RNG.normal(0.1, 1.1, 5000), "color": RNG.choice(["red", "green", "blue", "teal"], 5000)}
    counts = accumulate_counts(SMALL, [live], features=["x", "color"])
    x = SMALL.feature("x")
    assert isinstance(x, NumericFeatureProfile)
    ref_x, cur_x = np.asarray(x.bin_counts, float), np.asarray(counts["x"].bins, float)
    color = SMALL.feature("color")
    ref_c = np.r_[list(color.counts.values()), color.other_count]  # type: ignore[union-attr]
    cur_c = np.r_[
        [counts["color"].categories[c] for c in color.counts], counts["color"].categories[OTHER_CATEGORY]
    ]  # type: ignore[union-attr]
    features = ("x", "color")

    js = evaluate(SMALL, counts, DriftConfig(method="jensenshannon", features=features))
    assert js.feature("x").score == pytest.approx(scipy_js(ref_x, cur_x), rel=1e-12)
    assert js.feature("color").score == pytest.approx(scipy_js(ref_c, cur_c), rel=1e-12)

    chi = evaluate(SMALL, counts, DriftConfig(method="chi2", features=features, correction="none"))
    keep = (ref_c + cur_c) > 0
    expected = ss.chi2_contingency(np.vstack([ref_c[keep], cur_c[keep]]), correction=False)
    assert chi.feature("color").score == pytest.approx(expected.statistic, rel=1e-10)
    assert chi.feature("color").raw_p_value == pytest.approx(expected.pvalue, rel=1e-8, abs=1e-300)

    ks = evaluate(SMALL, counts, DriftConfig(method="ks", features=("x",)))
    # binned KS == scipy's KS on the values replaced by their bin index
    ref_idx = np.repeat(np.arange(ref_x.size), ref_x.astype(int))
    cur_idx = np.repeat(np.arange(cur_x.size), cur_x.astype(int))
    scipy_ks = ss.ks_2samp(ref_idx, cur_idx, method="asymp")
    assert ks.feature("x").score == pytest.approx(scipy_ks.statistic, abs=1e-12)
    assert ks.feature("x").raw_p_value == pytest.approx(scipy_ks.pvalue, abs=2e-3)

    w = evaluate(SMALL, counts, DriftConfig(method="wasserstein", features=("x",)))
    by_hand = stats.wasserstein_binned(ref_x, cur_x, x.bin_edges, x.quantiles, np.linspace(0, 1, 101)) / x.std
    assert w.feature("x").score == pytest.approx(by_hand, rel=1e-9)


def test_raw_ks_and_wasserstein_track_scipy_two_sample_values() -> None:
    rng = np.random.default_rng(8)
    ref = rng.normal(2.0, 3.0, size=100_000)
    profile = build_profile({"x": ref})
    cur = rng.normal(2.45, 3.0, size=20_000)  # a 0.15-sigma shift
    result = evaluate_samples(profile, {"x": cur}, DriftConfig(method="ks"))
    exact = ss.ks_2samp(ref, cur)
    assert result.features[0].score == pytest.approx(exact.statistic, abs=0.006)
    assert result.features[0].score <= exact.statistic + 1e-4
    w = evaluate_samples(profile, {"x": cur}, DriftConfig(method="wasserstein")).features[0]
    assert w.score == pytest.approx(ss.wasserstein_distance(ref, cur) / ref.std(), rel=0.06)
    assert w.drifted and w.score > 0.1


# --------------------------------------------------------------------------------------------------------
# multiple testing and decisions
# --------------------------------------------------------------------------------------------------------


def _ks_counts(
    profile: ReferenceProfile, shifts: dict[str, float], n: int, seed: int
) -> dict[str, FeatureCounts]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shift in shifts.items():
        feature = profile.feature(name)
        assert isinstance(feature, NumericFeatureProfile)
        out[name] = FeatureCounts(bins=feature.histogram(rng.normal(shift, 1.0, n)))
    return out


def test_corrections_adjust_the_pvalues_and_decide_on_them() -> None:
    rng = np.random.default_rng(1)
    names = [f"f{i}" for i in range(8)]
    profile = build_profile({n: rng.normal(size=5000) for n in names})
    shifts = dict(zip(names, [0.0, 0.0, 0.05, 0.08, 0.1, 0.0, 0.12, 0.3], strict=True))
    counts = _ks_counts(profile, shifts, 2000, seed=3)
    raw = None
    for correction in ("none", "bh", "bonferroni"):
        result = evaluate(profile, counts, DriftConfig(method="ks", correction=correction))  # type: ignore[arg-type]
        p = np.array([f.raw_p_value for f in result.features], dtype=float)
        if raw is None:
            raw = p
        np.testing.assert_array_equal(p, raw)  # the tests themselves do not depend on the correction
        expected = {"none": p, "bh": ss.false_discovery_control(p), "bonferroni": np.minimum(p * p.size, 1)}[
            correction
        ]
        np.testing.assert_allclose([f.p_value for f in result.features], expected, rtol=1e-12)
        assert [f.drifted for f in result.features] == list(expected < 0.05)
    # bonferroni flags no more than bh, which flags no more than none
    flags = {
        c: sum(f.drifted for f in evaluate(profile, counts, DriftConfig(method="ks", correction=c)).features)  # type: ignore[arg-type]
        for c in ("none", "bh", "bonferroni")
    }
    assert flags["none"] >= flags["bh"] >= flags["bonferroni"] >= 1


def test_distances_are_not_part_of_the_tested_family() -> None:
    rng = np.random.default_rng(2)
    profile = build_profile({"a": rng.normal(size=5000), "b": rng.normal(size=5000)})
    counts = _ks_counts(profile, {"a": 0.2, "b": 0.0}, 3000, seed=4)
    config = DriftConfig(method="ks", overrides={"b": FeatureSetting(method="psi")}, correction="bonferroni")
    result = evaluate(profile, counts, config)
    a = result.feature("a")
    assert a.p_value == a.raw_p_value  # a family of one
    assert result.feature("b").p_value is None and result.feature("b").method == "psi"


def test_drift_share_and_min_samples_decide_the_model() -> None:
    rng = np.random.default_rng(5)
    names = ["a", "b", "c", "d"]
    profile = build_profile({n: rng.normal(size=5000) for n in names})
    counts = _ks_counts(profile, {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0}, 2000, seed=6)
    result = evaluate(profile, counts, DriftConfig(method="ks", drift_share=0.5))
    assert result.drifted_features == ["a", "b"] and result.drifted_share == 0.5 and result.drifted
    assert not evaluate(profile, counts, DriftConfig(method="ks", drift_share=0.75)).drifted
    assert result.samples == 2000 and not result.insufficient
    assert "2/4 features drifted" in result.message and "a (ks p=" in result.message
    few = evaluate(profile, counts, DriftConfig(method="ks", min_samples=2001))
    assert few.insufficient and not few.drifted and few.message == "2000 samples < minSamples 2001"
    assert few.drifted_features == ["a", "b"]  # still reported per feature


def test_status_models_from_a_result() -> None:
    result = evaluate_samples(SMALL, {"x": RNG.normal(3, 1, 700), "color": ["red"] * 700})
    evaluation = to_evaluation(result, time=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), model_version=3)
    again = Evaluation.model_validate(evaluation.to_dict())
    assert again.model_version == 3 and again.samples == 700 and again.drifted is result.drifted
    scores = {s.feature: s for s in again.feature_scores}
    assert scores["x"].method == "ks" and scores["x"].drifted and scores["x"].p_value is not None
    assert scores["color"].method == "chi2" and scores["color"].drifted
    assert not scores["y"].drifted  # no live values: reported, not drifted


# --------------------------------------------------------------------------------------------------------
# edge cases
# --------------------------------------------------------------------------------------------------------


def test_unseen_categories_go_to_the_other_bucket() -> None:
    profile = build_profile({"c": ["a"] * 50 + ["b"] * 50}, features=["c"])
    counts = {"c": FeatureCounts(categories={"a": 50, "b": 30, OTHER_CATEGORY: 5, "zzz": 15})}
    result = evaluate(profile, counts, DriftConfig(method="psi"))
    by_hand = stats.psi([50, 50, 0], [50, 30, 20])
    assert result.features[0].score == pytest.approx(float(by_hand))
    assert result.features[0].drifted  # 20% of values in a bucket the reference never saw
    # a plain mapping is the same
    assert evaluate(profile, {"c": {"a": 50, "b": 30, "new": 20}}, DriftConfig(method="psi")).features[
        0
    ].score == (pytest.approx(float(by_hand)))
    # a reference with its own "other" share: rare categories beyond maxCategories
    capped = ReferenceProfile(
        row_count=100, features=[profile_categorical("c", list("aabbc" * 20), max_categories=2)]
    )
    hist = evaluate_samples(capped, {"c": list("aabbd" * 20)}, DriftConfig(method="chi2")).features[0]
    assert hist.score == pytest.approx(0.0) and not hist.drifted  # c and d are both "other"


def test_missing_values_are_counted_and_left_out() -> None:
    live = np.r_[RNG.normal(size=900), [np.nan] * 300]
    result = evaluate_samples(
        SMALL, {"x": live, "color": ["red", None, float("nan")] * 300}, DriftConfig(method="ks")
    )
    x, color = result.feature("x"), result.feature("color")
    assert (x.samples, x.missing) == (900, 300) and not x.drifted
    assert (color.samples, color.missing) == (300, 600)
    assert result.samples == 1200  # rows seen, missing included
    # all missing: not evaluated, not in driftedShare
    only_missing = evaluate(SMALL, {"x": FeatureCounts(bins=[0] * 10, missing=50)}, DriftConfig(method="ks"))
    assert not only_missing.feature("x").evaluated and only_missing.feature("x").note == "no live values"
    assert only_missing.drifted_share == 0.0 and only_missing.message == "50 samples < minSamples 500"


def test_zero_variance_reference() -> None:
    profile = build_profile({"k": np.full(2000, 7.0)})
    # counts: one bin, nothing can be seen (and the result says so)
    result = evaluate(profile, {"k": [500]}, DriftConfig(method="auto"))
    assert result.features[0].method == "jensenshannon" and result.features[0].score == 0.0
    assert "single value" in (result.features[0].note or "")
    # raw values: equal to the value vs not
    live = np.r_[np.full(450, 7.0), np.full(50, 8.0)]
    js = evaluate_samples(profile, {"k": live}).features[0]
    assert js.method == "jensenshannon" and js.score == pytest.approx(scipy_js([1, 0], [0.9, 0.1]))
    assert js.drifted
    w = evaluate_samples(profile, {"k": live}, DriftConfig(method="wasserstein")).features[0]
    assert w.score == pytest.approx(0.1 / 1e-3)  # mean |x - 7| over Evidently's floor of the std
    ks = evaluate_samples(profile, {"k": live}, DriftConfig(method="ks")).features[0]
    assert ks.score == pytest.approx(0.1) and ks.drifted
    same = evaluate_samples(profile, {"k": np.full(500, 7.0)}, DriftConfig(method="ks")).features[0]
    assert same.score == 0.0 and not same.drifted


def test_empty_bins_and_features_without_data() -> None:
    counts: dict[str, Any] = {"x": [0, 0, 0, 0, 0, 0, 0, 0, 0, 600], "color": {"red": 600}}
    result = evaluate(SMALL, counts, DriftConfig(method="psi", features=("x", "color", "y", "ghost")))
    x = result.feature("x")
    assert np.isfinite(x.score) and x.drifted
    assert not result.feature("y").evaluated and result.feature("y").note == "no live counts"
    assert (
        not result.feature("ghost").evaluated
        and result.feature("ghost").note == "not in the reference profile"
    )
    assert result.drifted_share == 1.0  # 2 of 2 evaluated features
    assert evaluate(SMALL, {}, DriftConfig(min_samples=0)).message == "no feature could be evaluated"


def test_counts_that_do_not_fit_the_profile_are_rejected() -> None:
    with pytest.raises(DriftInputError, match="10"):
        evaluate(SMALL, {"x": [1, 2, 3]})
    with pytest.raises(DriftInputError, match="out of range"):
        evaluate(SMALL, {"x": FeatureCounts(bins={12: 5.0})})
    with pytest.raises(DriftInputError, match="non-negative"):
        evaluate(SMALL, {"x": [-1] + [1] * 9})
    with pytest.raises(DriftInputError, match="categorical"):
        evaluate(SMALL, {"color": [1, 2, 3, 4]})
    with pytest.raises(DriftInputError, match="numeric"):
        evaluate_samples(SMALL, {"x": ["a", "b"]})


# --------------------------------------------------------------------------------------------------------
# the model server's counters and chunked accumulation
# --------------------------------------------------------------------------------------------------------


def test_counters_of_the_model_server_evaluate_like_the_raw_values() -> None:
    from mlops_operator.runtime.serving.histograms import FeatureCounters
    from mlops_operator.runtime.serving.payload import parse_invocations
    from mlops_operator.runtime.serving.schema import Column, InputSchema

    schema = InputSchema(columns=(Column("x"), Column("y"), Column("few"), Column("color", "string")))
    live = {
        "x": RNG.normal(0.5, 1.0, 900),
        "y": RNG.exponential(size=900),
        "few": RNG.integers(0, 3, 900) * 1.0,
        "color": RNG.choice(["red", "green", "blue", "pink"], 900),
    }
    records = [
        {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in live.items()} for i in range(900)
    ]
    # two replicas, each serving part of the traffic
    replicas = [FeatureCounters(SMALL, schema.columns) for _ in range(2)]
    for start in range(0, 900, 32):
        replicas[(start // 32) % 2].observe(
            parse_invocations({"dataframe_records": records[start : start + 32]}, schema)
        )
    counts = counts_from_samples(
        [s for r in replicas for s in r.bin_samples()],
        [s for r in replicas for s in r.category_samples()],
        [s for r in replicas for s in r.missing_samples()],
    )
    for method in ("auto", "psi", "jensenshannon", "chi2"):
        config = DriftConfig(method=method)  # type: ignore[arg-type]
        served, raw = evaluate(SMALL, counts, config), evaluate_samples(SMALL, live, config)
        for a, b in zip(served.features, raw.features, strict=True):
            if a.method in ("psi", "jensenshannon", "chi2"):
                assert a.score == pytest.approx(b.score, rel=1e-12)
        assert served.drifted_features == raw.drifted_features
    assert evaluate(SMALL, counts).samples == 900


def test_float32_binning_is_exact_at_the_edges() -> None:
    edges = np.array([-1.0, 0.1, 0.2, 1 / 3, 1e-8, 1e30])
    inner = lower_edges(np.sort(edges), np.float32)
    values32 = np.concatenate(
        [
            np.sort(edges).astype(np.float32),
            np.nextafter(np.sort(edges).astype(np.float32), np.float32(-np.inf)),
            np.nextafter(np.sort(edges).astype(np.float32), np.float32(np.inf)),
            np.array([np.nan, np.inf, -np.inf, 0.0], dtype=np.float32),
        ]
    )
    full_edges = np.r_[-5.0, np.sort(edges), 1e31]
    profile = NumericFeatureProfile(
        name="x",
        count=7,
        mean=0,
        std=1,
        min=-5,
        max=1e31,
        quantiles=[0.0] * 101,
        bin_edges=full_edges.tolist(),
        bin_counts=[1] * 6 + [1],
    )
    counts, nan = count_bins(values32, inner, profile.bins)
    # as on the model server, +-inf is counted in the outer bins (profile.histogram drops it)
    expected = profile.histogram(values32.astype(np.float64)) + np.r_[1, [0] * 5, 1]
    assert counts.tolist() == expected.tolist() and nan == 1
    # the sorting path (many edges) gives the same
    many = np.sort(RNG.normal(size=80))
    wide = NumericFeatureProfile(
        name="w",
        count=81,
        mean=0,
        std=1,
        min=float(many[0]) - 1,
        max=float(many[-1]) + 1,
        quantiles=[0.0] * 101,
        bin_edges=[float(many[0]) - 1, *many.tolist(), float(many[-1]) + 1],
        bin_counts=[1] * 81,
    )
    x32 = RNG.normal(size=5000).astype(np.float32)
    x32[::97] = np.nan
    got, nan = count_bins(x32, lower_edges(wide.bin_edges[1:-1], np.float32), wide.bins)
    assert got.tolist() == wide.histogram(x32.astype(np.float64)).tolist() and nan == np.isnan(x32).sum()


def test_accumulator_chunks_add_up_to_one_pass() -> None:
    rows = 10_000
    data = {
        "x": RNG.normal(size=rows),
        "y": RNG.exponential(size=rows),
        "few": RNG.integers(0, 3, rows) * 1.0,
        "color": RNG.choice(["red", "green", "blue", None], rows),  # type: ignore[list-item]
    }
    data["x"][::50] = np.nan
    whole = accumulate_counts(LARGE, [data], dtype=np.float64)
    acc = HistogramAccumulator(LARGE)
    for start in range(0, rows, 777):
        acc.update({k: v[start : start + 777] for k, v in data.items()})
    chunked = acc.counts()
    assert acc.rows == rows
    for name in ("x", "y", "few"):
        assert np.asarray(chunked[name].bins).tolist() == np.asarray(whole[name].bins).tolist()
        feature = LARGE.feature(name)
        assert isinstance(feature, NumericFeatureProfile)
        assert np.asarray(whole[name].bins).tolist() == feature.histogram(data[name]).tolist()
    assert chunked["x"].missing == 200 and chunked["color"].missing == whole["color"].missing > 0
    assert chunked["color"].categories == whole["color"].categories
    # a 2-D float32 matrix in another column order
    numeric = ["y", "x", "few"]
    matrix = np.column_stack([data[c] for c in numeric]).astype(np.float32)
    acc2 = HistogramAccumulator(LARGE, features=["x", "y", "few"], columns=numeric)
    for start in range(0, rows, 4096):
        acc2.update(matrix[start : start + 4096])
    for name in numeric:
        assert np.asarray(acc2.counts()[name].bins).tolist() == np.asarray(whole[name].bins).tolist()


def test_categorical_counting_keeps_booleans_apart_from_numbers() -> None:
    profile = build_profile(
        {"b": np.array([True, False, True, 1, 0], dtype=object)}, types={"b": "categorical"}
    )
    assert set(profile.feature("b").counts) == {"true", "false", "1", "0"}  # type: ignore[union-attr]
    counts = accumulate_counts(profile, [{"b": np.array([True, 1, 1.0, "1", False], dtype=object)}])
    assert counts["b"].categories == {"true": 1, "false": 1, "1": 3, "0": 0, OTHER_CATEGORY: 0}


def test_the_engine_imports_neither_scipy_nor_kopf() -> None:
    """scipy is only the tests' and benchmarks' reference; the controller image must not need it."""
    import subprocess
    import sys

    code = (
        "import sys, mlops_operator.drift, mlops_operator.drift.engine, mlops_operator.drift.accumulate; "
        "bad = [m for m in ('scipy', 'kopf') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
