"""Model outputs -> response bodies (OIP v2 ``infer`` response, MLflow ``/invocations`` predictions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .schema import oip_datatype

Orient = Literal["array", "frame", "dict"]
DEFAULT_OUTPUT_NAME = "predict"


@dataclass(frozen=True)
class Outputs:
    """Predictions as named arrays (first dimension = rows). ``orient`` remembers what the model returned:
    one array (ndarray, Series, list, tensor), a DataFrame, or a dict of arrays."""

    arrays: dict[str, npt.NDArray[Any]]
    orient: Orient = "array"

    def single(self) -> npt.NDArray[Any] | None:
        """The one 1-D output (or [n, 1]), if the model has exactly one; else None."""
        if len(self.arrays) != 1:
            return None
        arr = next(iter(self.arrays.values()))
        if arr.ndim == 2 and arr.shape[1] == 1:
            return arr[:, 0]
        return arr if arr.ndim == 1 else None


def _array(value: Any) -> npt.NDArray[Any]:
    if isinstance(value, np.ndarray):
        return value
    to_numpy = getattr(value, "to_numpy", None)  # pandas Series / Index
    if callable(to_numpy):
        return np.asarray(to_numpy())
    numpy = getattr(value, "numpy", None)  # torch / tf tensors
    if callable(numpy) and hasattr(value, "detach"):
        return np.asarray(value.detach().cpu().numpy())
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        arr = arr.astype(object)
    return arr


def normalize(prediction: Any, name: str = DEFAULT_OUTPUT_NAME) -> Outputs:
    """The model's return value as :class:`Outputs` (TypeError for something that is not predictions)."""
    columns = getattr(prediction, "columns", None)
    if columns is not None and hasattr(prediction, "iloc"):  # pandas DataFrame
        return Outputs({str(c): _array(prediction.iloc[:, i]) for i, c in enumerate(columns)}, "frame")
    if isinstance(prediction, dict):
        arrays = {str(k): _array(v) for k, v in prediction.items()}
        return Outputs({k: v if v.ndim else v.reshape(1) for k, v in arrays.items()}, "dict")
    arr = _array(prediction)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    return Outputs({name: arr}, "array")


def _flat(arr: npt.NDArray[Any]) -> Any:
    flat = _widen(arr.reshape(-1))
    if flat.dtype.kind in "biuf":
        return np.ascontiguousarray(flat)
    if flat.dtype.kind == "M":
        return np.datetime_as_string(flat).tolist()
    return flat.tolist()


def oip_outputs(outputs: Outputs) -> list[dict[str, Any]]:
    return [
        {"name": name, "datatype": oip_datatype(arr.dtype), "shape": list(arr.shape), "data": _flat(arr)}
        for name, arr in outputs.arrays.items()
    ]


def oip_response(
    model_name: str, model_version: str, outputs: Outputs, request_id: Any = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = oip_outputs(outputs)
    return body


def _widen(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """float16/32 as float64, so that JSON carries the same numbers as ``.tolist()`` (and MLflow's scoring
    server) rather than the shortest float32 repr, which parses to a different double."""
    return arr.astype(np.float64) if arr.dtype.kind == "f" and arr.dtype.itemsize < 8 else arr


def _nested(arr: npt.NDArray[Any]) -> Any:
    arr = _widen(arr)
    if arr.dtype.kind in "biuf":
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "M":
        return np.datetime_as_string(arr).tolist()
    return arr.tolist()


def invocations_response(outputs: Outputs) -> dict[str, Any]:
    """MLflow's scoring server answers: arrays as (nested) lists, DataFrames as records, dicts as dicts."""
    if outputs.orient == "array":
        return {"predictions": _nested(next(iter(outputs.arrays.values())))}
    if outputs.orient == "dict":
        return {"predictions": {k: _nested(v) for k, v in outputs.arrays.items()}}
    names = list(outputs.arrays)
    lists = [_nested(v) for v in outputs.arrays.values()]
    lists = [v.tolist() if isinstance(v, np.ndarray) else v for v in lists]
    return {"predictions": [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]}
