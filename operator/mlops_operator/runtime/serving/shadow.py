"""Shadow traffic: the primary server mirrors a share of its successful inference requests to the
challenger's Service (``mode: shadow``), whose answers are discarded.

Configured by ``MLOPS_SHADOW_URL`` (base URL of the shadow Service) and ``MLOPS_SHADOW_PERCENT`` (0-100),
which the ModelDeployment controller sets on primary pods. Mirroring never delays or fails the primary
answer: requests are sent after the response, concurrently, at most ``max_inflight`` at a time (beyond that
they are dropped and counted), with a short timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def shadow_path(path: str) -> str:
    """The shadow serves another version of the same model: drop a ``/versions/<v>`` segment."""
    if path.startswith("/v2/models/"):
        parts = path.split("/")
        if len(parts) >= 7 and parts[4] == "versions":
            return "/".join(parts[:4] + parts[6:])
    return path


class ShadowMirror:
    def __init__(
        self,
        url: str,
        percent: float,
        *,
        max_inflight: int = 32,
        timeout_s: float = 5.0,
        random_fn: Callable[[], float] = random.random,
    ) -> None:
        self.url = url.rstrip("/")
        self.fraction = max(0.0, min(percent, 100.0)) / 100.0
        self.max_inflight = max_inflight
        self.timeout_s = timeout_s
        self._random = random_fn
        self._session: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped}

    def maybe_mirror(self, path: str, body: bytes) -> None:
        """Schedule a copy of the request (when sampled); returns at once."""
        if self.fraction <= 0.0 or (self.fraction < 1.0 and self._random() >= self.fraction):
            return
        if len(self._tasks) >= self.max_inflight:
            self.dropped += 1
            return
        task = asyncio.get_running_loop().create_task(self._send(shadow_path(path), body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, path: str, body: bytes) -> None:
        import aiohttp

        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            async with self._session.post(
                self.url + path, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                if response.status >= 500:
                    self.failed += 1
                else:
                    self.sent += 1
        except Exception as error:  # the shadow's trouble is never the primary's
            self.failed += 1
            if self.failed in (1, 10, 100, 1000) or self.failed % 10_000 == 0:
                log.warning("shadow request to %s failed (%d so far): %s", self.url, self.failed, error)

    async def close(self, timeout_s: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
        if self._session is not None:
            await self._session.close()
