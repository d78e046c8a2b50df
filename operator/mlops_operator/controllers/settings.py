"""Operator-wide kopf settings: the ``mlops.dev/`` prefix for kopf's own annotations and finalizer,
peering for HA, watch timeouts and event posting. Applied once at start-up."""

import logging
import os
import random
from concurrent.futures import Executor
from typing import Any

import kopf

from mlops_operator.api.v1alpha1 import GROUP

#: kopf's finalizer on objects that need cleanup before deletion.
FINALIZER = f"{GROUP}/finalizer"
#: Name of the kopf peering object used when several replicas run (one acts, the others wait).
PEERING_NAME = "mlops-operator"


_current: list[kopf.OperatorSettings] = []


def current() -> kopf.OperatorSettings | None:
    """The running operator's settings (None before start-up), for code kopf does not hand them to."""
    return _current[0] if _current else None


def handler_executor() -> Executor | None:
    """kopf's thread pool for sync handlers (settings.execution), for work a coroutine handler hands off;
    None (asyncio's default pool) before the operator started."""
    settings = current()
    return settings.execution.executor if settings is not None else None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    _current[:] = [settings]
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.peering.name = PEERING_NAME
    settings.peering.mandatory = False
    # kopf pauses every peer of equal priority: a random priority makes exactly one replica act (the
    # highest); the others pause until it is gone. MLOPS_PEERING_PRIORITY pins it.
    settings.peering.priority = int(os.environ.get("MLOPS_PEERING_PRIORITY") or random.randint(1, 2**30))
    # Server-side watch timeout + client-side guard: a silently stalled watch is re-established.
    # MLOPS_WATCH_SERVER_TIMEOUT / MLOPS_WATCH_CLIENT_TIMEOUT (seconds) override them (fault tests).
    # (the apiserver refuses a fractional timeoutSeconds)
    settings.watching.server_timeout = int(float(os.environ.get("MLOPS_WATCH_SERVER_TIMEOUT") or 300))
    settings.watching.client_timeout = float(os.environ.get("MLOPS_WATCH_CLIENT_TIMEOUT") or 330)
    # How long a silent peer counts as alive: a standby takes over at most this long after the active
    # replica dies (MLOPS_PEERING_LIFETIME, seconds; kopf's default 60).
    settings.peering.lifetime = int(os.environ.get("MLOPS_PEERING_LIFETIME") or 60)
    settings.watching.connect_timeout = 30
    # Only kopf's warnings and errors become Kubernetes Events: its INFO events ("Handler ... succeeded",
    # "Creation is processed") cost two writes per handled object and say nothing our conditions do not.
    settings.posting.level = logging.WARNING
    # One kopf worker (an asyncio task) per object with pending events; it lingers idle_timeout after its
    # last event. A small limit with kopf's 5 s linger capped throughput at ~limit/5 new objects per second
    # (64 -> ~13/s): a burst of creates queued for minutes. Workers are cheap; let them go sooner.
    settings.queueing.worker_limit = int(os.environ.get("MLOPS_WORKER_LIMIT") or 1000)
    settings.queueing.idle_timeout = 1.0
    # Sync handlers run in kopf's thread pool (default: cores + 4 threads). A reconcile mostly waits on the
    # apiserver, so a small pool queues events behind each other at burst rates (50 creates/s).
    settings.execution.max_workers = int(os.environ.get("MLOPS_WORKER_THREADS") or 24)
