"""Model registry reads over MLflow's REST API, without the ``mlflow`` package.

The ModelDeployment controller resolves every deployment's alias on each resync; that is all it needs from
MLflow. Importing ``mlflow`` for it costs the operator ~100 MiB of RSS (pandas, pyarrow) and MlflowClient
adds a ``/health`` probe to every call; these two GETs need neither. Same errors as :class:`Registry`
(ModelNotFoundError, RegistryUnavailableError, RegistryError). Authentication as MLflow's own client reads it
from the environment: ``MLFLOW_TRACKING_TOKEN`` (bearer) or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (basic),
``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``. Anything else (non-HTTP URIs,
``MLFLOW_TRACKING_AUTH`` plugins, client certificates) is left to :class:`Registry` (see :func:`supports`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .client import ModelNotFoundError, RegistryError, RegistryUnavailableError

#: Environment variables that configure MLflow client authentication this reader does not implement.
_UNSUPPORTED_ENV = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_TRACKING_AWS_SIGV4")


def supports(tracking_uri: str) -> bool:
    """Whether this reader can talk to ``tracking_uri`` exactly as MlflowClient would."""
    scheme = urllib.parse.urlsplit(tracking_uri).scheme.lower()
    return scheme in ("http", "https") and not any(os.environ.get(name) for name in _UNSUPPORTED_ENV)


class RestRegistryReader:
    """Aliases and versions of registered models at one MLflow tracking URI."""

    def __init__(self, tracking_uri: str, *, timeout_s: float = 5.0) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"RestRegistryReader({self.tracking_uri!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "mlops-operator"}
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user, password = (
            os.environ.get("MLFLOW_TRACKING_USERNAME"),
            os.environ.get("MLFLOW_TRACKING_PASSWORD"),
        )
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return headers

    def _context(self) -> ssl.SSLContext | None:
        if not self.tracking_uri.lower().startswith("https"):
            return None
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            return ssl._create_unverified_context()  # noqa: S323  (what MlflowClient does with this setting)
        return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)

    def _get(self, what: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.tracking_uri}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self._headers())  # noqa: S310  (http(s) only)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._context()) as response:  # noqa: S310
                body: dict[str, Any] = json.loads(response.read() or b"{}")
                return body
        except urllib.error.HTTPError as error:
            raise _http_error(self.tracking_uri, what, error) from error
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise RegistryUnavailableError(
                f"MLflow at {self.tracking_uri} is not reachable: {reason}"
            ) from error

    def resolve_alias(self, name: str, alias: str) -> int:
        """The version number holding ``alias`` of ``name`` (ModelNotFoundError when either is missing)."""
        body = self._get(
            f"resolve alias {alias} of model {name}",
            "registered-models/alias",
            {"name": name, "alias": alias},
        )
        return _version(body, f"alias {alias} of model {name}")

    def get_version(self, name: str, version: int) -> int:
        """``version`` when model ``name`` has it (ModelNotFoundError otherwise)."""
        body = self._get(
            f"get version {version} of model {name}",
            "model-versions/get",
            {"name": name, "version": str(version)},
        )
        return _version(body, f"version {version} of model {name}")


def _version(body: dict[str, Any], what: str) -> int:
    try:
        return int(body["model_version"]["version"])
    except (KeyError, TypeError, ValueError) as error:
        raise RegistryError(f"{what}: unexpected answer from MLflow: {str(body)[:200]}") from error


def _http_error(uri: str, what: str, error: urllib.error.HTTPError) -> RegistryError:
    try:
        payload = json.loads(error.read() or b"{}")
    except (OSError, ValueError):
        payload = {}
    code = str(payload.get("error_code") or "")
    message = " ".join(str(payload.get("message") or error.reason).split())[:400]
    if error.code in (401, 403):
        return RegistryUnavailableError(f"MLflow at {uri} refused the credentials ({what}): {message}")
    if error.code == 404 or code == "RESOURCE_DOES_NOT_EXIST":
        return ModelNotFoundError(f"{what}: not found ({message})")
    if code == "INVALID_PARAMETER_VALUE" and "not found" in message.lower():
        return ModelNotFoundError(f"{what}: not found ({message})")  # MLflow's answer for a missing alias
    if error.code == 429 or error.code >= 500:
        return RegistryUnavailableError(f"{what} at {uri} failed: HTTP {error.code} {message}")
    return RegistryError(f"{what} failed: HTTP {error.code} {message}")


_cache: dict[str, RestRegistryReader] = {}
_cache_lock = threading.Lock()


def reader_for(tracking_uri: str) -> RestRegistryReader:
    with _cache_lock:
        reader = _cache.get(tracking_uri)
        if reader is None:
            reader = _cache[tracking_uri] = RestRegistryReader(tracking_uri)
        return reader
