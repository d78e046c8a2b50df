"""Whether this replica is the standby of a peered pair, for work that kopf's peering does not pause.

kopf pauses its watch streams (and so every handler) while a live peer of higher priority exists, but
not the tasks an operator starts itself: the resync loop would keep reconciling on the standby. This
module reads the same peering object (``KopfPeering`` in each watched namespace, or the cluster-wide
``ClusterKopfPeering``) and applies kopf's rule: standby while another live peer has a priority at
least as high as ours. No peering (standalone, the CRD or the object missing): never standby.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import kopf

from mlops_operator.kube.connection import ApiError, ApiServer

logger = logging.getLogger(__name__)

_KOPF = "/apis/kopf.dev/v1"


def _live_rivals(status: Mapping[str, Any], priority: int, now: dt.datetime) -> list[str]:
    """Identities of live peers that make us pause (ours is the one entry with our own priority)."""
    rivals: list[str] = []
    ours_seen = False
    for identity, info in status.items():
        if not isinstance(info, Mapping):
            continue
        try:
            peer_priority = int(info.get("priority", 0))
            lastseen = dt.datetime.fromisoformat(str(info["lastseen"]))
            lifetime = dt.timedelta(seconds=int(info.get("lifetime", 60)))
        except (KeyError, TypeError, ValueError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=dt.UTC)
        if lastseen + lifetime <= now:
            continue  # dead
        if peer_priority == priority and not ours_seen:
            ours_seen = True
            continue
        if peer_priority >= priority:
            rivals.append(str(identity))
    return rivals


class Peering:
    """Reads the peering objects kopf keeps (as the apiserver ``api``) to tell whether this replica, with
    the running kopf ``settings``, is a standby."""

    def __init__(self, api: ApiServer, settings: Callable[[], kopf.OperatorSettings | None]) -> None:
        self.api = api
        self.settings = settings

    def _objects(self, settings: kopf.OperatorSettings, namespaces: Sequence[str]) -> list[Mapping[str, Any]]:
        name = settings.peering.name
        found: list[Mapping[str, Any]] = []
        try:
            if settings.peering.clusterwide:
                body = self.api.request("GET", f"{_KOPF}/clusterkopfpeerings/{name}")
                found.append(cast(Mapping[str, Any], body))
            else:
                # literal namespaces only: a glob's peering objects are not looked up
                for namespace in namespaces:
                    if namespace.startswith("!") or glob.has_magic(namespace) or "," in namespace:
                        continue
                    body = self.api.request("GET", f"{_KOPF}/namespaces/{namespace}/kopfpeerings/{name}")
                    found.append(cast(Mapping[str, Any], body))
        except ApiError as error:
            if error.status not in (403, 404):
                raise
        return found

    def standby(self, namespaces: Sequence[str] = ()) -> bool:
        """True while another live replica outranks this one (blocking: call it from a worker thread).
        ``namespaces``: the patterns the operator watches (kopf keeps a peering object in each)."""
        settings = self.settings()
        if settings is None or settings.peering.standalone:
            return False
        now = dt.datetime.now(dt.UTC)
        for body in self._objects(settings, namespaces):
            rivals = _live_rivals(body.get("status") or {}, int(settings.peering.priority), now)
            if rivals:
                logger.debug("standby: peers %s outrank this replica", rivals)
                return True
        return False
