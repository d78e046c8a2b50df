"""Request bodies -> validated column (or tensor) arrays: the Open Inference Protocol v2 ``infer`` request
and MLflow's ``/invocations`` formats, checked against the model's :class:`~.schema.InputSchema`.

Pure functions. Every problem raises :class:`~.errors.RequestError` (400) with a message that names the
column/input, what was expected and what was sent. Checks are per column and vectorised where numpy can
do them (value types via ``set(map(type, values))``, conversion with ``np.array(..., dtype)``).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .errors import RequestError
from .schema import ACCEPTED_DATATYPES, OIP_DATATYPES, Column, InputSchema, Kind, Tensor

NoneType = type(None)
#: Python types of the JSON values each kind accepts.
_ALLOWED: Final[dict[Kind, frozenset[type]]] = {
    "float": frozenset({int, float}),
    "int": frozenset({int}),
    "bool": frozenset({bool}),
    "str": frozenset({str}),
    "bytes": frozenset({str}),
    "datetime": frozenset({str}),
    "json": frozenset({int, float, bool, str, list, dict}),
}
_EXPECTED: Final[dict[Kind, str]] = {
    "float": "a number",
    "int": "an integer",
    "bool": "a boolean",
    "str": "a string",
    "bytes": "a base64 string",
    "datetime": "an ISO-8601 date/time string",
    "json": "a JSON value",
}
_JSON_TYPE_NAMES: Final[dict[type, str]] = {
    int: "integer",
    float: "number",
    bool: "boolean",
    str: "string",
    NoneType: "null",
    list: "array",
    dict: "object",
}
INVOCATION_FORMATS: Final = ("dataframe_split", "dataframe_records", "instances", "inputs")
_OIP_REQUEST_KEYS: Final = frozenset({"id", "parameters", "inputs", "outputs"})
_OIP_INPUT_KEYS: Final = frozenset({"name", "shape", "datatype", "data", "parameters"})
_SPLIT_KEYS: Final = frozenset({"columns", "data", "index"})
#: Highest tensor rank accepted (numpy allows 64).
MAX_RANK: Final = 16


@dataclass
class Batch:
    """A validated request: ``rows`` rows, as one array per schema column (absent optional columns are
    all-missing), or per tensor for tensor schemas (key "" for a single unnamed tensor)."""

    rows: int
    columns: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    tensors: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    matrix: npt.NDArray[np.float64] | None = None
    """(rows x columns) float64 in schema order, set when every column is a required double (the columns
    are then views of it): the fast prediction paths and the feature counters use it directly."""


# --------------------------------------------------------------------------------------------------------
# all-double schemas: one type check and one conversion for the whole request
# --------------------------------------------------------------------------------------------------------

_NUMBER: Final = frozenset({int, float})


def _double_matrix(rows: Sequence[Sequence[Any]]) -> npt.NDArray[np.float64] | None:
    """``rows`` (equal-length lists of JSON numbers) as a float64 matrix; None when any value is not a
    number (the per-column path then finds and reports it)."""
    if not set(map(type, chain.from_iterable(rows))) <= _NUMBER:
        return None
    try:
        return np.array(rows, dtype=np.float64)
    except (OverflowError, ValueError):
        return None


def _matrix_batch(schema: InputSchema, matrix: npt.NDArray[np.float64]) -> Batch:
    matrix = np.ascontiguousarray(matrix)
    columns = {name: matrix[:, j] for j, name in enumerate(schema.names)}
    return Batch(rows=matrix.shape[0], columns=columns, matrix=matrix)


# --------------------------------------------------------------------------------------------------------
# values -> arrays
# --------------------------------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, list | dict) else _json_type(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_error(
    where: str, kind: Kind, type_name: str, values: Sequence[Any], allowed: frozenset[type]
) -> RequestError:
    for row, value in enumerate(values):
        if type(value) not in allowed:
            if value is None:
                return RequestError(
                    f"{where}: missing value (null) at row {row}; expected {_EXPECTED[kind]} ({type_name})"
                )
            return RequestError(
                f"{where}: expected {_EXPECTED[kind]} ({type_name}), "
                f"got {_json_type(value)} {_show(value)} at row {row}"
            )
    return RequestError(f"{where}: expected {_EXPECTED[kind]} ({type_name})")  # pragma: no cover


def convert(
    values: Sequence[Any],
    kind: Kind,
    dtype: np.dtype[Any],
    where: str,
    *,
    type_name: str,
    nullable: bool = False,
    json_family: str = "any",
) -> npt.NDArray[Any]:
    """A 1-D array of ``dtype`` from JSON scalars, checking every value's type (``nullable``: None is a
    missing value: NaN for numbers, None for objects)."""
    allowed = _ALLOWED[kind]
    if kind == "json":
        allowed = {"array": frozenset({list}), "object": frozenset({dict}), "map": frozenset({dict})}.get(
            json_family, allowed
        )
    if nullable:
        allowed = allowed | {NoneType}
    types = set(map(type, values))
    if not types <= allowed:
        raise _type_error(where, kind, type_name, values, allowed)
    missing = NoneType in types
    try:
        if kind == "float":
            arr = np.array(values, dtype=np.float64)
            if dtype != np.float64:
                with np.errstate(over="ignore"):
                    narrow = arr.astype(dtype)
                if np.isinf(narrow).any():
                    row = int(np.flatnonzero(np.isinf(narrow))[0])
                    raise RequestError(
                        f"{where}: value {values[row]!r} at row {row} is out of range for {type_name}"
                    )
                return narrow
            return arr
        if kind == "int":
            if missing:
                return np.array(values, dtype=np.float64)
            return np.array(values, dtype=dtype)
        if kind == "bool":
            return np.array(values, dtype=object if missing else np.bool_)
        if kind == "datetime":
            return np.array(values, dtype=dtype)
        out = np.empty(len(values), dtype=object)
        if kind == "bytes":
            out[:] = [None if v is None else base64.b64decode(v, validate=True) for v in values]
        else:
            out[:] = list(values)
        return out
    except RequestError:
        raise
    except OverflowError:
        row = _first_out_of_range(values, dtype)
        raise RequestError(
            f"{where}: value {_show(values[row])} at row {row} is out of range for {type_name}"
        ) from None
    except (ValueError, binascii.Error) as error:
        raise RequestError(
            f"{where}: {_json_type(values[0]) if values else 'value'} not convertible to {type_name}: {error}"
        ) from None


def _first_out_of_range(values: Sequence[Any], dtype: np.dtype[Any]) -> int:
    for row, value in enumerate(values):
        try:
            np.array([value], dtype=dtype if dtype.kind in "iu" else np.float64)
        except (OverflowError, ValueError):
            return row
    return 0


def column_array(col: Column, values: Sequence[Any], where: str | None = None) -> npt.NDArray[Any]:
    """The array of one column (its MLflow type's dtype; an optional column with missing values holds NaN
    (numbers) or None)."""
    return convert(
        values,
        col.kind,
        col.dtype,
        where or f"column {col.name!r}",
        type_name=col.type,
        nullable=not col.required,
        json_family=col.type,
    )


def _missing_column(col: Column, rows: int) -> npt.NDArray[Any]:
    if col.kind in ("float", "int"):
        return np.full(rows, np.nan)
    if col.kind == "datetime":
        return np.full(rows, np.datetime64("NaT"), dtype=col.dtype)
    return np.full(rows, None, dtype=object)


def _complete(
    schema: InputSchema, columns: dict[str, npt.NDArray[Any]], rows: int, given: Sequence[str]
) -> Batch:
    missing = [c for c in schema.required if c not in columns]
    if missing:
        raise RequestError(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"(the model takes {', '.join(map(repr, schema.names))}; "
            f"got {', '.join(map(repr, given)) or 'none'})"
        )
    if rows <= 0:
        raise RequestError("the request has no rows")
    ordered = {}
    for col in schema.columns:
        arr = columns.get(col.name)
        ordered[col.name] = arr if arr is not None else _missing_column(col, rows)
    return Batch(rows=rows, columns=ordered)


def _check_names(schema: InputSchema, names: Sequence[Any], what: str) -> None:
    if not all(type(n) is str for n in names):
        bad = next(n for n in names if type(n) is not str)
        raise RequestError(f"{what} names must be strings, got {_json_type(bad)} {_show(bad)}")
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise RequestError(f"{what} {dup!r} is given more than once")
    extra = [n for n in names if n not in schema.by_name]
    if extra:
        raise RequestError(
            f"unexpected {what}{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))} "
            f"(the model takes {', '.join(map(repr, schema.names))})"
        )


def _params(value: Any, schema: InputSchema) -> dict[str, Any] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise RequestError(f"params must be a JSON object, got {_json_type(value)}")
    if not value:
        return None
    unknown = [k for k in value if k not in schema.params]
    if unknown:
        accepted = ", ".join(map(repr, schema.params)) if schema.params else "none"
        raise RequestError(f"unknown param {unknown[0]!r} (the model accepts: {accepted})")
    return dict(value)


# --------------------------------------------------------------------------------------------------------
# tensors: shape + nested/flat data
# --------------------------------------------------------------------------------------------------------


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if type(value) is not list or not value:
        raise RequestError(f"{where}: 'shape' must be a non-empty array of integers, got {_show(value)}")
    if len(value) > MAX_RANK:
        raise RequestError(f"{where}: shape has {len(value)} dimensions (at most {MAX_RANK})")
    if not all(type(d) is int and d >= 0 for d in value):
        raise RequestError(f"{where}: 'shape' must hold non-negative integers, got {_show(value)}")
    return tuple(value)


def flatten(data: Any, shape: tuple[int, ...], where: str) -> list[Any]:
    """Row-major values of ``data`` (flat, or nested exactly as ``shape``)."""
    if type(data) is not list:
        raise RequestError(f"{where}: 'data' must be an array, got {_json_type(data)}")
    total = math.prod(shape)
    if list not in set(map(type, data)):
        if len(data) != total:
            raise RequestError(f"{where}: shape {list(shape)} holds {total} values, 'data' has {len(data)}")
        return data
    level: list[Any] = [data]
    for depth, dim in enumerate(shape):
        nxt: list[Any] = []
        for node in level:
            if type(node) is not list or len(node) != dim:
                got = f"{len(node)} entries" if type(node) is list else _json_type(node)
                raise RequestError(
                    f"{where}: 'data' does not match shape {list(shape)} "
                    f"(dimension {depth} has {got}, expected {dim})"
                )
            nxt.extend(node)
        level = nxt
    if list in set(map(type, level)):
        raise RequestError(f"{where}: 'data' is nested deeper than shape {list(shape)}")
    return level


def _infer_shape(data: Any, where: str) -> tuple[int, ...]:
    """Shape of nested lists (following first elements); ``flatten`` then checks it is rectangular."""
    shape = []
    node = data
    while type(node) is list:
        shape.append(len(node))
        if len(shape) > MAX_RANK:
            raise RequestError(f"{where}: nested more than {MAX_RANK} levels deep")
        if not node:
            break
        node = node[0]
    return tuple(shape)


def _tensor_array(spec: Tensor, values: list[Any], shape: tuple[int, ...], where: str) -> npt.NDArray[Any]:
    if len(shape) != len(spec.shape):
        raise RequestError(
            f"{where}: expected {len(spec.shape)} dimensions {list(spec.shape)}, got shape {list(shape)}"
        )
    for i, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
        if want >= 0 and want != got:
            raise RequestError(
                f"{where}: dimension {i} must be {want} (shape {list(spec.shape)}), got shape {list(shape)}"
            )
    kind = spec.kind
    dtype = spec.dtype if kind != "str" else np.dtype(object)
    arr = convert(values, kind, dtype, where, type_name=str(spec.dtype))
    if kind == "float" and not np.isfinite(arr).all():  # pragma: no cover - JSON has no NaN/inf
        raise RequestError(f"{where}: non-finite value")
    return arr.reshape(shape)


def _tensor_batch(
    schema: InputSchema, items: dict[str, tuple[Any, tuple[int, ...] | None]], params: dict[str, Any] | None
) -> Batch:
    """``items``: tensor name (as sent) -> (data, shape or None to infer from nesting)."""
    tensors: dict[str, npt.NDArray[Any]] = {}
    specs = schema.tensors
    if len(specs) == 1 and specs[0].name is None:
        if len(items) != 1:
            raise RequestError(f"the model takes a single tensor, got {len(items)} inputs")
        (sent, (data, shape)), spec = next(iter(items.items())), specs[0]
        named = {"": (spec, sent, data, shape)}
    else:
        by_name = {str(s.name): s for s in specs}
        unknown = [n for n in items if n not in by_name]
        if unknown:
            raise RequestError(
                f"unexpected input {unknown[0]!r} (the model takes {', '.join(map(repr, by_name))})"
            )
        missing = [n for n in by_name if n not in items]
        if missing:
            raise RequestError(
                f"missing input {missing[0]!r} (the model takes {', '.join(map(repr, by_name))})"
            )
        named = {n: (by_name[n], n, *items[n]) for n in by_name}
    rows = -1
    for key, (spec, sent, data, shape) in named.items():
        where = f"input {sent!r}" if sent else "input"
        if shape is None:
            shape = _infer_shape(data, where)
            if not shape:
                raise RequestError(f"{where}: expected an array, got {_json_type(data)}")
        values = flatten(data, shape, where)
        arr = _tensor_array(spec, values, shape, where)
        tensors[key] = arr
        n = shape[0] if shape else 1
        if rows >= 0 and n != rows:
            raise RequestError(f"{where} has {n} rows, other inputs have {rows}")
        rows = n
    if rows <= 0:
        raise RequestError("the request has no rows")
    return Batch(rows=rows, tensors=tensors, params=params)


# --------------------------------------------------------------------------------------------------------
# Open Inference Protocol v2
# --------------------------------------------------------------------------------------------------------


def _oip_input(item: Any, index: int) -> tuple[str, str, tuple[int, ...], Any]:
    if type(item) is not dict:
        raise RequestError(f"inputs[{index}] must be a JSON object, got {_json_type(item)}")
    extra = item.keys() - _OIP_INPUT_KEYS
    if extra:
        raise RequestError(f"inputs[{index}]: unexpected field {sorted(extra)[0]!r}")
    name = item.get("name")
    if type(name) is not str or not name:
        raise RequestError(f"inputs[{index}]: 'name' must be a non-empty string")
    datatype = item.get("datatype")
    if type(datatype) is not str or datatype not in OIP_DATATYPES:
        raise RequestError(
            f"input {name!r}: unknown datatype {_show(datatype)} (one of {', '.join(OIP_DATATYPES)})"
        )
    if "data" not in item:
        raise RequestError(f"input {name!r}: 'data' is missing")
    params = item.get("parameters")
    if params is not None and type(params) is not dict:
        raise RequestError(f"input {name!r}: 'parameters' must be a JSON object")
    shape = item.get("shape")
    if type(shape) is list and 0 < len(shape) <= 2 and all(type(d) is int and d >= 0 for d in shape):
        return name, datatype, tuple(shape), item["data"]  # the common case, checked inline
    return name, datatype, _shape(shape, f"input {name!r}"), item["data"]


def _declared(col_kind: Kind, datatype: str, where: str, type_name: str) -> frozenset[type] | None:
    """Value types allowed by the declared OIP datatype for a column of ``col_kind`` (None: no narrowing)."""
    if datatype not in ACCEPTED_DATATYPES[col_kind]:
        raise RequestError(f"{where}: datatype {datatype} does not fit the model's {type_name} column")
    if col_kind == "float" and OIP_DATATYPES[datatype] == "int":
        return frozenset({int})
    return None


def _column_from_values(col: Column, values: Sequence[Any], datatype: str, where: str) -> npt.NDArray[Any]:
    narrowed = _declared(col.kind, datatype, where, col.type)
    if narrowed is not None:
        allowed = narrowed | ({NoneType} if not col.required else frozenset())
        if not set(map(type, values)) <= allowed:
            raise _type_error(where, "int", f"datatype {datatype}", values, allowed)
    if datatype.startswith("UINT") and col.is_numeric and any(type(v) is int and v < 0 for v in values):
        raise RequestError(f"{where}: negative value in an unsigned {datatype} input")
    return column_array(col, values, where)


def parse_oip(body: Any, schema: InputSchema) -> Batch:
    """An OIP v2 ``infer`` request: one input per column (shape [n] or [n, 1]), or for column schemas one
    2-D tensor [n, n_columns] in the model's column order; tensor schemas: one input per tensor."""
    if type(body) is not dict:
        raise RequestError(f"the request must be a JSON object with 'inputs', got {_json_type(body)}")
    extra = body.keys() - _OIP_REQUEST_KEYS
    if extra:
        raise RequestError(
            f"unexpected field {sorted(extra)[0]!r} in the request "
            "(OIP allows id, parameters, inputs, outputs)"
        )
    inputs = body.get("inputs")
    if type(inputs) is not list or not inputs:
        raise RequestError("'inputs' must be a non-empty array of tensors")
    parameters = body.get("parameters")
    if parameters is not None and type(parameters) is not dict:
        raise RequestError("'parameters' must be a JSON object")
    params = {k: v for k, v in (parameters or {}).items() if k in schema.params} or None
    parsed = [_oip_input(item, i) for i, item in enumerate(inputs)]
    if schema.is_tensor:
        items: dict[str, tuple[Any, tuple[int, ...] | None]] = {}
        for name, datatype, shape, data in parsed:
            if name in items:
                raise RequestError(f"input {name!r} is given more than once")
            items[name] = (data, shape)
            spec = next((t for t in schema.tensors if t.name in (name, None)), None)
            if spec is not None and datatype not in ACCEPTED_DATATYPES[spec.kind]:
                raise RequestError(
                    f"input {name!r}: datatype {datatype} does not fit the model's {spec.dtype} tensor"
                )
        return _tensor_batch(schema, items, params)
    names = [p[0] for p in parsed]
    if len(parsed) == 1 and names[0] not in schema.by_name and len(parsed[0][2]) == 2:
        batch = _oip_matrix(schema, *parsed[0])
    else:
        _check_names(schema, names, "input")
        fast = _oip_double_columns(schema, parsed)
        if fast is not None:
            fast.params = params
            return fast
        columns: dict[str, npt.NDArray[Any]] = {}
        rows = -1
        for name, datatype, shape, data in parsed:
            where = f"input {name!r}"
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise RequestError(f"{where}: shape {list(shape)} is not one column (expected [n] or [n, 1])")
            if rows >= 0 and shape[0] != rows:
                raise RequestError(f"{where} has {shape[0]} rows, other inputs have {rows}")
            rows = shape[0]
            columns[name] = _column_from_values(
                schema.by_name[name], flatten(data, shape, where), datatype, where
            )
        batch = _complete(schema, columns, rows, names)
    batch.params = params
    return batch


