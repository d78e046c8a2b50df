"""Seeded data of the drift benchmark, in plain numpy (imported by run.py and by evidently_worker.py, which
runs in another virtual environment).

Feature j of the reference is normal with mean ``j % 7 - 3`` and standard deviation ``1 + (j % 5) / 2``
(every fourth feature is exponential instead). The live data is the same except features 0-9 (mean shifted
by 0.25 sigma) and 10-19 (variance 10% larger). Chunk i of a table is drawn from ``default_rng([seed, i])``,
so any chunk, and the whole table, can be regenerated alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

REFERENCE_SEED = 1
LIVE_SEED = 2
SHIFTED = range(0, 10)
WIDER = range(10, 20)


def _params(features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    j = np.arange(features)
    mean = (j % 7 - 3).astype(np.float64)
    std = 1.0 + (j % 5) / 2.0
    expo = j % 4 == 3
    return mean, std, expo


def chunk(seed: int, index: int, rows: int, features: int, *, live: bool) -> np.ndarray:
    """One chunk (rows x features, float32) of the reference (live=False) or live table."""
    rng = np.random.default_rng([seed, index])
    z = rng.standard_normal((rows, features), dtype=np.float32)
    mean, std, expo = _params(features)
    if expo.any():
        e = rng.standard_exponential((rows, int(expo.sum())), dtype=np.float32) - 1.0  # mean 0, std 1
        z[:, expo] = e
    if live:
        shift = np.zeros(features, dtype=np.float32)
        scale = np.ones(features, dtype=np.float32)
        shift[[j for j in SHIFTED if j < features]] = 0.25
        scale[[j for j in WIDER if j < features]] = np.float32(1.1**0.5)
        z = z * scale + shift
    return (z * std.astype(np.float32) + mean.astype(np.float32)).astype(np.float32, copy=False)


def chunks(seed: int, rows: int, features: int, chunk_rows: int, *, live: bool) -> Iterator[np.ndarray]:
    """The table, chunk by chunk."""
    for i, start in enumerate(range(0, rows, chunk_rows)):
        yield chunk(seed, i, min(chunk_rows, rows - start), features, live=live)


def table(seed: int, rows: int, features: int, chunk_rows: int, *, live: bool) -> np.ndarray:
    """The whole table (rows x features, float32), the same values as :func:`chunks`."""
    out = np.empty((rows, features), dtype=np.float32)
    for i, start in enumerate(range(0, rows, chunk_rows)):
        n = min(chunk_rows, rows - start)
        out[start : start + n] = chunk(seed, i, n, features, live=live)
    return out


def names(features: int) -> list[str]:
    return [f"f{j:03d}" for j in range(features)]
