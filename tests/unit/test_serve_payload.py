"""Request parsing and validation of the model server (OIP v2 and MLflow /invocations), pure functions."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from mlops_operator.runtime.serving.errors import RequestError
from mlops_operator.runtime.serving.payload import Batch, column_array, flatten, parse_invocations, parse_oip
from mlops_operator.runtime.serving.schema import Column, InputSchema, Tensor

IRIS = InputSchema(columns=tuple(Column(n, "double") for n in ("a", "b", "c", "d")))
MIXED = InputSchema(
    columns=(
        Column("x", "double"),
        Column("n", "long"),
        Column("color", "string"),
        Column("flag", "boolean"),
        Column("f", "float"),
        Column("i", "integer"),
    )
)
OPTIONAL = InputSchema(
    columns=(
        Column("x", "double"),
        Column("y", "double", required=False),
        Column("s", "string", required=False),
    )
)
TENSOR = InputSchema(tensors=(Tensor(None, np.dtype("float32"), (-1, 3)),))
NAMED_TENSORS = InputSchema(
    tensors=(Tensor("a", np.dtype("float32"), (-1, 2)), Tensor("b", np.dtype("int64"), (-1,)))
)

ROW = {"x": 1.5, "n": 3, "color": "red", "flag": True, "f": 0.5, "i": 7}


def _error(fn: Any, *args: Any) -> str:
    with pytest.raises(RequestError) as info:
        fn(*args)
    assert info.value.status == 400
    return info.value.message


def _same(a: Batch, b: Batch) -> None:
    assert a.rows == b.rows
    assert list(a.columns) == list(b.columns)
    for key in a.columns:
        assert a.columns[key].dtype == b.columns[key].dtype, key
        assert a.columns[key].tolist() == b.columns[key].tolist(), key


# --- the MLflow formats ------------------------------------------------------------------------------


def test_all_invocation_formats_give_the_same_batch() -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6, 3, 5.5, 2]]
    split = parse_invocations({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": rows}}, IRIS)
    records = parse_invocations(
        {"dataframe_records": [dict(zip("abcd", r, strict=True)) for r in rows]}, IRIS
    )
    instances = parse_invocations({"instances": rows}, IRIS)
    inputs = parse_invocations({"inputs": {k: [r[i] for r in rows] for i, k in enumerate("abcd")}}, IRIS)
    reordered = parse_invocations(
        {"dataframe_split": {"columns": ["d", "c", "b", "a"], "data": [r[::-1] for r in rows]}}, IRIS
    )
    for batch in (records, instances, inputs, reordered):
        _same(split, batch)
    assert split.rows == 2
    assert split.columns["a"].dtype == np.float64
    assert split.columns["b"].tolist() == [3.5, 3.0]
    assert split.matrix is not None and split.matrix.shape == (2, 4)


def test_mixed_types_are_converted_to_the_signature_dtypes() -> None:
    batch = parse_invocations({"dataframe_records": [ROW, {**ROW, "color": "blue", "flag": False}]}, MIXED)
    assert batch.matrix is None
    dtypes = {k: v.dtype for k, v in batch.columns.items()}
    assert dtypes == {
        "x": np.float64,
        "n": np.int64,
        "color": np.dtype(object),
        "flag": np.bool_,
        "f": np.float32,
        "i": np.int32,
    }
    assert batch.columns["color"].tolist() == ["red", "blue"]
    split = parse_invocations(
        {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())] * 2}}, MIXED
    )
    assert split.columns["n"].tolist() == [3, 3]


def test_integers_are_accepted_for_double_columns_but_not_floats_for_long() -> None:
    assert parse_invocations({"instances": [{**ROW, "x": 2}]}, MIXED).columns["x"].tolist() == [2.0]
    message = _error(parse_invocations, {"instances": [{**ROW, "n": 2.5}]}, MIXED)
    assert "column 'n'" in message and "expected an integer (long)" in message and "number 2.5" in message


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (
            {"dataframe_records": [{**ROW, "x": "1.5"}]},
            ["column 'x'", "a number (double)", "string '1.5'", "row 0"],
        ),
        ({"dataframe_records": [{**ROW, "flag": 1}]}, ["column 'flag'", "a boolean", "integer 1"]),
        ({"dataframe_records": [{**ROW, "x": True}]}, ["column 'x'", "boolean"]),
        ({"dataframe_records": [{**ROW, "color": 3}]}, ["column 'color'", "a string", "integer 3"]),
        ({"dataframe_records": [{**ROW, "x": None}]}, ["column 'x'", "missing value (null)"]),
        ({"dataframe_records": [{**ROW, "x": [1.0]}]}, ["column 'x'", "got array"]),
        (
            {"dataframe_records": [{k: v for k, v in ROW.items() if k != "n"}]},
            ["missing column 'n'", "row 0"],
        ),
        ({"dataframe_records": [{**ROW, "extra": 1}]}, ["unexpected column 'extra'", "row 0"]),
        (
            {"dataframe_records": [ROW, {**ROW, "i": 2**40}]},
            ["column 'i'", "out of range for integer", "row 1"],
        ),
        ({"dataframe_records": [{**ROW, "n": 2**70}]}, ["column 'n'", "out of range"]),
        ({"dataframe_records": [{**ROW, "f": 1e300}]}, ["column 'f'", "out of range for float"]),
        ({"dataframe_records": []}, ["non-empty array"]),
        ({"dataframe_records": [1, 2]}, ["row 0 must be an object"]),
        ({"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}, ["missing columns", "'n'"]),
        (
            {"dataframe_split": {"columns": [*ROW, "zzz"], "data": [[*ROW.values(), 1]]}},
            ["unexpected column 'zzz'"],
        ),
        (
            {"dataframe_split": {"columns": [*ROW, "x"], "data": [[*ROW.values(), 1]]}},
            ["'x' is given more than once"],
        ),
        (
            {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())[:3]]}},
            ["row 0 has 3 values, expected 6"],
        ),
        ({"dataframe_split": {"columns": list(ROW), "data": [1]}}, ["row 0 must be an array"]),
        ({"dataframe_split": {"columns": list(ROW)}}, ["'data' is missing"]),
        ({"dataframe_split": {"columns": list(ROW), "data": [], "foo": 1}}, ["unexpected field 'foo'"]),
        ({"dataframe_split": []}, ["must be a JSON object"]),
        ({"instances": [[1, 2]]}, ["row 0 has 2 values, expected 6"]),
        ({"instances": {"x": [1.0, 2.0], "n": [1]}}, ["different lengths"]),
        ({"instances": "abc"}, ["non-empty array of rows"]),
        ({"instances": [1, [2]]}, ["must hold rows"]),
        ({}, ["exactly one of", "an empty object"]),
        ({"instances": [], "inputs": []}, ["exactly one of", "'instances', 'inputs'"]),
        ({"instances": [ROW], "foo": 1}, ["unexpected field 'foo'"]),
        ({"instances": [ROW], "params": {"k": 1}}, ["unknown param 'k'", "accepts: none"]),
        ({"instances": [ROW], "params": [1]}, ["params must be a JSON object"]),
        ([ROW], ["must be a JSON object", "got array"]),
        ("x", ["must be a JSON object", "got string"]),
    ],
)
def test_invocations_errors_name_the_problem(body: Any, needles: list[str]) -> None:
    message = _error(parse_invocations, body, MIXED)
    for needle in needles:
        assert needle in message, (needle, message)


def test_all_double_fast_path_reports_like_the_column_path() -> None:
    message = _error(parse_invocations, {"instances": [[1, 2, "3", 4]]}, IRIS)
    assert message == "column 'c': expected a number (double), got string '3' at row 0"
    message = _error(parse_invocations, {"dataframe_records": [{"a": 1, "b": 2, "c": 3, "d": True}]}, IRIS)
    assert "column 'd'" in message and "boolean" in message
    message = _error(parse_invocations, {"instances": [[1, 2, 3, 10**400]]}, IRIS)
    assert "column 'd'" in message and "out of range" in message


def test_optional_columns_may_be_absent_or_null() -> None:
    batch = parse_invocations(
        {"dataframe_records": [{"x": 1.0}, {"x": 2.0, "y": None, "s": "a"}, {"x": 3.0, "y": 4.0}]}, OPTIONAL
    )
    assert batch.rows == 3
    assert np.isnan(batch.columns["y"][:2]).all() and batch.columns["y"][2] == 4.0
    assert batch.columns["s"].tolist() == [None, "a", None]
    absent = parse_invocations({"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}, OPTIONAL)
    assert np.isnan(absent.columns["y"]).all() and absent.columns["s"].tolist() == [None]
    assert "missing column 'x'" in _error(parse_invocations, {"dataframe_records": [{"y": 1.0}]}, OPTIONAL)


def test_params_pass_when_the_model_declares_them() -> None:
    schema = InputSchema(columns=(Column("x"),), params=("temperature",))
    batch = parse_invocations({"instances": [1.0, 2.0], "params": {"temperature": 0.5}}, schema)
    assert batch.params == {"temperature": 0.5} and batch.rows == 2
    assert "unknown param 'top_k'" in _error(
        parse_invocations, {"instances": [1.0], "params": {"top_k": 1}}, schema
    )


# --- OIP v2 ----------------------------------------------------------------------------------------


def _oip(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": list(inputs), **extra}


def _col(name: str, data: Any, datatype: str = "FP64", shape: list[int] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": shape if shape is not None else [len(data)],
        "data": data,
    }


def test_oip_per_column_and_matrix_inputs_agree() -> None:
    per_column = parse_oip(_oip(*(_col(k, [float(i), float(i + 1)]) for i, k in enumerate("abcd"))), IRIS)
    nested = parse_oip(
        _oip(*(_col(k, [[float(i)], [float(i + 1)]], shape=[2, 1]) for i, k in enumerate("abcd"))), IRIS
    )
    matrix = parse_oip(
        _oip({"name": "input-0", "datatype": "FP32", "shape": [2, 4], "data": [[0, 1, 2, 3], [1, 2, 3, 4]]}),
        IRIS,
    )
    flat = parse_oip(
        _oip({"name": "input-0", "datatype": "FP64", "shape": [2, 4], "data": [0, 1, 2, 3, 1, 2, 3, 4]}), IRIS
    )
    for batch in (nested, matrix, flat):
        _same(per_column, batch)
    assert per_column.columns["c"].tolist() == [2.0, 3.0]


def test_oip_mixed_columns() -> None:
    inputs = [
        _col("x", [1.5]),
        _col("n", [3], "INT64"),
        _col("color", ["red"], "BYTES"),
        _col("flag", [True], "BOOL"),
        _col("f", [0.5], "FP32"),
        _col("i", [7], "INT32"),
    ]
    batch = parse_oip(_oip(*inputs, id="req-1", parameters={"content_type": "pd"}), MIXED)
    assert (
        batch.rows == 1
        and batch.columns["color"].tolist() == ["red"]
        and batch.columns["n"].dtype == np.int64
    )
    assert batch.params is None


@pytest.mark.parametrize(
    ("inputs", "needles"),
    [
        (
            [_col("x", [1.5]), _col("n", [3.5], "FP64")],
            ["input 'n'", "datatype FP64 does not fit the model's long column"],
        ),
        ([_col("x", [1.5], "INT64")], ["input 'x'", "expected an integer", "number 1.5"]),
        ([_col("x", ["a"], "BYTES")], ["input 'x'", "datatype BYTES does not fit the model's double column"]),
        ([_col("x", [1.5], "FP99")], ["input 'x'", "unknown datatype 'FP99'"]),
        ([_col("x", [1.5, 2.5], shape=[3])], ["input 'x'", "shape [3] holds 3 values, 'data' has 2"]),
        ([_col("x", [1.5, 2.5], shape=[2, 2])], ["input 'x'", "shape [2, 2] is not one column"]),
        ([_col("x", [[1.5, 2.5]], shape=[2, 1])], ["input 'x'", "does not match shape [2, 1]"]),
        ([_col("x", [[[1.5]]], shape=[1, 1])], ["input 'x'", "nested deeper than shape"]),
        ([_col("x", [1.5], shape=[-1])], ["input 'x'", "non-negative integers"]),
        ([_col("x", [1.5], shape=[])], ["input 'x'", "non-empty array of integers"]),
        ([_col("x", 1.5, shape=[1])], ["input 'x'", "'data' must be an array"]),
        ([{"name": "x", "datatype": "FP64", "shape": [1]}], ["input 'x'", "'data' is missing"]),
        ([{"name": "", "datatype": "FP64", "shape": [1], "data": [1]}], ["inputs[0]", "'name'"]),
        ([{**_col("x", [1.0]), "foo": 1}], ["inputs[0]", "unexpected field 'foo'"]),
        ([_col("x", [1.0]), _col("x", [1.0])], ["'x' is given more than once"]),
        ([_col("zz", [1.0]), _col("x", [1.0])], ["unexpected input 'zz'"]),
        ([_col("x", [1.0])], ["missing columns", "'n'"]),
        ([_col("x", [1.0, 2.0]), _col("n", [1], "INT64")], ["input 'n' has 1 rows, other inputs have 2"]),
        (
            [_col("x", [1.5]), _col("flag", [1], "INT8")],
            ["datatype INT8 does not fit the model's boolean column"],
        ),
        ([_col("n", [-1], "UINT8")], ["negative value"]),
        ([1], ["inputs[0] must be a JSON object"]),
    ],
)
def test_oip_errors_name_the_input(inputs: list[Any], needles: list[str]) -> None:
    message = _error(parse_oip, _oip(*inputs), MIXED)
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inputs": []}, "'inputs' must be a non-empty array"),
        ({"inputs": {}}, "'inputs' must be a non-empty array"),
        ({}, "'inputs' must be a non-empty array"),
        ({"inputs": [_col("a", [1.0])], "bogus": 1}, "unexpected field 'bogus'"),
        ({"inputs": [_col("a", [1.0])], "parameters": []}, "'parameters' must be a JSON object"),
        ([], "must be a JSON object"),
        (
            {"inputs": [{"name": "m", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]},
            "does not fit the model's 4 columns",
        ),
        (
            {"inputs": [{"name": "m", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, "x"]}]},
            "input 'm', column 'd'",
        ),
        ({"inputs": [{"name": "m", "datatype": "FP64", "shape": [0, 4], "data": []}]}, "no rows"),
    ],
)
def test_oip_request_errors(body: Any, needle: str) -> None:
    assert needle in _error(parse_oip, body, IRIS)


def test_tensor_schemas() -> None:
    batch = parse_invocations({"inputs": [[1, 2, 3], [4, 5, 6]]}, TENSOR)
    assert batch.tensors[""].dtype == np.float32 and batch.tensors[""].shape == (2, 3)
    oip = parse_oip(
        _oip({"name": "t", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}), TENSOR
    )
    assert oip.tensors[""].tolist() == batch.tensors[""].tolist()
    assert "dimension 1 must be 3" in _error(parse_invocations, {"instances": [[1, 2]]}, TENSOR)
    assert "expected 2 dimensions" in _error(parse_invocations, {"instances": [1, 2]}, TENSOR)
    assert "does not match shape" in _error(parse_invocations, {"instances": [[1, 2, 3], [1, 2]]}, TENSOR)
    assert "takes tensors" in _error(parse_invocations, {"dataframe_records": [{"a": 1}]}, TENSOR)
    named = parse_invocations({"inputs": {"a": [[1, 2]], "b": [3]}}, NAMED_TENSORS)
    assert named.tensors["b"].dtype == np.int64 and named.rows == 1
    assert "missing input 'b'" in _error(parse_invocations, {"inputs": {"a": [[1, 2]]}}, NAMED_TENSORS)
    assert "has 2 rows" in _error(parse_invocations, {"inputs": {"a": [[1, 2]], "b": [3, 4]}}, NAMED_TENSORS)
    assert "expected an integer" in _error(
        parse_invocations, {"inputs": {"a": [[1, 2]], "b": [3.5]}}, NAMED_TENSORS
    )


def test_flatten_and_column_array() -> None:
    assert flatten([[1, 2], [3, 4]], (2, 2), "t") == [1, 2, 3, 4]
    assert flatten([1, 2, 3, 4], (2, 2), "t") == [1, 2, 3, 4]
    assert column_array(Column("b", "binary"), ["aGk="]).tolist() == [b"hi"]
    assert "not convertible to binary" in _error(column_array, Column("b", "binary"), ["not base64!"])
    dates = column_array(Column("t", "datetime"), ["2024-01-02T03:04:05"])
    assert dates.dtype == np.dtype("datetime64[ns]")
    assert "not convertible to datetime" in _error(column_array, Column("t", "datetime"), ["yesterday"])
    assert column_array(Column("j", "array"), [[1, 2]]).tolist() == [[1, 2]]
    assert "got object" in _error(column_array, Column("j", "array"), [{"a": 1}])


# --- never anything but a RequestError for bad input ----------------------------------------------------


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.random()
    scalars: list[Any] = [
        None,
        True,
        False,
        0,
        -1,
        2**63,
        2**64 + 1,
        1.5,
        -0.0,
        1e308,
        "",
        "x",
        "1.5",
        "NaN",
        "a" * 50,
    ]
    if depth > 4 or choice < 0.45:
        return rng.choice(scalars)
    if choice < 0.75:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [
        "inputs",
        "instances",
        "dataframe_split",
        "dataframe_records",
        "columns",
        "data",
        "index",
        "name",
        "shape",
        "datatype",
        "params",
        "parameters",
        "id",
        "a",
        "b",
        "c",
        "d",
        "x",
        "n",
        "color",
        "flag",
        "f",
        "i",
    ]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _mutate(rng: random.Random, body: Any) -> Any:
    """A valid body with one random part replaced."""
    if isinstance(body, dict) and body:
        key = rng.choice(list(body))
        copy = dict(body)
        copy[key] = _mutate(rng, body[key]) if rng.random() < 0.7 else _random_json(rng)
        if rng.random() < 0.1:
            copy.pop(key)
        return copy
    if isinstance(body, list) and body:
        i = rng.randrange(len(body))
        copy = list(body)
        copy[i] = _mutate(rng, body[i]) if rng.random() < 0.7 else _random_json(rng)
        if rng.random() < 0.1:
            copy.append(_random_json(rng))
        return copy
    return _random_json(rng)


IRIS_ROW = {"a": 5.1, "b": 3.5, "c": 1.4, "d": 0.2}
VALID_BODIES: list[tuple[str, Any]] = [
    ("inv", {"dataframe_split": {"columns": list(IRIS_ROW), "data": [list(IRIS_ROW.values())] * 2}}),
    ("inv", {"dataframe_records": [IRIS_ROW]}),
    ("inv", {"instances": [list(IRIS_ROW.values())]}),
    ("inv", {"inputs": [[1, 2, 3], [4, 5, 6]]}),
    ("oip", _oip(*(_col(k, [v]) for k, v in IRIS_ROW.items()))),
    ("oip", _oip({"name": "m", "datatype": "FP32", "shape": [1, 4], "data": [[1, 2, 3, 4]]})),
    ("inv", {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())]}}),
    ("inv", {"dataframe_records": [ROW, ROW]}),
    ("inv", {"instances": [ROW]}),
    ("inv", {"inputs": {k: [v] for k, v in ROW.items()}}),
    (
        "oip",
        _oip(
            _col("x", [1.5]),
            _col("n", [3], "INT64"),
            _col("color", ["r"], "BYTES"),
            _col("flag", [True], "BOOL"),
            _col("f", [0.5], "FP32"),
            _col("i", [7], "INT32"),
        ),
    ),
]


@pytest.mark.parametrize(
    "schema",
    [MIXED, IRIS, OPTIONAL, TENSOR, NAMED_TENSORS],
    ids=["mixed", "iris", "optional", "tensor", "named"],
)
def test_fuzz_bad_bodies_only_raise_request_errors(schema: InputSchema) -> None:
    rng = random.Random(20240501)
    for _ in range(1500):
        kind, valid = rng.choice(VALID_BODIES)
        body = _mutate(rng, valid) if rng.random() < 0.8 else _random_json(rng)
        body = json.loads(json.dumps(body))  # what a JSON parser would hand over
        parse = parse_oip if kind == "oip" else parse_invocations
        try:
            batch = parse(body, schema)
        except RequestError as error:
            assert error.status == 400 and error.message
        else:
            assert batch.rows > 0