def _oip_double_columns(
    schema: InputSchema, parsed: list[tuple[str, str, tuple[int, ...], Any]]
) -> Batch | None:
    """All-double schema, every column sent as a flat FP tensor of the same length: one matrix."""
    if not schema.all_double or len(parsed) != len(schema.columns):
        return None
    rows = parsed[0][2][0]
    by_name = {}
    for name, datatype, shape, data in parsed:
        if (
            not datatype.startswith("FP")
            or shape[0] != rows
            or (len(shape) == 2 and shape[1] != 1)
            or len(shape) > 2
            or type(data) is not list
            or len(data) != rows
        ):
            return None
        by_name[name] = data
    if rows <= 0:
        return None
    matrix = _double_matrix([by_name[c] for c in schema.names])
    return _matrix_batch(schema, matrix.T) if matrix is not None else None


def _oip_matrix(schema: InputSchema, name: str, datatype: str, shape: tuple[int, ...], data: Any) -> Batch:
    where = f"input {name!r}"
    width = len(schema.columns)
    if shape[1] != width:
        raise RequestError(
            f"{where}: shape {list(shape)} does not fit the model's {width} columns "
            f"(send [n, {width}] in the order {', '.join(map(repr, schema.names))}, or one input per column)"
        )
    values = flatten(data, shape, where)
    if schema.all_double and datatype.startswith("FP") and shape[0] > 0:
        matrix = _double_matrix([values])
        if matrix is not None:
            return _matrix_batch(schema, matrix.reshape(shape))
    columns = {
        col.name: _column_from_values(col, values[j::width], datatype, f"{where}, column {col.name!r}")
        for j, col in enumerate(schema.columns)
    }
    return _complete(schema, columns, shape[0], schema.names)


