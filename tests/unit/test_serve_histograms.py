"""Per-feature counters of the model server on the reference profile's bins, and prediction counters."""

from __future__ import annotations

import numpy as np

from mlops_operator.api.v1alpha1.pod_contract import OTHER_CATEGORY
from mlops_operator.drift.profile import NumericFeatureProfile, build_profile
from mlops_operator.runtime.serving.histograms import (
    FALLBACK_VALUE_EDGES,
    FeatureCounters,
    PredictionCounters,
)
from mlops_operator.runtime.serving.payload import parse_invocations
from mlops_operator.runtime.serving.schema import Column, InputSchema

RNG = np.random.default_rng(7)
TRAIN = {
    "x": RNG.normal(size=500),
    "y": RNG.exponential(size=500) * 10,
    "few": RNG.integers(0, 3, 500).astype(np.float64),  # one bin per value
    "color": RNG.choice(["red", "green", "blue"], 500),
    "label": RNG.integers(0, 3, 500),
}
PROFILE = build_profile(TRAIN, features=["x", "y", "few", "color"], target="label", target_type="categorical")


def _bins(counters: FeatureCounters) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for feature, b, count in counters.bin_samples():
        out.setdefault(feature, []).append(count)
        assert int(b) == len(out[feature]) - 1
    return out


def test_numeric_counts_equal_the_profile_histogram() -> None:
    schema = InputSchema(columns=(Column("x"), Column("y"), Column("few"), Column("color", "string")))
    counters = FeatureCounters(PROFILE, schema.columns)
    live = {
        "x": RNG.normal(size=300) * 3,
        "y": RNG.normal(size=300) * 50,
        "few": RNG.integers(-1, 5, 300) * 1.0,
    }
    # inner edges exactly, and values outside the reference range
    x_profile = PROFILE.feature("x")
    assert isinstance(x_profile, NumericFeatureProfile)
    live["x"][:5] = x_profile.bin_edges[:5]
    records = [
        {"x": float(live["x"][i]), "y": float(live["y"][i]), "few": float(live["few"][i]), "color": "red"}
        for i in range(300)
    ]
    start, sizes = 0, [1, 7, 3, 40, 2, 4, 5]  # both the small-batch (bisect) and the numpy path
    while start < 300:
        size = sizes[start % len(sizes)]
        counters.observe(parse_invocations({"dataframe_records": records[start : start + size]}, schema))
        start += size
    bins = _bins(counters)
    for name in ("x", "y", "few"):
        profile = PROFILE.feature(name)
        assert isinstance(profile, NumericFeatureProfile)
        assert bins[name] == profile.histogram(live[name]).tolist(), name
        assert sum(bins[name]) == 300


def test_matrix_and_column_paths_agree() -> None:
    profile = build_profile({k: TRAIN[k] for k in ("x", "y", "few")})
    doubles = InputSchema(columns=(Column("few"), Column("x"), Column("y")))  # another order than the profile
    mixed = InputSchema(columns=(Column("few"), Column("x"), Column("y", "float")))
    rows = RNG.normal(size=(200, 3)) * 5
    body = {"dataframe_split": {"columns": ["few", "x", "y"], "data": rows.tolist()}}
    a, b = FeatureCounters(profile, doubles.columns), FeatureCounters(profile, mixed.columns)
    batch_a, batch_b = parse_invocations(body, doubles), parse_invocations(body, mixed)
    assert batch_a.matrix is not None and batch_b.matrix is None
    a.observe(batch_a)
    b.observe(batch_b)
    for row in rows[:10].tolist():  # one row at a time: the small-batch path, both layouts
        one = {"instances": [row]}
        a.observe(
            parse_invocations({"dataframe_split": {"columns": ["few", "x", "y"], "data": [row]}}, doubles)
        )
        b.observe(parse_invocations(one, mixed))
    bins_a, bins_b = _bins(a), _bins(b)
    assert bins_a["x"] == bins_b["x"] and bins_a["few"] == bins_b["few"]
    assert sum(bins_b["y"]) == 210


def test_large_batches_use_searchsorted_with_the_same_result() -> None:
    schema = InputSchema(columns=(Column("x"), Column("y")))
    profile = build_profile({"x": TRAIN["x"], "y": TRAIN["y"]})
    counters = FeatureCounters(profile, schema.columns)
    rows = RNG.normal(size=(20_000, 2)) * 4
    counters.observe(parse_invocations({"instances": rows.tolist()}, schema))
    bins = _bins(counters)
    for j, name in enumerate(("x", "y")):
        feature = profile.feature(name)
        assert isinstance(feature, NumericFeatureProfile)
        assert bins[name] == feature.histogram(rows[:, j]).tolist()


def test_categories_other_and_missing() -> None:
    schema = InputSchema(columns=(Column("x", required=False), Column("color", "string", required=False)))
    profile = build_profile({"x": TRAIN["x"], "color": TRAIN["color"]})
    counters = FeatureCounters(profile, schema.columns)
    records = [
        {"x": 0.1, "color": "red"},
        {"color": "purple"},
        {"x": None, "color": None},
        {"x": 2.0, "color": "blue"},
    ]
    counters.observe(parse_invocations({"dataframe_records": records}, schema))
    categories = {(f, c): n for f, c, n in counters.category_samples()}
    assert categories[("color", "red")] == 1 and categories[("color", "blue")] == 1
    assert categories[("color", "green")] == 0 and categories[("color", OTHER_CATEGORY)] == 1
    assert dict(counters.missing_samples()) == {"x": 2, "color": 1}
    assert sum(_bins(counters)["x"]) == 2


def test_features_absent_from_the_signature_are_skipped() -> None:
    counters = FeatureCounters(PROFILE, (Column("x"), Column("few", "string")))
    assert counters.features == ["x"]
    assert set(counters.skipped) == {"y", "few", "color"}


def test_prediction_counters() -> None:
    classes = PredictionCounters.for_model(PROFILE, np.array([0, 1]))
    assert classes.mode == "classes"
    classes.observe(np.array([0, 1, 1, 2]))
    classes.observe(np.arange(200) % 3)  # the np.unique path
    assert dict(classes.samples()) == {"0": 68, "1": 69, "2": 67}
    labels = PredictionCounters("classes")
    labels.observe(np.array(["setosa", "virginica", "setosa"], dtype=object))
    labels.observe(np.arange(200))  # more labels than MAX_CLASS_LABELS
    counts = dict(labels.samples())
    assert counts["setosa"] == 2 and counts[OTHER_CATEGORY] == 200 - 98
    assert sum(counts.values()) == 203

    target = build_profile({"v": TRAIN["y"]}, target="v", features=[]).target
    assert isinstance(target, NumericFeatureProfile)
    profile = build_profile({"v": TRAIN["y"]}, target="v", features=[])
    values = RNG.exponential(size=100) * 10
    bins = PredictionCounters.for_model(profile, values)
    assert bins.mode == "bins"
    bins.observe(values)
    assert [n for _, n in bins.samples()] == target.histogram(values).tolist()

    fallback = PredictionCounters.for_model(None, np.array([0.5]))
    fallback.observe(np.array([-5e6, -0.5, 0.0, 0.005, 3.0, 2e6, np.nan]))
    counts = dict(fallback.samples())
    assert len(counts) == len(FALLBACK_VALUE_EDGES) + 1
    assert counts["<-1e+06"] == 1 and counts["[-1,-0.1)"] == 1 and counts["[0,0.01)"] == 2
    assert counts["[1,10)"] == 1 and counts[">=1e+06"] == 1 and sum(counts.values()) == 6
