"""Sampled inference logging: never blocks the caller, batches to a pluggable sink, flushes on close."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mlops_operator.runtime.serving.inference_log import FileSink, InferenceLogger, open_sink


class SlowSink:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.lines: list[bytes] = []
        self.closed = False
        self.gate = threading.Event()
        self.gate.set()

    def write(self, lines: list[bytes]) -> None:
        self.gate.wait(10)
        time.sleep(self.delay_s)
        self.lines.extend(lines)

    def close(self) -> None:
        self.closed = True


STATIC = {"model": "iris", "version": "3", "role": "primary", "deployment": "iris", "pod": "p-1"}


def test_records_are_written_in_the_background_and_flushed_on_close() -> None:
    sink = SlowSink()
    logger = InferenceLogger(sink, sample_rate=1.0, static=STATIC, flush_interval_s=60)
    inputs = {"x": np.array([1.5, 2.5]), "color": np.array(["red", None], dtype=object)}
    assert logger.maybe_log("/invocations", 2, inputs, {"predict": np.array([0, 1])})
    assert sink.lines == []  # not yet: the writer flushes on its interval (60 s) or on close
    logger.close()
    assert sink.closed and logger.stats() == {"written": 1, "dropped": 0, "failed": 0}
    record = json.loads(sink.lines[0])
    assert record["timestamp"].endswith("Z")
    assert {k: record[k] for k in STATIC} == STATIC
    assert record["endpoint"] == "/invocations" and record["rows"] == 2
    assert record["inputs"] == {"x": [1.5, 2.5], "color": ["red", None]}
    assert record["outputs"] == {"predict": [0, 1]}
    assert not logger.maybe_log("/invocations", 1, {}, {})  # closed


def test_a_blocked_sink_never_blocks_the_caller_and_overflow_is_dropped() -> None:
    sink = SlowSink()
    sink.gate.clear()  # the sink hangs
    logger = InferenceLogger(sink, sample_rate=1.0, static=STATIC, queue_size=100, flush_interval_s=0.01)
    started = time.perf_counter()
    for _ in range(1100):
        logger.maybe_log("/invocations", 1, {"x": np.array([1.0])}, {"predict": np.array([0])})
    assert time.perf_counter() - started < 1.0
    assert logger.dropped >= 900
    sink.gate.set()
    logger.close()
    assert logger.written + logger.dropped == 1100


def test_sampling_rate() -> None:
    sink = SlowSink()
    draws = iter([0.05, 0.5, 0.09, 0.99])
    logger = InferenceLogger(sink, sample_rate=0.1, static=STATIC, random_fn=lambda: next(draws))
    sampled = [logger.maybe_log("/v2/models/{name}/infer", 1, {}, {}) for _ in range(4)]
    logger.close()
    assert sampled == [True, False, True, False] and len(sink.lines) == 2


def test_sink_failures_are_counted() -> None:
    class Broken(SlowSink):
        def write(self, lines: list[bytes]) -> None:
            raise OSError("disk full")

    logger = InferenceLogger(Broken(), sample_rate=1.0, static=STATIC)
    logger.maybe_log("/invocations", 1, {}, {})
    logger.close()
    assert logger.stats()["failed"] == 1


def test_open_sink_targets(tmp_path: Path) -> None:
    file_sink = open_sink(str(tmp_path / "logs" / "inference.jsonl"))
    assert isinstance(file_sink, FileSink)
    file_sink.write([b'{"a":1}\n', b'{"a":2}\n'])
    file_sink.close()
    assert (tmp_path / "logs" / "inference.jsonl").read_text().splitlines() == ['{"a":1}', '{"a":2}']
    directory = open_sink(f"file://{tmp_path}/dir/", pod="pod-7")
    assert isinstance(directory, FileSink) and directory.path == tmp_path / "dir" / "pod-7.jsonl"
    directory.close()
    memory = open_sink("memory://inference-test/iris", pod="pod-7")
    memory.write([b'{"a":1}\n'])
    import fsspec  # type: ignore[import-untyped]

    fs = fsspec.filesystem("memory")
    found = fs.glob("/inference-test/iris/pod-7-*.jsonl")
    assert len(found) == 1 and fs.cat(found[0]) == b'{"a":1}\n'


@pytest.mark.parametrize("target", ["-", "stdout"])
def test_stdout_sink(target: str) -> None:
    assert type(open_sink(target)).__name__ == "StreamSink"