# --------------------------------------------------------------------------------------------------------
# MLflow /invocations
# --------------------------------------------------------------------------------------------------------


def parse_invocations(body: Any, schema: InputSchema) -> Batch:
    """MLflow's scoring formats: ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``
    (+ optional ``params``)."""
    if type(body) is not dict:
        raise RequestError(
            f"the request must be a JSON object with one of {', '.join(INVOCATION_FORMATS)}, "
            f"got {_json_type(body)}"
        )
    formats = [k for k in INVOCATION_FORMATS if k in body]
    if len(formats) != 1:
        given = (
            f"got {', '.join(map(repr, formats))}"
            if formats
            else f"got {', '.join(map(repr, body)) or 'an empty object'}"
        )
        raise RequestError(f"the request must have exactly one of {', '.join(INVOCATION_FORMATS)} ({given})")
    fmt = formats[0]
    extra = body.keys() - {fmt, "params"}
    if extra:
        raise RequestError(f"unexpected field {sorted(extra)[0]!r} next to {fmt!r}")
    params = _params(body.get("params"), schema)
    value = body[fmt]
    if schema.is_tensor:
        if fmt.startswith("dataframe"):
            raise RequestError(f"the model takes tensors: send 'instances' or 'inputs', not {fmt!r}")
        if type(value) is dict:
            return _tensor_batch(schema, {str(k): (v, None) for k, v in value.items()}, params)
        return _tensor_batch(
            schema,
            {"": (value, None)}
            if schema.tensors[0].name is None
            else {str(schema.tensors[0].name): (value, None)},
            params,
        )
    if fmt == "dataframe_split":
        batch = _split(value, schema)
    elif fmt == "dataframe_records":
        batch = _records(value, schema, fmt)
    else:
        batch = _instances(value, schema, fmt)
    batch.params = params
    return batch


