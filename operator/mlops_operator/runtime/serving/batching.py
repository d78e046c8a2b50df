"""Micro-batching: requests that arrive within ``max_delay_s`` of each other are concatenated into one
model call (up to ``max_rows`` rows) and the outputs are split back, each caller getting exactly its own
rows. Off unless ``MLOPS_MAX_BATCH_SIZE`` > 1.

Requests are validated before they get here (a malformed request is answered 4xx on its own and never joins
a batch). Only requests of the same shape join (same columns/tensors, dtypes and trailing dimensions, no
inference parameters); anything else runs alone. When a request is the only one in flight, its batch
does not wait ``max_delay_s`` but only for the requests that are ready on the event loop (those that
arrived together with it), so a lone client pays no delay. A model exception fails the batch it happened
in (each caller gets the 5xx); if the model refuses a merged batch as input, or returns a row count that
does not match, each request of that batch is predicted on its own, so one request never decides another's
answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ModelError, RequestError
from .outputs import Outputs
from .payload import Batch

Runner = Callable[[Batch], Awaitable[Outputs]]


def _signature(batch: Batch) -> tuple[Any, ...] | None:
    """What must be equal for two requests to share a model call; None: this one runs alone."""
    if batch.params:
        return None

    def arrays(named: dict[str, npt.NDArray[Any]]) -> tuple[Any, ...]:
        return tuple((k, v.dtype.str, v.shape[1:]) for k, v in named.items())

    return (arrays(batch.columns), arrays(batch.tensors), batch.matrix is not None)


def concat(batches: Sequence[Batch]) -> Batch:
    """One batch of all rows, in order (the batches have equal signatures)."""
    first = batches[0]
    rows = sum(b.rows for b in batches)
    if first.matrix is not None:
        matrix = np.concatenate([b.matrix for b in batches if b.matrix is not None], axis=0)
        return Batch(rows=rows, columns={k: matrix[:, j] for j, k in enumerate(first.columns)}, matrix=matrix)
    return Batch(
        rows=rows,
        columns={k: np.concatenate([b.columns[k] for b in batches], axis=0) for k in first.columns},
        tensors={k: np.concatenate([b.tensors[k] for b in batches], axis=0) for k in first.tensors},
    )


def split(outputs: Outputs, rows: Sequence[int]) -> list[Outputs] | None:
    """Each request's rows of the outputs; None when an output does not have one row per input row."""
    total = sum(rows)
    if not outputs.arrays or any(a.ndim == 0 or a.shape[0] != total for a in outputs.arrays.values()):
        return None
    parts = []
    start = 0
    for count in rows:
        parts.append(
            Outputs({k: a[start : start + count] for k, a in outputs.arrays.items()}, outputs.orient)
        )
        start += count
    return parts


@dataclass
class BatchStats:
    calls: int = 0
    """Model calls made for batched requests."""
    requests: int = 0
    """Requests answered through the batcher."""


class MicroBatcher:
    """Collects concurrent requests on the event loop and runs them through ``run`` together."""

    def __init__(
        self, run: Runner, max_rows: int, max_delay_s: float, in_flight: Callable[[], int] | None = None
    ) -> None:
        """``in_flight``: how many requests the server is handling now (this one included)."""
        self._run = run
        self._in_flight = in_flight
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._pending: list[tuple[Batch, asyncio.Future[Outputs]]] = []
        self._pending_rows = 0
        self._signature: tuple[Any, ...] | None = None
        self._timer: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = BatchStats()

    async def predict(self, batch: Batch) -> Outputs:
        self.stats.requests += 1
        signature = _signature(batch)
        if signature is None or batch.rows >= self.max_rows:
            self.stats.calls += 1
            return await self._run(batch)
        if self._pending and (
            signature != self._signature or self._pending_rows + batch.rows > self.max_rows
        ):
            self._flush()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        self._pending.append((batch, future))
        self._pending_rows += batch.rows
        self._signature = signature
        if self._pending_rows >= self.max_rows:
            self._flush()
        elif self._timer is None:
            if self._in_flight is not None and self._in_flight() <= 1:
                # nobody else is being handled: flush once the requests ready on the loop had their turn
                self._timer = loop.call_soon(self._flush)
            else:
                self._timer = loop.call_later(self.max_delay_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group, self._pending, self._pending_rows = self._pending, [], 0
        if group:
            task = asyncio.get_running_loop().create_task(self._execute(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, group: list[tuple[Batch, asyncio.Future[Outputs]]]) -> None:
        self.stats.calls += 1
        if len(group) == 1:
            await self._alone(*group[0])
            return
        try:
            outputs = await self._run(concat([b for b, _ in group]))
        except RequestError:
            # the model refused the merged input: find out whose rows it refuses
            await self._each_alone(group)
            return
        except ModelError as error:
            for _, future in group:
                _settle(future, exception=ModelError(error.message))
            return
        except Exception as error:
            for _, future in group:
                _settle(future, exception=error)
            return
        parts = split(outputs, [b.rows for b, _ in group])
        if parts is None:  # not one output row per input row: the model is not row-wise, ask it per request
            await self._each_alone(group)
            return
        for (_, future), part in zip(group, parts, strict=True):
            _settle(future, result=part)

    async def _each_alone(self, group: list[tuple[Batch, asyncio.Future[Outputs]]]) -> None:
        for batch, future in group:
            self.stats.calls += 1
            await self._alone(batch, future)

    async def _alone(self, batch: Batch, future: asyncio.Future[Outputs]) -> None:
        try:
            _settle(future, result=await self._run(batch))
        except Exception as error:
            _settle(future, exception=error)


def _settle(
    future: asyncio.Future[Outputs], *, result: Outputs | None = None, exception: BaseException | None = None
) -> None:
    if future.done():  # the caller went away
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        assert result is not None
        future.set_result(result)
