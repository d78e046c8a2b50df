"""The model's input/output schema as the server uses it, built from an MLflow signature.

Independent of MLflow's classes (``from_mlflow`` converts them), so validation is testable without MLflow.
Column types are MLflow's ``DataType`` names; tensors carry a numpy dtype and a shape with -1 for free dims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

Kind = Literal["float", "int", "bool", "str", "bytes", "datetime", "json"]

#: MLflow column type -> (value kind, numpy dtype of the column array, OIP datatype).
COLUMN_TYPES: Final[dict[str, tuple[Kind, str, str]]] = {
    "double": ("float", "float64", "FP64"),
    "float": ("float", "float32", "FP32"),
    "long": ("int", "int64", "INT64"),
    "integer": ("int", "int32", "INT32"),
    "boolean": ("bool", "bool", "BOOL"),
    "string": ("str", "object", "BYTES"),
    "binary": ("bytes", "object", "BYTES"),
    "datetime": ("datetime", "datetime64[ns]", "BYTES"),
    # MLflow's complex types (Array, Object, Map, Any): JSON values, checked structurally
    "array": ("json", "object", "BYTES"),
    "object": ("json", "object", "BYTES"),
    "map": ("json", "object", "BYTES"),
    "any": ("json", "object", "BYTES"),
}

#: OIP datatypes and the JSON value kinds each carries.
OIP_DATATYPES: Final[dict[str, Kind]] = {
    "BOOL": "bool",
    **{f"UINT{b}": "int" for b in (8, 16, 32, 64)},
    **{f"INT{b}": "int" for b in (8, 16, 32, 64)},
    **{f"FP{b}": "float" for b in (16, 32, 64)},
    "BYTES": "str",
}

#: Which OIP datatypes a column kind accepts (numbers widen to floats; nothing else converts).
ACCEPTED_DATATYPES: Final[dict[Kind, frozenset[str]]] = {
    "float": frozenset(d for d, k in OIP_DATATYPES.items() if k in ("float", "int")),
    "int": frozenset(d for d, k in OIP_DATATYPES.items() if k == "int"),
    "bool": frozenset({"BOOL"}),
    "str": frozenset({"BYTES"}),
    "bytes": frozenset({"BYTES"}),
    "datetime": frozenset({"BYTES"}),
    "json": frozenset({"BYTES"}),
}


#: numpy dtype kind/itemsize -> OIP datatype (outputs and tensor specs).
def oip_datatype(dtype: np.dtype[Any]) -> str:
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "iuf":
        prefix = {"i": "INT", "u": "UINT", "f": "FP"}[dtype.kind]
        return f"{prefix}{dtype.itemsize * 8}"
    return "BYTES"


@dataclass(frozen=True)
class Column:
    """One named input column."""

    name: str
    type: str = "double"
    required: bool = True

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise ValueError(f"unsupported column type {self.type!r} of column {self.name!r}")

    @property
    def kind(self) -> Kind:
        return COLUMN_TYPES[self.type][0]

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(COLUMN_TYPES[self.type][1])

    @property
    def datatype(self) -> str:
        return COLUMN_TYPES[self.type][2]

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("float", "int")


@dataclass(frozen=True)
class Tensor:
    """One tensor input (MLflow TensorSpec): ``name`` None for a model with a single unnamed tensor."""

    name: str | None
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def kind(self) -> Kind:
        k = self.dtype.kind
        if k == "b":
            return "bool"
        if k in "iu":
            return "int"
        if k == "f":
            return "float"
        return "str"

    @property
    def datatype(self) -> str:
        return oip_datatype(self.dtype)


@dataclass(frozen=True)
class InputSchema:
    """Column-based (``columns``) or tensor-based (``tensors``) model input."""

    columns: tuple[Column, ...] = ()
    tensors: tuple[Tensor, ...] = ()
    params: tuple[str, ...] = ()
    """Names of the inference params the model accepts (MLflow ParamSchema)."""
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)
    all_double: bool = field(init=False, repr=False, compare=False)
    """Every column is a required double: requests can be validated as one float64 matrix."""

    def __post_init__(self) -> None:
        if bool(self.columns) == bool(self.tensors):
            raise ValueError("a schema has either columns or tensors")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in the signature: {names}")
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})
        object.__setattr__(
            self,
            "all_double",
            bool(self.columns) and all(c.type == "double" and c.required for c in self.columns),
        )

    @property
    def is_tensor(self) -> bool:
        return bool(self.tensors)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def describe(self) -> list[dict[str, Any]]:
        """OIP metadata ``inputs``."""
        if self.is_tensor:
            return [
                {"name": t.name or "input-0", "datatype": t.datatype, "shape": list(t.shape)}
                for t in self.tensors
            ]
        return [
            {
                "name": c.name,
                "datatype": c.datatype,
                "shape": [-1],
                "parameters": {"mlflow_type": c.type, "required": c.required},
            }
            for c in self.columns
        ]


@dataclass(frozen=True)
class OutputSpec:
    """One declared output (for metadata only)."""

    name: str
    datatype: str
    shape: tuple[int, ...] = (-1,)


def from_mlflow(schema: Any, params: Any = None) -> InputSchema:
    """Convert an MLflow ``Schema`` (+ ``ParamSchema``) of a model signature."""
    param_names = tuple(p.name for p in params.params) if params is not None else ()
    if schema.is_tensor_spec():
        tensors = []
        for spec in schema.inputs:
            tensors.append(
                Tensor(name=spec.name, dtype=np.dtype(spec.type), shape=tuple(int(d) for d in spec.shape))
            )
        if len(tensors) > 1 and any(t.name is None for t in tensors):
            raise ValueError("a signature with several tensors must name each one")
        return InputSchema(tensors=tuple(tensors), params=param_names)
    columns = []
    for i, spec in enumerate(schema.inputs):
        name = spec.name if spec.name is not None else str(i)
        columns.append(
            Column(
                name=name, type=_mlflow_type_name(spec.type), required=bool(getattr(spec, "required", True))
            )
        )
    return InputSchema(columns=tuple(columns), params=param_names)


def outputs_from_mlflow(schema: Any) -> list[OutputSpec]:
    """Declared outputs of an MLflow output ``Schema`` (empty when the model declares none)."""
    if schema is None:
        return []
    out = []
    for i, spec in enumerate(schema.inputs):
        name = spec.name if spec.name is not None else ("predict" if len(schema.inputs) == 1 else str(i))
        if schema.is_tensor_spec():
            out.append(OutputSpec(name, oip_datatype(np.dtype(spec.type)), tuple(int(d) for d in spec.shape)))
        else:
            type_name = _mlflow_type_name(spec.type)
            out.append(OutputSpec(name, COLUMN_TYPES[type_name][2]))
    return out


def _mlflow_type_name(type_: Any) -> str:
    """MLflow DataType -> its name; complex types (Array, Object, Map, AnyType) -> their family."""
    name = getattr(type_, "name", None)
    if isinstance(name, str) and name in COLUMN_TYPES and type(type_).__name__ == "DataType":
        return name
    family = type(type_).__name__.lower()
    if family in ("array", "object", "map"):
        return family
    return "any"