def _rows(rows: Any, names: Sequence[str], schema: InputSchema, what: str) -> Batch:
    """Row-major lists of values in the order of ``names``."""
    if type(rows) is not list or not rows:
        raise RequestError(f"{what} must be a non-empty array of rows")
    if set(map(type, rows)) != {list}:
        bad = next(i for i, r in enumerate(rows) if type(r) is not list)
        raise RequestError(
            f"{what}: row {bad} must be an array of {len(names)} values, got {_json_type(rows[bad])}"
        )
    width = len(names)
    if set(map(len, rows)) != {width}:
        bad = next(i for i, r in enumerate(rows) if len(r) != width)
        raise RequestError(
            f"{what}: row {bad} has {len(rows[bad])} values, expected {width} ({', '.join(map(repr, names))})"
        )
    if schema.all_double and width == len(schema.columns):
        matrix = _double_matrix(rows)
        if matrix is not None:
            if list(names) != schema.names:
                matrix = matrix[:, [list(names).index(c) for c in schema.names]]
            return _matrix_batch(schema, matrix)
    columns = {
        name: column_array(schema.by_name[name], values)
        for name, values in zip(names, zip(*rows, strict=True), strict=True)
    }
    return _complete(schema, columns, len(rows), names)


def _split(value: Any, schema: InputSchema) -> Batch:
    if type(value) is not dict:
        raise RequestError(
            f"dataframe_split must be a JSON object with 'columns' and 'data', got {_json_type(value)}"
        )
    extra = value.keys() - _SPLIT_KEYS
    if extra:
        raise RequestError(f"dataframe_split: unexpected field {sorted(extra)[0]!r}")
    if "data" not in value:
        raise RequestError("dataframe_split: 'data' is missing")
    names = value.get("columns")
    if names is None:
        names = schema.names
    elif type(names) is not list:
        raise RequestError(f"dataframe_split: 'columns' must be an array of names, got {_json_type(names)}")
    _check_names(schema, names, "column")
    return _rows(value["data"], names, schema, "dataframe_split.data")


