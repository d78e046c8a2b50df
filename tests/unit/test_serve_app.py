"""The model server's ASGI app in-process, with a stand-in model (no MLflow, no sockets): routing, errors,
overload, metrics, sampled logging. The real server against a real MLflow is in tests/e2e/test_serve.py."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.drift.profile import build_profile
from mlops_operator.runtime.serving.app import ServerApp, route
from mlops_operator.runtime.serving.config import ServerConfig
from mlops_operator.runtime.serving.model import Cost, LoadedModel
from mlops_operator.runtime.serving.outputs import Outputs
from mlops_operator.runtime.serving.payload import Batch
from mlops_operator.runtime.serving.schema import Column, InputSchema

SCHEMA = InputSchema(columns=(Column("a"), Column("b")))
PROFILE = build_profile(
    {"a": np.linspace(0, 10, 101), "b": np.linspace(-1, 1, 101), "y": np.arange(101) % 2},
    features=["a", "b"],
    target="y",
    target_type="categorical",
)


def threshold(batch: Batch) -> Outputs:
    a = batch.columns["a"]
    if (a < -100).any():
        raise ValueError("a below -100 is not supported by this model")
    return Outputs({"predict": (a > 5).astype(np.int64)})


def make_model(predictor: Callable[[Batch], Outputs] = threshold, cost: Cost | None = None) -> LoadedModel:
    return LoadedModel(
        name="m",
        version="3",
        uri="models:/m/3",
        schema=SCHEMA,
        predictor=predictor,
        path="test",
        profile=PROFILE,
        cost=cost or Cost(fixed_s=1e-5, per_row_s=1e-7),
        sample_output=Outputs({"predict": np.array([0])}),
    )


def config(**env: str) -> ServerConfig:
    return ServerConfig.from_env({pc.ENV_MODEL_URI: "models:/m/3", **env})


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: ServerApp,
    method: str,
    path: str,
    body: bytes | Any = b"",
    *,
    headers: dict[str, str] | None = None,
    chunks: int = 1,
) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
    }
    size = max(1, -(-len(raw) // chunks))
    parts = [raw[i : i + size] for i in range(0, len(raw), size)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body_msg = sent
    return Response(start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body_msg["body"])


def ready_app(**env: str) -> ServerApp:
    app = ServerApp(config(**env))
    app.set_model(make_model())
    return app


def test_routes() -> None:
    assert route("/v2/models/m/infer") == ("/v2/models/{name}/infer", "POST", "m", None)
    assert route("/v2/models/m/versions/3/infer") == (
        "/v2/models/{name}/versions/{version}/infer",
        "POST",
        "m",
        "3",
    )
    assert route("/v2/models/m/versions/3") == ("/v2/models/{name}/versions/{version}", "GET", "m", "3")
    assert route("/v2/models/m/ready") == ("/v2/models/{name}/ready", "GET", "m", None)
    assert route("/v2/models/m/") == ("/v2/models/{name}", "GET", "m", None)
    assert route("/v2/models/m/other")[0] == "other"
    assert route("/invocations")[:2] == ("/invocations", "POST")
    assert route("/nope")[0] == "other"


async def test_not_ready_until_loaded() -> None:
    app = ServerApp(config())
    assert (await call(app, "GET", "/v2/health/live")).status == 200
    for method, path in (
        ("GET", "/v2/health/ready"),
        ("GET", "/ping"),
        ("POST", "/invocations"),
        ("GET", "/v2/models/m"),
    ):
        response = await call(app, method, path, {"instances": [[1, 2]]})
        assert response.status == 503 and response.headers["retry-after"] == "5"
        assert "loading" in response.json()["error"]
    app.set_model(make_model())
    assert (await call(app, "GET", "/v2/health/ready")).json() == {"ready": True}
    assert (await call(app, "GET", "/ping")).status == 200


async def test_predictions_metadata_and_errors() -> None:
    app = ready_app()
    inv = await call(
        app, "POST", "/invocations", {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 0], [7, 0]]}}
    )
    assert inv.status == 200 and inv.json() == {"predictions": [0, 1]}
    oip_body = {"id": "r1", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [9, 0]}]}
    oip = await call(app, "POST", "/v2/models/m/versions/3/infer", oip_body)
    assert oip.json() == {
        "model_name": "m",
        "model_version": "3",
        "id": "r1",
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [1]}],
    }
    meta = (await call(app, "GET", "/v2/models/m")).json()
    assert meta["name"] == "m" and meta["versions"] == ["3"] and meta["platform"] == "mlflow"
    assert [i["name"] for i in meta["inputs"]] == ["a", "b"] and meta["inputs"][0]["datatype"] == "FP64"
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert (await call(app, "GET", "/v2/models/m/versions/3/ready")).json() == {"name": "m", "ready": True}
    assert (await call(app, "GET", "/v2")).json()["name"] == "mlops-serve"
    assert (await call(app, "GET", "/version")).json() == {"model": "m", "version": "3"}

    cases = [
        ("POST", "/v2/models/other/infer", oip_body, 404, "'other' is not served here"),
        ("POST", "/v2/models/m/versions/4/infer", oip_body, 404, "version '4'"),
        ("GET", "/v2/models/m/versions/4", b"", 404, "version '4'"),
        ("GET", "/nowhere", b"", 404, "no route"),
        ("GET", "/invocations", b"", 405, "GET is not allowed"),
        ("POST", "/invocations", b"", 400, "empty"),
        ("POST", "/invocations", b"{nope", 400, "not valid JSON"),
        ("POST", "/invocations", b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
        ("POST", "/invocations", {"instances": [[1, "x"]]}, 400, "column 'b'"),
        ("POST", "/invocations", {"instances": [[-1000, 0]]}, 500, "a below -100 is not supported"),
    ]
    for method, path, body, status, needle in cases:
        response = await call(app, method, path, body)
        assert response.status == status, (path, body, response.body)
        assert needle in response.json()["error"], response.json()
    assert (await call(app, "GET", "/invocations")).headers["allow"] == "POST"
    csv = await call(app, "POST", "/invocations", b"a,b\n1,2", headers={"content-type": "text/csv"})
    assert csv.status == 415
    form = await call(
        app,
        "POST",
        "/invocations",
        {"instances": [[1, 2]]},
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 200  # curl -d's default content type: parsed as JSON all the same
    # the server carries on after a model failure
    assert (await call(app, "POST", "/invocations", {"instances": [[6, 0]]})).json() == {"predictions": [1]}


async def test_body_limit() -> None:
    app = ready_app(MLOPS_MAX_BODY_BYTES="1000")
    big = {"instances": [[1.0, 2.0]] * 200}
    declared = await call(app, "POST", "/invocations", big)
    assert declared.status == 413 and "exceeds the limit of 1000 bytes" in declared.json()["error"]
    assert declared.headers["connection"] == "close"
    # without a content-length (chunked): counted while reading
    app2 = ready_app(MLOPS_MAX_BODY_BYTES="1000")
    chunked = await call(app2, "POST", "/invocations", big, chunks=20)
    assert chunked.status == 413
    small = await call(app2, "POST", "/invocations", {"instances": [[1.0, 2.0]] * 3}, chunks=3)
    assert small.status == 200


async def test_metrics() -> None:
    app = ready_app()
    rows = [[float(a), 0.5] for a in range(10)]
    for _ in range(3):
        assert (await call(app, "POST", "/invocations", {"instances": rows})).status == 200
    await call(app, "POST", "/invocations", {"instances": [[1, "x"]]})
    response = await call(app, "GET", "/metrics")
    assert response.status == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.body.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples[f'{pc.METRIC_REQUESTS}{{code="200",endpoint="/invocations"}}'] == 3
    assert samples[f'{pc.METRIC_REQUESTS}{{code="400",endpoint="/invocations"}}'] == 1
    assert samples[f'{pc.METRIC_LATENCY}_count{{endpoint="/invocations"}}'] == 4
    assert samples[f'{pc.METRIC_MODEL_INFO}{{model="m",role="primary",version="3"}}'] == 1
    assert samples[f"{pc.METRIC_INFLIGHT}"] == 0
    bins = {k: v for k, v in samples.items() if k.startswith(pc.METRIC_FEATURE_BIN)}
    assert sum(v for k, v in bins.items() if 'feature="a"' in k) == 30
    assert sum(v for k, v in bins.items() if 'feature="b"' in k) == 30
    assert samples[f'{pc.METRIC_FEATURE_MISSING}{{feature="a"}}'] == 0
    assert samples[f'{pc.METRIC_PREDICTIONS}{{output="0"}}'] == 18
    assert samples[f'{pc.METRIC_PREDICTIONS}{{output="1"}}'] == 12
    openmetrics = await call(app, "GET", "/metrics", headers={"accept": "application/openmetrics-text"})
    assert openmetrics.body.decode().rstrip().endswith("# EOF")
    basic = ready_app(MLOPS_SERVER_METRICS="basic")
    await call(basic, "POST", "/invocations", {"instances": rows})
    text = (await call(basic, "GET", "/metrics")).body.decode()
    assert pc.METRIC_REQUESTS in text and pc.METRIC_FEATURE_BIN not in text
    off = ready_app(MLOPS_SERVER_METRICS="off")
    assert (await call(off, "GET", "/metrics")).status == 404


async def test_overload_rejects_beyond_max_inflight_while_admitted_requests_complete() -> None:
    gate = threading.Event()

    def slow(batch: Batch) -> Outputs:
        gate.wait(10)
        return threshold(batch)

    app = ServerApp(config(MLOPS_MAX_INFLIGHT="2"))
    app.set_model(make_model(slow, Cost(fixed_s=0.5, per_row_s=0.0)))  # slow: predicted in the worker thread
    assert app.inline_rows == 0 and app.executor is not None
    body = {"instances": [[6, 0]]}
    admitted = [asyncio.create_task(call(app, "POST", "/invocations", body)) for _ in range(2)]
    await asyncio.sleep(0.05)
    assert app.inflight == 2
    rejected = await call(app, "POST", "/invocations", body)
    assert rejected.status == 503 and rejected.headers["retry-after"] == "1"
    assert "overloaded" in rejected.json()["error"]
    assert (await call(app, "GET", "/v2/health/ready")).status == 200  # health is not limited
    gate.set()
    for task in admitted:
        response = await task
        assert response.status == 200 and response.json() == {"predictions": [1]}
    assert app.inflight == 0
    assert (await call(app, "POST", "/invocations", body)).status == 200
    app.shutdown()


@pytest.mark.parametrize(
    ("fixed_s", "per_row_s", "inline_rows"), [(1e-4, 1e-6, 1901), (0.01, 0.0, 0), (1e-5, 1e-8, 199001)]
)
def test_inline_or_thread(fixed_s: float, per_row_s: float, inline_rows: int) -> None:
    app = ServerApp(config())
    app.set_model(make_model(cost=Cost(fixed_s=fixed_s, per_row_s=per_row_s)))
    assert app.inline_rows == inline_rows
    assert (app.executor is None) == (inline_rows > 10**15)


async def test_sampled_log_records() -> None:
    class Sink:
        def __init__(self) -> None:
            self.lines: list[bytes] = []

        def write(self, lines: list[bytes]) -> None:
            self.lines.extend(lines)

        def close(self) -> None:
            return None

    sink = Sink()
    app = ServerApp(
        config(MLOPS_INFERENCE_LOG="-", MLOPS_LOG_SAMPLE_RATE="1", MLOPS_MODELDEPLOYMENT_NAME="md"), sink=sink
    )
    app.loader = lambda cfg: make_model()
    app.startup()
    for _ in range(200):
        if app.model is not None:
            break
        await asyncio.sleep(0.01)
    assert app.model is not None
    await call(app, "POST", "/invocations", {"instances": [[7, 1]]})
    app.shutdown()
    record = json.loads(sink.lines[0])
    assert record["deployment"] == "md" and record["inputs"] == {"a": [7.0], "b": [1.0]}
    assert record["outputs"] == {"predict": [1]}


async def test_a_model_that_cannot_load_stops_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(pc.ENV_TERMINATION_LOG, str(tmp_path / "termination-log"))
    stopped = threading.Event()

    def fail(cfg: ServerConfig) -> LoadedModel:
        raise FileNotFoundError("no such model")

    app = ServerApp(config(), loader=fail, on_fatal=stopped.set)
    app.startup()
    for _ in range(200):
        if stopped.is_set():
            break
        await asyncio.sleep(0.01)
    assert stopped.is_set() and app.exit_code == 1
    response = await call(app, "GET", "/v2/health/ready")
    assert response.status == 503 and "no such model" in response.json()["error"]
    assert (tmp_path / "termination-log").read_text().startswith("TrainerError: cannot load models:/m/3")


async def test_shadow_mirror_copies_successful_requests() -> None:
    received: list[tuple[str, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length"))
            received.append((lines[0].split(" ")[1], await reader.readexactly(length)))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
            await writer.drain()

    shadow = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = shadow.sockets[0].getsockname()[1]
    app = ServerApp(config(MLOPS_SHADOW_URL=f"http://127.0.0.1:{port}", MLOPS_SHADOW_PERCENT="100"))
    app.set_model(make_model())
    ok = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [9, 0]}]}
    assert (await call(app, "POST", "/v2/models/m/versions/3/infer", ok)).status == 200
    assert (await call(app, "POST", "/invocations", {"instances": [[1, 2]]})).status == 200
    assert (await call(app, "POST", "/invocations", {"instances": [[1, "x"]]})).status == 400  # not mirrored
    assert app.mirror is not None
    await app.mirror.close()
    shadow.close()
    assert sorted(path for path, _ in received) == ["/invocations", "/v2/models/m/infer"]
    assert json.loads(dict(received)["/v2/models/m/infer"]) == ok
    assert app.mirror.stats() == {"sent": 2, "failed": 0, "dropped": 0}
    text = (await call(app, "GET", "/metrics")).body.decode()
    assert 'mlops_shadow_requests_total{outcome="sent"} 2.0' in text


async def test_an_unreachable_shadow_does_not_affect_answers() -> None:
    from mlflow_server import free_port

    app = ServerApp(config(MLOPS_SHADOW_URL=f"http://127.0.0.1:{free_port()}", MLOPS_SHADOW_PERCENT="100"))
    app.set_model(make_model())
    for _ in range(3):
        assert (await call(app, "POST", "/invocations", {"instances": [[6, 1]]})).json() == {
            "predictions": [1]
        }
    assert app.mirror is not None
    await app.mirror.close()
    assert app.mirror.stats()["failed"] == 3
