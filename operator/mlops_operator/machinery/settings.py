"""kopf's settings for this operator: the ``mlops.dev/`` prefix for kopf's own annotations and finalizer,
peering for HA, watch timeouts, event posting and queueing, from the operator's
:class:`~mlops_operator.config.OperatorConfig`. :class:`KopfSettings` applies them at start-up (the runner
registers :meth:`KopfSettings.configure` as a startup handler) and keeps the running settings for the code
kopf does not hand them to (the peering check, the handlers' thread pool).
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from typing import Any

import kopf

from mlops_operator.config import OperatorConfig


class KopfSettings:
    def __init__(self, config: OperatorConfig, prefix: str, peering_name: str) -> None:
        self.config = config
        self.prefix = prefix
        self.peering_name = peering_name
        self._current: kopf.OperatorSettings | None = None

    @property
    def finalizer(self) -> str:
        """kopf's finalizer on objects that need cleanup before deletion."""
        return f"{self.prefix}/finalizer"

    def current(self) -> kopf.OperatorSettings | None:
        """The running operator's settings (None before start-up)."""
        return self._current

    def handler_executor(self) -> Executor | None:
        """kopf's thread pool for sync handlers (settings.execution), for work a coroutine handler hands
        off; None (asyncio's default pool) before the operator started."""
        return self._current.execution.executor if self._current is not None else None

    def configure(self, settings: kopf.OperatorSettings, **_: Any) -> None:
        """kopf's startup handler."""
        config = self.config
        self._current = settings
        settings.persistence.finalizer = self.finalizer
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=self.prefix)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=self.prefix, key="last-handled-configuration"
        )
        settings.peering.name = self.peering_name
        settings.peering.mandatory = False
        # kopf pauses every peer of equal priority: a random priority (the default) makes exactly one
        # replica act (the highest); the others pause until it is gone.
        settings.peering.priority = config.peering_priority
        # Server-side watch timeout + client-side guard: a silently stalled watch is re-established.
        settings.watching.server_timeout = config.watch_server_timeout_seconds
        settings.watching.client_timeout = config.watch_client_timeout_seconds
        # How long a silent peer counts as alive: a standby takes over at most this long after the active
        # replica dies.
        settings.peering.lifetime = config.peering_lifetime_seconds
        settings.watching.connect_timeout = 30
        # Only kopf's warnings and errors become Kubernetes Events: its INFO events ("Handler ... succeeded",
        # "Creation is processed") cost two writes per handled object and say nothing our conditions do not.
        settings.posting.level = logging.WARNING
        # One kopf worker (an asyncio task) per object with pending events; it lingers idle_timeout after
        # its last event. A small limit with kopf's 5 s linger capped throughput at ~limit/5 new objects per
        # second (64 -> ~13/s): a burst of creates queued for minutes. Workers are cheap; let them go sooner.
        settings.queueing.worker_limit = config.worker_limit
        settings.queueing.idle_timeout = 1.0
        # Sync handlers run in kopf's thread pool (default: cores + 4 threads). A reconcile mostly waits on
        # the apiserver, so a small pool queues events behind each other at burst rates (50 creates/s).
        settings.execution.max_workers = config.worker_threads
