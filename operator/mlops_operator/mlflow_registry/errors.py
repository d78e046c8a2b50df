"""Which MLflow client errors mean "the server is unavailable" (retry later) and which do not.

Duck-typed on ``MlflowException.error_code`` and the exception type, so it imports no MLflow: the operator
side (``mlops_operator.mlflow_registry``) shares it.
"""

from __future__ import annotations

from typing import Final, Literal

ErrorKind = Literal["unavailable", "auth", "not_found", "client"]

_AUTH: Final = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED"})
_NOT_FOUND: Final = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"})
_CLIENT: Final = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "BAD_REQUEST",
        "MALFORMED_REQUEST",
        "RESOURCE_ALREADY_EXISTS",
        "ALREADY_EXISTS",
        "INVALID_STATE",
        "INVALID_STATE_TRANSITION",
        "FEATURE_DISABLED",
        "RESOURCE_CONFLICT",
    }
)
#: Exception type names (anywhere in the MRO) of network failures.
_NETWORK_TYPES: Final = frozenset(
    {
        "ConnectionError",
        "Timeout",
        "ConnectTimeout",
        "ReadTimeout",
        "MaxRetryError",
        "NewConnectionError",
        "OSError",
    }
)


def error_code(error: BaseException) -> str | None:
    code = getattr(error, "error_code", None)
    return code if isinstance(code, str) else None


def classify(error: BaseException) -> ErrorKind:
    """How to treat an exception raised by an MLflow client call."""
    code = error_code(error)
    if code in _AUTH:
        return "auth"
    if code in _NOT_FOUND:
        return "not_found"
    if code in _CLIENT:
        return "client"
    if code is not None:  # INTERNAL_ERROR (also what the REST client raises after failed retries), 5xx, 429
        return "unavailable"
    if any(t.__name__ in _NETWORK_TYPES for t in type(error).__mro__):
        return "unavailable"
    return "client"
