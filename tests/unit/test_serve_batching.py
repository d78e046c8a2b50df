"""Micro-batching in the model server: concurrent requests share one model call and each caller gets
exactly its own rows, equal to what it gets unbatched; a bad request never joins a batch; a model exception
fails only the batch it happened in."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from mlops_operator.runtime.errors import ConfigError
from mlops_operator.runtime.serving.app import ServerApp
from mlops_operator.runtime.serving.batching import MicroBatcher, concat, split
from mlops_operator.runtime.serving.errors import RequestError
from mlops_operator.runtime.serving.model import Cost
from mlops_operator.runtime.serving.outputs import Outputs
from mlops_operator.runtime.serving.payload import Batch
from tests.unit.test_serve_app import Response, call, config, make_model, threshold

RNG = np.random.default_rng(7)
W1, B1 = RNG.normal(size=(2, 16)), RNG.normal(size=16)
W2, B2 = RNG.normal(size=(16, 3)), RNG.normal(size=3)


def mlp(batch: Batch) -> Outputs:
    """A small two-layer network, row-wise; refuses a = -50 (like MLflow's input enforcement would) and
    fails on a < -100 (a model bug)."""
    x = np.stack([batch.columns["a"], batch.columns["b"]], axis=1)
    if (x[:, 0] == -50).any():
        raise RequestError("the model refused the input: a = -50")
    if (x[:, 0] < -100).any():
        raise ValueError("a below -100 is not supported by this model")
    return Outputs({"predict": np.tanh(x @ W1 + B1) @ W2 + B2})


class Recorder:
    """Wraps a predictor and records the row count of each model call."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.calls: list[int] = []

    def __call__(self, batch: Batch) -> Outputs:
        self.calls.append(batch.rows)
        return self.predictor(batch)  # type: ignore[no-any-return]


def app_with(predictor: Any, *, batch: int | None, delay_ms: float = 20, thread: bool = False) -> ServerApp:
    env = {"MLOPS_MAX_BATCH_DELAY_MS": str(delay_ms)}
    if batch is not None:
        env["MLOPS_MAX_BATCH_SIZE"] = str(batch)
    app = ServerApp(config(**env))
    cost = Cost(fixed_s=0.5, per_row_s=0.0) if thread else None  # thread: predicted in the worker thread
    app.set_model(make_model(predictor, cost))
    return app


def rows(count: int, offset: float = 0.0) -> list[list[float]]:
    return [[float(RNG.uniform(-10, 10)) + offset, float(RNG.uniform(-1, 1))] for _ in range(count)]


async def infer_all(app: ServerApp, bodies: list[Any]) -> list[Response]:
    return list(await asyncio.gather(*(call(app, "POST", "/invocations", b) for b in bodies)))


@pytest.mark.parametrize("thread", [False, True], ids=["inline", "worker-thread"])
async def test_concurrent_requests_of_different_sizes_get_exactly_their_rows(thread: bool) -> None:
    sizes = [1, 3, 2, 7, 1, 5, 4, 1, 6, 2, 3, 8]
    bodies = [{"instances": rows(n)} for n in sizes]
    unbatched = app_with(mlp, batch=None)
    expected = [await call(unbatched, "POST", "/invocations", b) for b in bodies]

    recorder = Recorder(mlp)
    app = app_with(recorder, batch=16, thread=thread)
    answers = await infer_all(app, bodies)
    for body, answer, reference in zip(bodies, answers, expected, strict=True):
        assert answer.status == 200, answer.body
        got, want = np.array(answer.json()["predictions"]), np.array(reference.json()["predictions"])
        assert got.shape == (len(body["instances"]), 3)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # 43 rows in calls of at most 16 rows, fewer calls than requests, every row predicted exactly once
    assert sum(recorder.calls) == sum(sizes) and max(recorder.calls) <= 16
    assert len(recorder.calls) < len(sizes)
    assert app.batcher is not None and app.batcher.stats.requests == len(sizes)
    app.shutdown()


async def test_outputs_equal_unbatched_outputs_exactly_for_a_row_wise_model() -> None:
    bodies = [{"instances": rows(n)} for n in (2, 1, 4, 3)]
    recorder = Recorder(threshold)
    app = app_with(recorder, batch=64)
    answers = await infer_all(app, bodies)
    reference = app_with(threshold, batch=None)
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.json() == (await call(reference, "POST", "/invocations", body)).json()
    assert recorder.calls == [10]  # one model call for all four requests


async def test_a_malformed_request_is_refused_alone_and_never_joins_the_batch() -> None:
    recorder = Recorder(threshold)
    app = app_with(recorder, batch=64)
    good = [{"instances": [[6.0, 0.0], [1.0, 0.0]]}, {"instances": [[7.0, 0.5]]}]
    bad = {"instances": [[6.0, "x"]]}
    missing = {"instances": [[6.0]]}
    answers = await infer_all(app, [good[0], bad, good[1], missing])
    assert [a.status for a in answers] == [200, 400, 200, 400]
    assert answers[0].json() == {"predictions": [1, 0]} and answers[2].json() == {"predictions": [1]}
    assert recorder.calls == [3]


async def test_a_model_exception_fails_only_its_batch() -> None:
    recorder = Recorder(threshold)
    app = app_with(recorder, batch=4)  # two 2-row requests fill a batch
    poisoned = {"instances": [[-1000.0, 0.0], [6.0, 0.0]]}
    fine = [{"instances": [[6.0, 0.0], [1.0, 0.0]]} for _ in range(3)]
    answers = await infer_all(app, [poisoned, fine[0], fine[1], fine[2]])
    assert [a.status for a in answers] == [500, 500, 200, 200]
    assert "a below -100" in answers[0].json()["error"] and "a below -100" in answers[1].json()["error"]
    assert answers[2].json() == answers[3].json() == {"predictions": [1, 0]}
    assert recorder.calls == [4, 4]
    # the server keeps serving
    assert (await call(app, "POST", "/invocations", fine[0])).json() == {"predictions": [1, 0]}


async def test_input_the_model_refuses_in_a_batch_is_retried_per_request() -> None:
    recorder = Recorder(mlp)
    app = app_with(recorder, batch=64)
    refused = {"instances": [[-50.0, 0.0]]}
    bodies = [{"instances": rows(2)}, refused, {"instances": rows(1)}]
    answers = await infer_all(app, bodies)
    assert [a.status for a in answers] == [200, 400, 200]
    assert "a = -50" in answers[1].json()["error"]
    assert recorder.calls == [4, 2, 1, 1]  # merged call refused, then each alone


async def test_a_model_that_is_not_row_wise_is_asked_per_request() -> None:
    def total(batch: Batch) -> Outputs:
        return Outputs({"predict": np.array([batch.columns["a"].sum()])})

    recorder = Recorder(total)
    app = app_with(recorder, batch=64)
    answers = await infer_all(app, [{"instances": [[1.0, 0.0], [2.0, 0.0]]}, {"instances": [[5.0, 0.0]]}])
    assert [a.json() for a in answers] == [{"predictions": [3.0]}, {"predictions": [5.0]}]
    assert recorder.calls == [3, 2, 1]


async def test_requests_with_parameters_or_bigger_than_a_batch_run_alone() -> None:
    calls: list[int] = []

    async def run(batch: Batch) -> Outputs:
        calls.append(batch.rows)
        return threshold(batch)

    batcher = MicroBatcher(run, max_rows=4, max_delay_s=0.01)
    matrix = np.array([[6.0, 0.0]] * 5)
    big = Batch(rows=5, columns={"a": matrix[:, 0], "b": matrix[:, 1]}, matrix=matrix)
    with_params = Batch(rows=1, columns={"a": np.array([6.0]), "b": np.array([0.0])}, params={"p": 1})
    small = Batch(rows=1, columns={"a": np.array([1.0]), "b": np.array([0.0])})
    results = await asyncio.gather(batcher.predict(big), batcher.predict(with_params), batcher.predict(small))
    assert [r.arrays["predict"].tolist() for r in results] == [[1] * 5, [1], [0]]
    assert sorted(calls) == [1, 1, 5]


async def test_a_lone_request_does_not_wait_and_a_pending_one_waits_at_most_the_delay() -> None:
    recorder = Recorder(threshold)
    app = app_with(recorder, batch=64, delay_ms=500)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await call(app, "POST", "/invocations", {"instances": [[6.0, 0.0]]})
    assert answer.json() == {"predictions": [1]} and recorder.calls == [1]
    assert loop.time() - started < 0.25  # the only request in flight: nobody to wait for

    async def run(batch: Batch) -> Outputs:
        return threshold(batch)

    batcher = MicroBatcher(run, max_rows=64, max_delay_s=0.03, in_flight=lambda: 2)
    started = loop.time()
    result = await batcher.predict(Batch(rows=1, columns={"a": np.array([6.0]), "b": np.array([0.0])}))
    assert result.arrays["predict"].tolist() == [1]
    assert 0.025 <= loop.time() - started < 1.0  # another request is in flight: it may join


def test_concat_and_split_round_trip() -> None:
    matrix_batches = []
    for n in (1, 3, 2):
        m = RNG.normal(size=(n, 2))
        matrix_batches.append(Batch(rows=n, columns={"a": m[:, 0], "b": m[:, 1]}, matrix=m))
    merged = concat(matrix_batches)
    assert merged.rows == 6 and merged.matrix is not None
    np.testing.assert_array_equal(
        merged.columns["b"], np.concatenate([b.matrix[:, 1] for b in matrix_batches])
    )  # type: ignore[index]
    tensors = [Batch(rows=n, tensors={"": np.arange(n * 4).reshape(n, 2, 2)}) for n in (2, 1)]
    assert concat(tensors).tensors[""].shape == (3, 2, 2)
    outputs = Outputs({"p": np.arange(6), "q": np.arange(12).reshape(6, 2)}, "dict")
    parts = split(outputs, [1, 3, 2])
    assert parts is not None
    assert [p.arrays["p"].tolist() for p in parts] == [[0], [1, 2, 3], [4, 5]]
    assert parts[2].arrays["q"].tolist() == [[8, 9], [10, 11]] and parts[0].orient == "dict"
    assert split(Outputs({"p": np.arange(5)}), [1, 3, 2]) is None


def test_batching_is_off_by_default_and_configured_by_environment() -> None:
    assert config().max_batch_size == 0 and ServerApp(config()).batcher is None
    cfg = config(MLOPS_MAX_BATCH_SIZE="32", MLOPS_MAX_BATCH_DELAY_MS="2.5")
    assert (cfg.max_batch_size, cfg.max_batch_delay_s) == (32, 0.0025)
    with pytest.raises(ConfigError, match="MLOPS_MAX_BATCH_SIZE"):
        config(MLOPS_MAX_BATCH_SIZE="many")
    app = app_with(threshold, batch=1)  # 1: nothing to batch
    assert app.batcher is None
