"""JSON in and out of the server: orjson when installed (several times faster), else the standard library
with the same behaviour (no NaN/Infinity literals accepted; NaN written as null)."""

from __future__ import annotations

import base64
import importlib
import json
import math
from typing import Any, Final

import numpy as np


def _import_orjson() -> Any:
    # imported dynamically: optional at type-check time too
    try:
        return importlib.import_module("orjson")
    except ImportError:  # pragma: no cover - exercised where orjson is not installed
        return None


_orjson: Any = _import_orjson()

HAVE_ORJSON: Final = _orjson is not None


class JSONError(ValueError):
    """The bytes are not one JSON document (or nest too deeply)."""


def _default(obj: Any) -> Any:
    """Values orjson/json do not serialise natively: numpy arrays of other dtypes, numpy scalars, bytes."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "M":
            return np.datetime_as_string(obj).tolist()
        if obj.dtype.kind == "f":
            return [None if not math.isfinite(v) else v for v in obj.astype(np.float64).ravel().tolist()]
        return [_default(v) if isinstance(v, bytes | np.generic) else v for v in obj.tolist()]
    if isinstance(obj, np.datetime64):
        return str(obj)
    if isinstance(obj, np.generic):
        value = obj.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    if isinstance(obj, bytes | bytearray):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def _reject_constant(name: str) -> Any:
    raise JSONError(f"{name} is not valid JSON")


def loads(data: bytes) -> Any:
    """Parse one JSON document; :class:`JSONError` on anything else (including NaN/Infinity literals,
    numbers that overflow a double and nesting beyond 1024 levels)."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError as error:
            raise JSONError(str(error)) from None
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise JSONError("depth limit exceeded") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise JSONError(str(error)) from None
    if _has_inf(value):
        raise JSONError("number is infinity when parsed as double")
    return value


def _has_inf(value: Any, depth: int = 0) -> bool:
    if isinstance(value, float):
        return math.isinf(value)
    if depth > 1024:
        raise JSONError("depth limit exceeded")
    if isinstance(value, list):
        return any(_has_inf(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_has_inf(v, depth + 1) for v in value.values())
    return False


def dumps(obj: Any) -> bytes:
    """Serialise (numpy arrays natively; NaN/inf as null)."""
    if _orjson is not None:
        out: bytes = _orjson.dumps(obj, default=_default, option=_orjson.OPT_SERIALIZE_NUMPY)
        return out
    return json.dumps(_sanitise(obj), separators=(",", ":"), allow_nan=False, default=_default).encode()


def _sanitise(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _sanitise(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_sanitise(v) for v in obj]
    if isinstance(obj, np.ndarray | np.generic):
        return _sanitise(_default(obj))
    return obj
