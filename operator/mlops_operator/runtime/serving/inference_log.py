"""Sampled logging of requests and responses as JSON lines, off the request path.

The request path only decides whether to sample (one random draw) and appends a reference to the
validated arrays to a bounded in-memory queue (records beyond ``queue_size`` are dropped and counted,
never waited for). A background thread serialises the queued records and hands them, in batches, to a
:class:`InferenceLogSink` - which may block on slow disk or network without slowing requests.

One line per sampled request::

    {"timestamp": "2026-05-01T12:00:00.123456Z", "model": "iris", "version": "3", "role": "primary",
     "deployment": "iris", "pod": "iris-7d9f-abc", "endpoint": "/invocations", "rows": 2,
     "inputs": {"sepal_length": [5.1, 6.2], ...}, "outputs": {"predict": [0, 2]}}
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import random
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Final, Protocol

from mlops_operator.api.v1alpha1.pod_contract import PVC_SCHEME, local_path

from . import jsonio

log = logging.getLogger(__name__)

#: Records serialised and written per sink call at most.
MAX_BATCH: Final = 1000


class InferenceLogSink(Protocol):
    """A destination for JSON lines. Called from the log writer's thread only; may block; an exception
    counts the batch as failed (the writer carries on)."""

    def write(self, lines: list[bytes]) -> None:
        """Append ``lines`` (each ends with a newline)."""

    def close(self) -> None:
        """Flush and release resources (called once, after the last write)."""


class FileSink:
    """Appends to a local file (a PVC mount, an emptyDir, ...), flushing after each batch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = self.path.open("ab")

    def write(self, lines: list[bytes]) -> None:
        self._file.write(b"".join(lines))
        self._file.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()


class StreamSink:
    """Writes to a binary stream (``-``: standard output, for a log collector)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def write(self, lines: list[bytes]) -> None:
        self._stream.write(b"".join(lines))
        self._stream.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


class HttpSink:
    """POSTs each batch as ``application/x-ndjson`` to an http(s) endpoint."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def write(self, lines: list[bytes]) -> None:
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's configuration
            self.url, data=b"".join(lines), method="POST", headers={"Content-Type": "application/x-ndjson"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
            response.read()

    def close(self) -> None:
        return None


class FsspecSink:
    """One object per batch under a prefix of an fsspec filesystem (s3://, gs://, memory://, ...): object
    stores cannot append. Objects are named ``<prefix>/<pod>-<unix ms>-<seq>.jsonl``."""

    def __init__(self, prefix: str, pod: str) -> None:
        import fsspec  # type: ignore[import-untyped]

        self.prefix = prefix.rstrip("/")
        self.pod = pod or "server"
        self._fs, self._root = fsspec.core.url_to_fs(self.prefix)
        self._seq = 0

    def write(self, lines: list[bytes]) -> None:
        self._seq += 1
        path = f"{self._root}/{self.pod}-{int(time.time() * 1000)}-{self._seq:06d}.jsonl"
        with self._fs.open(path, "wb") as out:
            out.write(b"".join(lines))

    def close(self) -> None:
        return None


def open_sink(target: str, pod: str = "") -> InferenceLogSink:
    """The sink for an ``MLOPS_INFERENCE_LOG`` value: ``-``/``stdout``; ``http(s)://`` URL; a local path,
    ``file://`` or ``pvc://`` URI (a directory, or a path ending in ``/``, gets ``<pod>.jsonl`` inside);
    any other ``scheme://`` through fsspec."""
    if target in ("-", "stdout"):
        return StreamSink(sys.stdout.buffer)
    if target.startswith(("http://", "https://")):
        return HttpSink(target)
    if "://" in target and not target.startswith(("file://", PVC_SCHEME)):
        return FsspecSink(target, pod)
    path = local_path(target)
    if path.endswith("/") or Path(path).is_dir():
        path = str(Path(path) / f"{pod or 'server'}.jsonl")
    return FileSink(path)


class InferenceLogger:
    """Samples requests (``sample_rate``) into a bounded queue that a background thread writes to ``sink``."""

    def __init__(
        self,
        sink: InferenceLogSink,
        *,
        sample_rate: float,
        static: Mapping[str, str],
        queue_size: int = 10_000,
        flush_interval_s: float = 1.0,
        random_fn: Callable[[], float] = random.random,
    ) -> None:
        self.sink = sink
        self.sample_rate = sample_rate
        self._static = dict(static)
        self._queue: deque[tuple[float, str, int, Any, Any]] = deque()
        self._queue_size = queue_size
        self._flush_interval_s = flush_interval_s
        self._random = random_fn
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped, "failed": self.failed}

    def maybe_log(self, endpoint: str, rows: int, inputs: Any, outputs: Any) -> bool:
        """Queue the request when sampled; True if it was. Never blocks."""
        rate = self.sample_rate
        if rate <= 0.0 or (rate < 1.0 and self._random() >= rate) or self._stopping:
            return False
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            return False
        self._queue.append((time.time(), endpoint, rows, inputs, outputs))
        if len(self._queue) >= MAX_BATCH:
            self._wake.set()
        return True

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            while self._queue:
                self._write_batch()
            if stopping:
                return

    def _write_batch(self) -> None:
        lines: list[bytes] = []
        while self._queue and len(lines) < MAX_BATCH:
            ts, endpoint, rows, inputs, outputs = self._queue.popleft()
            record = {
                "timestamp": dt.datetime.fromtimestamp(ts, dt.UTC)
                .isoformat(timespec="microseconds")
                .replace("+00:00", "Z"),
                **self._static,
                "endpoint": endpoint,
                "rows": rows,
                "inputs": inputs,
                "outputs": outputs,
            }
            try:
                lines.append(jsonio.dumps(record) + b"\n")
            except (TypeError, ValueError) as error:
                self.failed += 1
                self._warn(f"inference log: a record could not be serialised: {error}")
        if not lines:
            return
        try:
            self.sink.write(lines)
            self.written += len(lines)
        except Exception as error:
            self.failed += len(lines)
            self._warn(f"inference log: writing {len(lines)} records failed: {error}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10.0:  # at most one warning per 10 s
            self._last_warning = now
            log.warning(message)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then close the sink (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("inference log: %d records not written before shutdown", len(self._queue))
        try:
            self.sink.close()
        except Exception as error:
            log.warning("inference log: closing the sink failed: %s", error)
