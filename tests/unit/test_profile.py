"""Reference profiles (drift/profile.py): building, the binning rule, serialisation and strict loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlops_operator.drift.profile import (
    PROFILE_FORMAT_VERSION,
    QUANTILE_PROBS,
    CategoricalFeatureProfile,
    ProfileError,
    ReferenceProfile,
    bin_index,
    build_profile,
    category_key,
    load_profile,
    profile_categorical,
    profile_numeric,
)


def test_numeric_profile_uses_quantile_bins() -> None:
    values = np.arange(1000, dtype=float)
    p = profile_numeric("x", values, bins=10)
    assert p.count == 1000 and p.missing == 0
    assert p.bins == 10 and len(p.bin_edges) == 11
    assert p.bin_counts == [100] * 10
    assert p.min == 0 and p.max == 999 and p.mean == pytest.approx(499.5)
    assert p.std == pytest.approx(values.std())
    assert len(p.quantiles) == len(QUANTILE_PROBS) == 101
    assert p.quantiles[0] == 0 and p.quantiles[-1] == 999 and p.quantiles[50] == pytest.approx(499.5)


def test_numeric_profile_missing_values_and_few_distinct_values() -> None:
    p = profile_numeric("x", [0, 1, 2, 2, np.nan, 1, 2, None], bins=10)  # type: ignore[list-item]
    assert p.count == 6 and p.missing == 2
    assert p.bin_edges == [0.0, 0.5, 1.5, 2.0]  # one bin per distinct value
    assert p.bin_counts == [1, 2, 3]
    constant = profile_numeric("c", [3.0, 3.0, 3.0])
    assert constant.bin_edges == [3.0, 3.0] and constant.bin_counts == [3] and constant.std == 0


def test_binning_rule_puts_every_value_in_one_bin() -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    assert bin_index(edges, [-5, 0, 0.5, 1, 1.5, 2, 2.9, 3, 100]).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    p = profile_numeric("x", np.linspace(0, 1, 101))
    assert p.histogram([-1.0, 0.0, 0.5, 1.0, 2.0, float("nan")]).sum() == 5
    assert p.bin_frequencies().sum() == pytest.approx(1.0)


def test_categorical_profile_keeps_the_most_frequent_categories() -> None:
    values = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] + [None]
    p = profile_categorical("cat", values, max_categories=2)
    assert p.count == 11 and p.missing == 1
    assert p.counts == {"a": 5, "b": 3} and p.other_count == 3
    assert p.frequencies == {"a": 5 / 11, "b": 3 / 11}
    counts, other = p.histogram(["a", "b", "b", "z", None])
    assert counts.tolist() == [1, 2] and other == 1


def test_category_keys_are_stable_strings() -> None:
    assert category_key(True) == "true" and category_key(np.bool_(False)) == "false"
    assert category_key(1) == category_key(1.0) == category_key("1") == "1"
    assert category_key(1.5) == "1.5" and category_key(b"x") == "x"


def test_build_profile_types_order_and_target() -> None:
    columns = {
        "num": np.array([1.0, 2.0, 3.0, 4.0]),
        "int": np.array([1, 1, 2, 2]),
        "color": np.array(["r", "g", "r", "r"], dtype=object),
        "flag": np.array([True, False, True, True]),
        "y": np.array(["yes", "no", "yes", "no"], dtype=object),
    }
    p = build_profile(columns, target="y", dataset_digest="sha256:abc", types={"int": "categorical"})
    assert p.feature_names == ["num", "int", "color", "flag"]
    assert [f.type for f in p.features] == ["numeric", "categorical", "categorical", "categorical"]
    assert isinstance(p.feature("flag"), CategoricalFeatureProfile)
    assert p.feature("flag").counts == {"true": 3, "false": 1}  # type: ignore[union-attr]
    assert p.target is not None and p.target.type == "categorical"
    assert p.row_count == 4 and p.dataset_digest == "sha256:abc"
    with pytest.raises(KeyError):
        p.feature("nope")
    with pytest.raises(KeyError, match="missing_col"):
        build_profile(columns, features=["missing_col"])
    with pytest.raises(ValueError, match="different lengths"):
        build_profile({"a": [1.0, 2.0], "b": [1.0]})


def test_round_trip_and_format() -> None:
    p = build_profile(
        {"x": np.arange(50.0), "c": np.array(["a", "b"] * 25, dtype=object)}, dataset_digest="d"
    )
    text = p.to_json()
    doc = json.loads(text)
    assert doc["kind"] == "ReferenceProfile" and doc["version"] == PROFILE_FORMAT_VERSION == 1
    assert doc["rowCount"] == 50 and doc["datasetDigest"] == "d" and doc["target"] is None
    x = doc["features"][0]
    assert set(x) == {
        "name", "type", "count", "missing", "mean", "std", "min", "max", "quantiles", "binEdges", "binCounts",
    }  # fmt: skip
    c = doc["features"][1]
    assert set(c) == {"name", "type", "count", "missing", "counts", "frequencies", "otherCount"}
    assert load_profile(text) == p == load_profile(doc) == load_profile(text.encode())
    assert build_profile({"x": np.arange(50.0)}).to_json() == build_profile({"x": np.arange(50.0)}).to_json()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "must be a JSON object"),
        ('{"kind": "Other", "version": 1}', "not a reference profile"),
        ('{"kind": "ReferenceProfile", "version": 2}', "version 2 is not supported"),
        ('{"kind": "ReferenceProfile", "version": 1, "rowCount": 1}', "invalid reference profile"),
    ],
)
def test_load_rejects_bad_documents(document: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile(document)


def test_inconsistent_numbers_are_rejected() -> None:
    doc = build_profile({"x": np.arange(10.0)}).to_dict()
    doc["features"][0]["binCounts"][0] += 1
    with pytest.raises(ProfileError, match="binCounts must add up to count"):
        load_profile(doc)
    doc = build_profile({"c": np.array(["a", "b"], dtype=object)}).to_dict()
    doc["features"][0]["otherCount"] = 5
    with pytest.raises(ProfileError, match="otherCount"):
        load_profile(doc)
    assert isinstance(
        ReferenceProfile.model_validate(build_profile({"x": [1.0]}).to_dict()), ReferenceProfile
    )


def test_category_order_survives_serialisation() -> None:
    p = build_profile({"c": np.array(["b", "a", "a", "c", "c", "c"], dtype=object)})
    assert load_profile(p.to_json()).feature("c").categories == ["c", "a", "b"]  # type: ignore[union-attr]
