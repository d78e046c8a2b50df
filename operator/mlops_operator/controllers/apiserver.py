"""The operator's own HTTP connection to the kube-apiserver (what ``kube.py`` sends its requests through):
credentials, one urllib3 connection pool shared by the handler threads, and ``ApiError`` for a non-2xx
answer.

Credentials come from kopf's login functions: the pod's service account, else the kubeconfig. The same
``ConnectionInfo`` is handed to kopf by ``@kopf.on.login``, so kopf's watches and our requests use one
identity, and either logs in again after a 401 (a rotated service-account token, an expired exec token).
A kubeconfig user that needs a credential plugin (``exec``, a token-less ``auth-provider``) logs in
through the official kubernetes client, which kopf knows how to drive; otherwise that client is never
imported (``cli.py`` keeps it out: it would cost ~25 MiB of every operator's memory).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode

import kopf
import orjson
import urllib3

from mlops_operator import __version__, kubeconfig

logger = logging.getLogger(__name__)

#: Connections kept open to the apiserver: at least one per handler thread (settings.py's max_workers).
POOL_SIZE: Final = 32
TIMEOUT: Final = urllib3.Timeout(connect=10.0, read=60.0)
#: Accept header asking for only the metadata of the object in the answer (``PartialObjectMetadata``): for
#: writes whose answer is only needed for its resourceVersion, the apiserver serializes and we parse a
#: fraction of the object.
METADATA_ONLY: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class ApiError(Exception):
    """A non-2xx answer: ``status`` (HTTP code), ``reason`` (its phrase), ``body`` (the text: a
    ``metav1.Status`` as JSON for API errors) and ``headers``."""

    def __init__(self, status: int, reason: str, body: str = "", headers: Mapping[str, str] | None = None):
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = dict(headers or {})
        super().__init__(f"({status}) {reason}: {self.message or body[:300]}")

    @property
    def message(self) -> str:
        """The ``message`` of the ``metav1.Status`` body (what kubectl prints), or empty."""
        try:
            status = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return ""
        return str(status.get("message") or "") if isinstance(status, dict) else ""


def login() -> kopf.ConnectionInfo:
    """Log in as kopf would: service account in a pod, else the kubeconfig's current context."""
    settings = kopf.OperatorSettings()
    if kubeconfig.needs_credential_plugin():
        info = kopf.login_via_client(logger=logger, settings=settings)
    else:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
    if info is None:
        raise kopf.LoginError("no service-account token in this pod and no kubeconfig: cannot log in")
    return info


class Connection:
    """A pool of keep-alive connections to one apiserver with one identity."""

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self.info = info
        self.server = info.server.rstrip("/")
        self.headers = {
            **info.as_http_headers(),
            "Accept": "application/json",
            "User-Agent": f"mlops-operator/{__version__}",
        }
        options: dict[str, Any] = {"maxsize": POOL_SIZE, "timeout": TIMEOUT, "retries": False}
        if self.server.startswith("https:"):
            options["ssl_context"] = info.as_ssl_context()
        self.pool: urllib3.PoolManager = (
            urllib3.ProxyManager(info.proxy_url, **options)
            if info.proxy_url
            else urllib3.PoolManager(**options)
        )

    def send(
        self, method: str, url: str, body: bytes | None, content_type: str, accept: str | None
    ) -> urllib3.BaseHTTPResponse:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        return self.pool.request(method, url, body=body, headers=headers)


_lock = threading.Lock()
_connection: Connection | None = None


def connection() -> Connection:
    """The current connection (logging in on first use)."""
    global _connection
    with _lock:
        if _connection is None:
            _connection = Connection(login())
        return _connection


def relogin(stale: Connection | None = None) -> Connection:
    """Log in again, unless another thread already replaced ``stale`` (None: unconditionally)."""
    global _connection
    with _lock:
        if stale is None or _connection is stale or _connection is None:
            _connection = Connection(login())
        return _connection


def request(
    method: str,
    path: str,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
    accept: str | None = None,
) -> Any:
    """Send one request; the decoded JSON answer (None when empty). Raises ApiError for a non-2xx answer
    and urllib3's errors for a failed connection (``kube.with_retries`` retries the transient ones). A 401
    logs in again and resends once. ``accept``: e.g. METADATA_ONLY."""
    current = connection()
    payload = orjson.dumps(body) if body is not None else None
    url_path = f"{path}?{urlencode(query)}" if query else path
    response = current.send(method, current.server + url_path, payload, content_type, accept)
    if response.status == 401:
        current = relogin(current)
        response = current.send(method, current.server + url_path, payload, content_type, accept)
    if not 200 <= response.status <= 299:
        raise ApiError(
            response.status, response.reason or "", response.data.decode(errors="replace"), response.headers
        )
    return orjson.loads(response.data) if response.data else None


@kopf.on.login()
def login_for_kopf(**_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials: a fresh login (kopf asks at start and again after a 401), which our own requests
    use from now on too."""
    return relogin().info
