"""Which optional APIs the apiserver serves (e.g. Gateway API's HTTPRoute, KEDA's ScaledObject), by API
discovery, each answer cached for a TTL (the operator's ``MLOPS_DISCOVERY_TTL_SECONDS``, default 60):
installing the CRDs later is picked up on a following reconcile, without restarting the operator.

Discovery documents (``/apis/<group>/<version>``) are readable by every authenticated client (the
``system:discovery`` ClusterRole), so this needs no RBAC of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from mlops_operator.kube.client import KubeClient
from mlops_operator.kube.connection import ApiError

logger = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS: Final = 60.0


def kinds_served_by(client: KubeClient) -> Callable[[str], frozenset[str] | None]:
    """The fetch function of a Discovery over ``client``: kinds served under ``/apis/<group_version>``;
    None when the group/version is not served."""

    def fetch(group_version: str) -> frozenset[str] | None:
        try:
            document = client.request("GET", f"/apis/{group_version}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        resources = document.get("resources") or ()
        return frozenset(r["kind"] for r in resources if "/" not in r.get("name", "/"))

    return fetch


class Discovery:
    """Served kinds per group/version, each cached for ``ttl`` seconds. Thread-safe (kopf runs sync
    handlers in a thread pool)."""

    def __init__(
        self,
        fetch: Callable[[str], frozenset[str] | None],
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = max(0.0, ttl)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    def served(self, api_version: str, kind: str) -> bool:
        """Whether ``kind`` of ``api_version`` is served now (as of at most ``ttl`` seconds ago). An
        apiserver error counts as not served this time and is asked again on the next call."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(api_version)
            if cached is not None and now - cached[0] < self._ttl:
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
