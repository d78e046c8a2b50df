"""The operator's own HTTP connection to the kube-apiserver (what ``client.py`` sends its requests through):
credentials, one urllib3 connection pool shared by the handler threads, and ``ApiError`` for a non-2xx
answer.

Credentials come from kopf's login functions: the pod's service account, else the kubeconfig. The runner
hands :meth:`ApiServer.login_for_kopf` to kopf as its login handler, so kopf's watches and our requests use
one identity, and either logs in again after a 401 (a rotated service-account token, an expired exec token).
A kubeconfig user that needs a credential plugin (``exec``, a token-less ``auth-provider``) logs in
through the official kubernetes client, which kopf knows how to drive; otherwise that client is never
imported (``cli.py`` keeps it out: it would cost ~25 MiB of every operator's memory).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlencode

import kopf
import orjson
import urllib3

from mlops_operator import __version__
from mlops_operator.kube import kubeconfig

logger = logging.getLogger(__name__)

#: Connections kept open to the apiserver: at least one per handler thread (the worker_threads setting).
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


class ApiServer:
    """The apiserver as the operator sees it: one identity, logged in on first use and again after a 401.
    Thread-safe; one per operator process, created by the runner and handed to whatever sends requests."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo] = login) -> None:
        self._login = login
        self._lock = threading.Lock()
        self._connection: Connection | None = None

    def connection(self) -> Connection:
        """The current connection (logging in on first use)."""
        with self._lock:
            if self._connection is None:
                self._connection = Connection(self._login())
            return self._connection

    def relogin(self, stale: Connection | None = None) -> Connection:
        """Log in again, unless another thread already replaced ``stale`` (None: unconditionally)."""
        with self._lock:
            if stale is None or self._connection is stale or self._connection is None:
                self._connection = Connection(self._login())
            return self._connection

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        accept: str | None = None,
    ) -> Any:
        """Send one request; the decoded JSON answer (None when empty). Raises ApiError for a non-2xx answer
        and urllib3's errors for a failed connection (``client.with_retries`` retries the transient ones). A
        401 logs in again and resends once. ``accept``: e.g. METADATA_ONLY."""
        current = self.connection()
        payload = orjson.dumps(body) if body is not None else None
        url_path = f"{path}?{urlencode(query)}" if query else path
        response = current.send(method, current.server + url_path, payload, content_type, accept)
        if response.status == 401:
            current = self.relogin(current)
            response = current.send(method, current.server + url_path, payload, content_type, accept)
        if not 200 <= response.status <= 299:
            raise ApiError(
                response.status,
                response.reason or "",
                response.data.decode(errors="replace"),
                response.headers,
            )
        return orjson.loads(response.data) if response.data else None

    def login_for_kopf(self, **_: Any) -> kopf.ConnectionInfo:
        """kopf's login handler: a fresh login (kopf asks at start and again after a 401), which our own
        requests use from now on too."""
        return self.relogin().info