def _records(value: Any, schema: InputSchema, what: str) -> Batch:
    if type(value) is not list or not value:
        raise RequestError(f"{what} must be a non-empty array of objects (one per row)")
    if set(map(type, value)) != {dict}:
        bad = next(i for i, r in enumerate(value) if type(r) is not dict)
        raise RequestError(
            f"{what}: row {bad} must be an object of column values, got {_json_type(value[bad])}"
        )
    names = schema.names
    colset = set(names)
    optional = len(schema.required) != len(names)
    for i, record in enumerate(value):
        if len(record) != len(names) or record.keys() != colset:
            keys = set(record)
            extra = [k for k in record if k not in colset]
            if extra:
                raise RequestError(
                    f"{what}: unexpected column {extra[0]!r} in row {i} "
                    f"(the model takes {', '.join(map(repr, names))})"
                )
            missing = [c for c in schema.required if c not in keys]
            if missing:
                raise RequestError(f"{what}: missing column {missing[0]!r} in row {i}")
            if not optional:  # pragma: no cover - unreachable: same size, no extra, none missing
                raise RequestError(f"{what}: row {i} does not match the columns")
    if schema.all_double and len(names) > 1:
        matrix = _double_matrix(list(map(itemgetter(*names), value)))
        if matrix is not None:
            return _matrix_batch(schema, matrix)
    columns = {
        name: column_array(
            schema.by_name[name], [r.get(name) for r in value] if optional else [r[name] for r in value]
        )
        for name in names
    }
    return _complete(schema, columns, len(value), names)


