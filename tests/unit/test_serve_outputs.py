"""Model outputs to OIP and MLflow response bodies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_operator.runtime.serving import jsonio
from mlops_operator.runtime.serving.outputs import invocations_response, normalize, oip_response


def _json(obj: object) -> object:
    return json.loads(jsonio.dumps(obj))


def test_arrays_series_lists() -> None:
    for value in (np.array([0, 2, 1]), pd.Series([0, 2, 1]), [0, 2, 1]):
        out = normalize(value)
        assert out.orient == "array" and out.single() is not None
        assert _json(invocations_response(out)) == {"predictions": [0, 2, 1]}
        assert _json(oip_response("m", "1", out, "id-1")) == {
            "model_name": "m",
            "model_version": "1",
            "id": "id-1",
            "outputs": [{"name": "predict", "datatype": "INT64", "shape": [3], "data": [0, 2, 1]}],
        }
    two_d = normalize(np.array([[0.5, 0.5], [0.25, 0.75]], dtype=np.float32), "probs")
    assert two_d.single() is None
    assert _json(invocations_response(two_d)) == {"predictions": [[0.5, 0.5], [0.25, 0.75]]}
    assert _json(oip_response("m", "1", two_d))["outputs"] == [  # type: ignore[index]
        {"name": "probs", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 0.5, 0.25, 0.75]}
    ]
    strings = normalize(np.array(["a", "b"]))
    assert _json(invocations_response(strings)) == {"predictions": ["a", "b"]}
    assert _json(oip_response("m", "1", strings))["outputs"][0]["datatype"] == "BYTES"  # type: ignore[index]
    assert normalize(np.float64(1.5)).arrays["predict"].tolist() == [1.5]


def test_frames_and_dicts() -> None:
    frame = normalize(pd.DataFrame({"label": ["x", "y"], "score": [0.5, np.nan]}))
    assert frame.orient == "frame" and frame.single() is None
    assert _json(invocations_response(frame)) == {
        "predictions": [{"label": "x", "score": 0.5}, {"label": "y", "score": None}]
    }
    outputs = _json(oip_response("m", "1", frame))["outputs"]  # type: ignore[index]
    assert outputs == [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]},
        {"name": "score", "datatype": "FP64", "shape": [2], "data": [0.5, None]},
    ]
    mapping = normalize({"a": [1, 2], "b": np.array([True, False])})
    assert _json(invocations_response(mapping)) == {"predictions": {"a": [1, 2], "b": [True, False]}}
    assert frame.arrays["label"].dtype == object


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_become_null(value: float) -> None:
    assert jsonio.dumps({"x": value}) == b'{"x":null}'
    assert jsonio.dumps(np.array([value, 1.0])) == b"[null,1.0]"


def test_loads_rejects_what_is_not_json() -> None:
    for text in (b"NaN", b"[Infinity]", b"[1e400]", b"{", b"\xff", b"[" * 2000 + b"]" * 2000):
        with pytest.raises(jsonio.JSONError):
            jsonio.loads(text)
    assert jsonio.loads(b'{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}


def test_the_standard_library_fallback_behaves_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without orjson (not a hard dependency) the server parses and writes JSON the same way."""
    import importlib.util
    import sys

    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson -> ImportError
    spec = importlib.util.spec_from_file_location("jsonio_fallback", jsonio.__file__)
    assert spec is not None and spec.loader is not None
    fallback = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fallback)
    assert not fallback.HAVE_ORJSON
    for text in (b"NaN", b"[Infinity]", b"[-Infinity]", b"[1e400]", b"{", b"\xff", b"[" * 5000 + b"]" * 5000):
        with pytest.raises(fallback.JSONError):
            fallback.loads(text)
    assert fallback.loads(b'{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    value = {
        "f64": np.array([1.5, np.nan]),
        "f32": np.array([0.1], dtype=np.float32),
        "i": np.array([[1, 2]]),
        "s": np.array(["a"], dtype=object),
        "scalar": np.int64(3),
        "inf": float("inf"),
    }
    ours, theirs = json.loads(fallback.dumps(value)), json.loads(jsonio.dumps(value))
    # float32: orjson writes the shortest float32 repr, the fallback the widened double (same float32)
    assert np.float32(ours.pop("f32")[0]) == np.float32(theirs.pop("f32")[0]) == np.float32(0.1)
    assert ours == theirs == {"f64": [1.5, None], "i": [[1, 2]], "s": ["a"], "scalar": 3, "inf": None}
