"""Which optional APIs the apiserver serves (Gateway API's HTTPRoute, KEDA's ScaledObject), by API
discovery, cached for ``MLOPS_DISCOVERY_TTL_SECONDS`` (default 60): installing the CRDs later is picked up
on a following reconcile, without restarting the operator.

Discovery documents (``/apis/<group>/<version>``) are readable by every authenticated client (the
``system:discovery`` ClusterRole), so this needs no RBAC of its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from mlops_operator.controllers import apiserver, kube
from mlops_operator.controllers.apiserver import ApiError

logger = logging.getLogger(__name__)

ENV_TTL: Final = "MLOPS_DISCOVERY_TTL_SECONDS"
DEFAULT_TTL_SECONDS: Final = 60.0

#: (group/version, kind): the optional kinds the ModelDeployment controller may render.
HTTPROUTE: Final = ("gateway.networking.k8s.io/v1", "HTTPRoute")
SCALEDOBJECT: Final = ("keda.sh/v1alpha1", "ScaledObject")


def _ttl() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_TTL, "") or DEFAULT_TTL_SECONDS))
    except ValueError:
        return DEFAULT_TTL_SECONDS


def _fetch_kinds(group_version: str) -> frozenset[str] | None:
    """Kinds served under ``/apis/<group_version>``; None when the group/version is not served."""
    try:
        document = kube.with_retries(lambda: apiserver.request("GET", f"/apis/{group_version}"))
    except ApiError as error:
        if error.status == 404:
            return None
        raise
    resources = document.get("resources") or ()
    return frozenset(r["kind"] for r in resources if "/" not in r.get("name", "/"))


class Discovery:
    """Served kinds per group/version, each cached for ``ttl`` seconds. Thread-safe (kopf runs sync
    handlers in a thread pool)."""

    def __init__(
        self,
        fetch: Callable[[str], frozenset[str] | None] = _fetch_kinds,
        ttl: Callable[[], float] = _ttl,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    def served(self, api_version: str, kind: str) -> bool:
        """Whether ``kind`` of ``api_version`` is served now (as of at most ``ttl`` seconds ago). An
        apiserver error counts as not served this time and is asked again on the next call."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(api_version)
            if cached is not None and now - cached[0] < self._ttl():
                return kind in cached[1]
        try:
            kinds = self._fetch(api_version) or frozenset()
        except Exception as error:  # discovery trouble must not fail the reconcile: retried next time
            logger.warning("API discovery of %s failed: %s", api_version, error)
            return False
        with self._lock:
            previous = self._cache.get(api_version)
            if previous is not None and (kind in previous[1]) != (kind in kinds):
                logger.info("%s %s is %s", api_version, kind, "served now" if kind in kinds else "gone")
            self._cache[api_version] = (now, kinds)
        return kind in kinds

    def forget(self, api_version: str) -> None:
        """Drop the cached answer (e.g. after a 404 from an apply: the CRD was removed)."""
        with self._lock:
            self._cache.pop(api_version, None)


discovery = Discovery()


def served(api_version: str, kind: str) -> bool:
    return discovery.served(api_version, kind)
