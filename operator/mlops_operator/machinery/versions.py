"""The resourceVersion of the latest state the operator knows per object uid, from its watch events and its
own status patches. A body older than that (a resync listing taken before a reconcile wrote the status) is
re-read before it is reconciled: a stale ``previous`` status would patch and announce again what was
already written. One :class:`KnownVersions` per kind, shared by its triggers, serialization and publisher.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any


class KnownVersions:
    def __init__(self) -> None:
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()

    def note(self, obj: Mapping[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        uid, version = metadata.get("uid"), metadata.get("resourceVersion")
        if uid and version:
            with self._lock:
                self._versions[uid] = version

    def forget(self, uid: str) -> None:
        with self._lock:
            self._versions.pop(uid, None)

    def is_stale(self, body: Mapping[str, Any]) -> bool:
        """``body`` is not the latest state the operator knows of the object."""
        metadata = body.get("metadata") or {}
        with self._lock:
            known = self._versions.get(metadata.get("uid") or "")
        return known is not None and known != metadata.get("resourceVersion")

    def __len__(self) -> int:
        return len(self._versions)
