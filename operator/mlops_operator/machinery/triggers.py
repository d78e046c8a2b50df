"""When to reconcile, without writing anything to the object to remember it.

kopf's create/update/resume handlers keep their memory on the object: a ``last-handled-configuration``
annotation (the diff base) is patched onto every object after its first handling and after each spec change,
one extra API write per object and change. TrainingJobs and ModelDeployments use a plain event handler
instead, with the object's own record as the memory: ``status.observedGeneration`` says which spec the
operator last reconciled (every reconcile writes it), so

- an object seen for the first time (just created, or on operator start) is reconciled unless its status
  already records the current generation (then the resync loop looks at it anyway, a few seconds after start);
- after that, an event reconciles it when its *trigger key* changes: the generation (spec edits) plus the
  annotations that mean something to the controller (e.g. a rollback request). Our own status patches and
  foreign metadata edits change neither, so they cost nothing.

A reconcile that raises is retried with exponential backoff (the resync loop would get to it too).

:class:`Rails` puts these together for one kind: its parent events, its children's events and every other
caller (the resync loop, retries) reconcile through one :class:`Serialized` entry point. Kind-agnostic: the
runner builds one ``Rails`` per kind with that kind's reconcile and trigger key.

Child events (a Job or Deployment changed) arrive in bursts — created, pod created, pod running, ready — so
:class:`Coalescer` runs one reconcile of the parent per ``delay`` window instead of one per event: fewer reads
and fewer intermediate status patches.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Final

from mlops_operator.api.v1alpha1.common import plain
from mlops_operator.machinery.versions import KnownVersions

logger = logging.getLogger(__name__)

#: Seconds a child event waits for the rest of its burst before the parent is reconciled.
COALESCE_SECONDS: Final = 0.5
#: First retry delay of a failed reconcile; doubled per failure, at most MAX_RETRY_SECONDS.
RETRY_SECONDS: Final = 5.0
MAX_RETRY_SECONDS: Final = 120.0

TriggerKey = Callable[[Mapping[str, Any]], Hashable]
Reread = Callable[[str, str], Mapping[str, Any] | None]


def generation_key(body: Mapping[str, Any]) -> Hashable:
    generation: int | None = body["metadata"].get("generation")
    return generation


def generation_and_annotations_key(body: Mapping[str, Any]) -> Hashable:
    """A spec change or any annotation change (a request such as a rollback or an approval, or a nudge to
    look again now) calls for a reconcile; status patches do not. Annotations are remembered as a digest."""
    annotations = body["metadata"].get("annotations") or {}
    return (body["metadata"].get("generation"), hash(tuple(sorted(annotations.items()))))


def observed_current(body: Mapping[str, Any]) -> bool:
    """The status records a reconcile of the current spec."""
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    return generation is not None and status.get("observedGeneration") == generation


def owner_keys(child: Mapping[str, Any], api_version: str, kind: str) -> list[tuple[str, str]]:
    """(namespace, name) of each owner of ``child`` of the given kind."""
    metadata = child.get("metadata") or {}
    return [
        (metadata["namespace"], reference["name"])
        for reference in metadata.get("ownerReferences") or ()
        if reference.get("kind") == kind and reference.get("apiVersion") == api_version
    ]


class ParentTriggers:
    """The trigger keys last reconciled, per object uid (in memory: a restart starts from the statuses)."""

    def __init__(self, key: TriggerKey = generation_key, versions: KnownVersions | None = None) -> None:
        self.key = key
        self.versions = versions if versions is not None else KnownVersions()
        self._handled: dict[str, Hashable] = {}
        self._lock = threading.Lock()

    def due(self, body: Mapping[str, Any], event_type: str | None) -> bool:
        """Whether this event calls for a reconcile."""
        metadata = body["metadata"]
        uid = metadata.get("uid", "")
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            self.forget(uid)
            self.versions.forget(uid)
            return False
        self.versions.note(body)
        key = self.key(body)
        with self._lock:
            if uid not in self._handled:
                if observed_current(body):
                    self._handled[uid] = key  # reconciled before (this process or an earlier one)
                    return False
                return True
            return self._handled[uid] != key

    def handled(self, body: Mapping[str, Any]) -> None:
        with self._lock:
            self._handled[body["metadata"].get("uid", "")] = self.key(body)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._handled.pop(uid, None)

    def __len__(self) -> int:
        return len(self._handled)


class Serialized:
    """``reconcile`` that runs for one object at a time, whatever called it (its event, child events, the
    resync loop, a retry): two concurrent passes would both find a child absent and both apply it. A caller
    that had to wait, or came with a body older than the latest state seen (a resync listing), reconciles
    the object as it is now (re-read), not the body it came with."""

    def __init__(
        self,
        reconcile: Callable[[Mapping[str, Any]], Any],
        reread: Reread,
        versions: KnownVersions | None = None,
    ) -> None:
        self.reconcile = reconcile
        self.reread = reread
        self.versions = versions if versions is not None else KnownVersions()
        self._locks: dict[tuple[str, str], list[Any]] = {}  # key -> [lock, users]
        self._guard = threading.Lock()
        self._finished: dict[tuple[str, str], float] = {}  # key -> monotonic time of the last reconcile

    def __call__(self, body: Mapping[str, Any]) -> Any:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        lock: threading.Lock = entry[0]
        try:
            current: Mapping[str, Any] | None = body
            if not lock.acquire(blocking=False):
                lock.acquire()
                current = self.reread(*key)
            elif self.versions.is_stale(body):
                current = self.reread(*key)
            try:
                if current is None or current["metadata"].get("deletionTimestamp"):
                    self._finished.pop(key, None)
                    return None
                result = self.reconcile(current)
                self._finished[key] = time.monotonic()
                return result
            finally:
                lock.release()
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]

    def reconciled_within(self, body: Mapping[str, Any], seconds: float) -> bool:
        """The object was reconciled successfully, by any caller, less than ``seconds`` ago: a periodic
        look (the resync loop) has nothing to add yet."""
        finished = self._finished.get((body["metadata"]["namespace"], body["metadata"]["name"]))
        return finished is not None and time.monotonic() - finished < seconds

    def forget(self, body: Mapping[str, Any]) -> None:
        """The object was deleted."""
        self._finished.pop((body["metadata"]["namespace"], body["metadata"]["name"]), None)

    def by_name(self, key: tuple[str, str]) -> Any:
        """Reconcile the object ``(namespace, name)`` as it is now (e.g. after events of its children)."""
        body = self.reread(*key)
        return None if body is None else self(body)


class Scheduler:
    """Delayed calls on one timer thread, run in a small pool (not one thread per pending call). The timer
    thread starts with the first call."""

    def __init__(self, workers: int = 8) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._wake:
            if self._thread is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="mlops-delayed")
                self._thread = threading.Thread(target=self._run, name="mlops-scheduler", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._counter), fn))
            self._wake.notify()

    def _run(self) -> None:
        assert self._pool is not None
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                _, _, fn = heapq.heappop(self._heap)
            self._pool.submit(_logged, fn)


def _logged(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        logger.exception("delayed call failed")


class Coalescer:
    """Run ``action(key)`` once per burst of ``schedule(key)`` calls: the first call starts a ``delay`` timer,
    calls until it fires join it; a call while the action runs schedules one more run after it."""

    def __init__(
        self, action: Callable[[Any], None], scheduler: Scheduler, delay: float = COALESCE_SECONDS
    ) -> None:
        self.action = action
        self.scheduler = scheduler
        self.delay = delay
        self._pending: set[Hashable] = set()
        self._lock = threading.Lock()

    def schedule(self, key: Hashable) -> None:
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
        self.scheduler.call_later(self.delay, lambda: self._fire(key))

    def _fire(self, key: Hashable) -> None:
        with self._lock:
            self._pending.discard(key)  # events from now on schedule another run
        try:
            self.action(key)
        except Exception:
            logger.exception("reconcile after child events of %s failed", key)


class Rails:
    """Every way one kind's objects get reconciled, through one :class:`Serialized` entry point: its own
    events (when due, with retries), its children's events (coalesced), and direct calls (the resync loop).
    ``executor``: where a due reconcile runs (kopf's handler threads; None: asyncio's default pool);
    ``versions``: the kind's known resourceVersions, shared with its status publisher; ``forget``: what the
    kind's controller drops when an object is deleted (what it keeps in memory about it)."""

    def __init__(
        self,
        api_version: str,
        kind: str,
        reconcile: Callable[[Mapping[str, Any]], Any],
        reread: Reread,
        scheduler: Scheduler,
        *,
        versions: KnownVersions | None = None,
        trigger_key: TriggerKey = generation_key,
        executor: Callable[[], Executor | None] = lambda: None,
        forget: Callable[[Mapping[str, Any]], None] = lambda _body: None,
        coalesce_seconds: float = COALESCE_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        max_retry_seconds: float = MAX_RETRY_SECONDS,
    ) -> None:
        self.api_version = api_version
        self.kind = kind
        self.versions = versions if versions is not None else KnownVersions()
        self.triggers = ParentTriggers(trigger_key, self.versions)
        self.serialized = Serialized(reconcile, reread, self.versions)
        self.scheduler = scheduler
        self.after_child_events = Coalescer(self.serialized.by_name, scheduler, coalesce_seconds)
        self.executor = executor
        self.forget = forget
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds

    def __call__(self, body: Mapping[str, Any]) -> Any:
        """Reconcile now (serialized with every other caller)."""
        return self.serialized(body)

    def reconciled_within(self, body: Mapping[str, Any], seconds: float) -> bool:
        return self.serialized.reconciled_within(body, seconds)

    async def on_parent_event(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """The event handler of the kind, on kopf's event loop: reconcile when due, remember it, retry when
        it fails. Most events of a parent call for no reconcile (the echoes of our own status patches,
        metadata edits) and are decided here without a thread; the due ones reconcile in ``executor``, with
        a plain copy of the body."""
        if event_type == "DELETED":
            self.serialized.forget(body)
            self.forget(body)
        if self.triggers.due(body, event_type):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.executor(), self._reconcile_due, plain(body))

    def on_child_event(self, child: Mapping[str, Any]) -> None:
        """A child changed: reconcile each of its owners of this kind once its burst of events is over."""
        for key in owner_keys(child, self.api_version, self.kind):
            self.after_child_events.schedule(key)

    def _reconcile_due(self, body: Mapping[str, Any]) -> None:
        try:
            self.serialized(body)
        except Exception:
            metadata = body["metadata"]
            logger.exception("reconcile of %s/%s failed; retrying", metadata["namespace"], metadata["name"])
            self._retry_later(metadata["namespace"], metadata["name"], self.retry_seconds)
            return
        self.triggers.handled(body)

    def _retry_later(self, namespace: str, name: str, delay: float) -> None:
        def attempt() -> None:
            try:
                body = self.serialized.reread(namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return
                self.serialized(body)
            except Exception:
                logger.exception("retried reconcile of %s/%s failed", namespace, name)
                self._retry_later(namespace, name, min(delay * 2, self.max_retry_seconds))
                return
            self.triggers.handled(body)

        self.scheduler.call_later(delay, attempt)