def _instances(value: Any, schema: InputSchema, what: str) -> Batch:
    if type(value) is dict:  # columnar: {"col": [values...]} (or one row of scalars)
        names = list(value)
        _check_names(schema, names, "column")
        lists = {k: v if type(v) is list else [v] for k, v in value.items()}
        lengths = {len(v) for v in lists.values()}
        if len(lengths) > 1:
            raise RequestError(f"{what}: columns have different lengths {sorted(lengths)}")
        if schema.all_double and len(lists) == len(schema.columns) and lengths != {0}:
            matrix = _double_matrix([lists[c] for c in schema.names])
            if matrix is not None:
                return _matrix_batch(schema, matrix.T)
        columns = {k: column_array(schema.by_name[k], v) for k, v in lists.items()}
        return _complete(schema, columns, lengths.pop() if lengths else 0, names)
    if type(value) is not list or not value:
        raise RequestError(
            f"{what} must be a non-empty array of rows or an object of columns, got {_json_type(value)}"
        )
    types = set(map(type, value))
    if types == {dict}:
        return _records(value, schema, what)
    if types == {list}:
        return _rows(value, schema.names, schema, what)
    if len(schema.columns) == 1 and list not in types and dict not in types:
        col = schema.columns[0]
        return _complete(schema, {col.name: column_array(col, value)}, len(value), [col.name])
    raise RequestError(
        f"{what} must hold rows (arrays of {len(schema.columns)} values) or objects, "
        f"got {', '.join(sorted(_JSON_TYPE_NAMES.get(t, t.__name__) for t in types))}"
    )
