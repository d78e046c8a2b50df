"""Periodic resync of objects whose state changes outside Kubernetes (MLflow progress, aliases, drift).

kopf's timers would do this per object, but kopf puts its finalizer on every object with a timer: an object
then cannot be deleted while the operator is down, and each create costs one more write. Instead one loop
per operator lists each registered kind every ``interval`` seconds (in pages of ``PAGE_SIZE``) and
reconciles the objects that need it (in worker threads, a few at a time), limited to the namespaces the
operator watches. A pass adds a look where events did not bring one: an object they reconciled within the
last interval is left to the next pass (``when`` says so), so looks are at most two intervals apart.
The runner registers each kind and hands :meth:`ResyncLoop.start` / :meth:`ResyncLoop.stop` to kopf as
startup and cleanup handlers; a standby replica (``standby``) skips its passes, as kopf pauses its handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fnmatch
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import kopf

from mlops_operator.kube.client import KubeClient

logger = logging.getLogger(__name__)

#: Reconciles run at once by the resync loop (each is a blocking call in a worker thread).
CONCURRENCY: Final = 8
#: Objects per list request of a pass.
PAGE_SIZE: Final = 250


@dataclass
class Resync:
    api_version: str
    kind: str
    interval: float
    reconcile: Callable[[Mapping[str, Any]], Any]
    when: Callable[[Mapping[str, Any]], bool] = lambda _body: True
    next_due: float = field(default=0.0)


def _matches(namespace: str, pattern: str) -> bool:
    """kopf's pattern syntax: comma-separated globs, ``!`` excludes, a leading exclusion implies ``*``."""
    globs = [glob.strip() for glob in pattern.split(",")]
    if not globs or globs[0].startswith("!"):
        globs.insert(0, "*")
    matched = first = fnmatch.fnmatch(namespace, globs[0])
    for glob in globs[1:]:
        if glob.startswith("!"):
            matched = matched and not fnmatch.fnmatch(namespace, glob[1:])
        else:
            matched = matched or (first and fnmatch.fnmatch(namespace, glob))
    return matched


def watched(namespace: str, patterns: Sequence[str]) -> bool:
    """``namespace`` is one the operator watches (``patterns``: kopf's syntax; empty: cluster-wide)."""
    return not patterns or any(_matches(namespace, p) for p in patterns)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``) after a pass: a listing of every
    object and the reconciles it caused leave freed memory the process would otherwise keep as RSS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class ResyncLoop:
    def __init__(
        self,
        client: KubeClient,
        namespaces: Sequence[str] = (),
        standby: Callable[[Sequence[str]], bool] = lambda _namespaces: False,
    ) -> None:
        self.client = client
        self.namespaces = list(namespaces)
        self.standby = standby
        self.entries: list[Resync] = []

    def register(
        self,
        api_version: str,
        kind: str,
        interval: float,
        reconcile: Callable[[Mapping[str, Any]], Any],
        when: Callable[[Mapping[str, Any]], bool] = lambda _body: True,
    ) -> None:
        self.entries.append(Resync(api_version, kind, interval, reconcile, when))

    async def _run_due(
        self, loop: asyncio.AbstractEventLoop, semaphore: asyncio.Semaphore, entry: Resync
    ) -> None:
        if await loop.run_in_executor(None, self.standby, self.namespaces):
            return  # kopf pauses a standby replica's handlers; this loop must pause with them
        due: list[Mapping[str, Any]] = []
        token: str | None = None
        while True:  # page by page: only the due objects are kept, not a listing of every object at once
            page, token = await loop.run_in_executor(
                None, self.client.list_page, entry.api_version, entry.kind, PAGE_SIZE, token
            )
            due.extend(
                item
                for item in page
                if watched(item["metadata"]["namespace"], self.namespaces)
                and item["metadata"].get("deletionTimestamp") is None
                and entry.when(item)
            )
            if not token:
                break

        async def one(item: Mapping[str, Any]) -> None:
            async with semaphore:
                try:
                    await loop.run_in_executor(None, entry.reconcile, item)
                except Exception:
                    name = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
                    logger.exception("resync of %s %s failed", entry.kind, name)

        await asyncio.gather(*(one(item) for item in due))

    async def run(self) -> None:
        """Pass over every registered kind whose interval elapsed, forever."""
        loop = asyncio.get_running_loop()
        semaphore = asyncio.Semaphore(CONCURRENCY)
        while True:
            now = time.monotonic()
            ran = False
            for entry in self.entries:
                if now < entry.next_due:
                    continue
                entry.next_due = now + entry.interval
                ran = True
                try:
                    await self._run_due(loop, semaphore, entry)
                except Exception:
                    logger.exception("resync of %s failed", entry.kind)
            if ran:
                await loop.run_in_executor(None, release_free_memory)
            await asyncio.sleep(0.5)

    async def start(self, memo: kopf.Memo, **_: Any) -> None:
        """kopf's startup handler: the first passes come a few seconds after start."""
        now = time.monotonic()
        for entry in self.entries:
            entry.next_due = now + min(entry.interval, 2.0)
        memo["resync"] = asyncio.create_task(self.run())

    async def stop(self, memo: kopf.Memo, **_: Any) -> None:
        """kopf's cleanup handler."""
        task = memo.get("resync")
        if task is not None:
            task.cancel()
