"""Fuzzing the model server's ASGI app in-process (hypothesis; the harness of test_serve_app.py, a stand-in
model that never fails, so any 5xx is the server's fault).

Every endpoint gets arbitrary bytes, arbitrary JSON and near-valid requests (valid OIP / invocations bodies
broken at one place: wrong types, shapes, nulls, NaN/Infinity literals, huge numbers, unicode, duplicate
keys), under every content type, content length (right, wrong, absurd) and chunking. Properties: the app
never raises, never answers 5xx (a 503 only while overloaded, which a sequential client never is), every
error is a JSON ``{"error": ...}``, and the next valid request is answered correctly. Bodies past the limit
get 413 without the app buffering them; deep nesting gets a quick 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note
from hypothesis import strategies as st

from mlops_operator.runtime.serving.app import DRAIN_LIMIT, ServerApp
from mlops_operator.runtime.serving.config import DEFAULT_MAX_BODY_BYTES
from mlops_operator.runtime.serving.model import Cost, LoadedModel
from mlops_operator.runtime.serving.outputs import Outputs
from mlops_operator.runtime.serving.payload import Batch
from tests.support.schema_strategies import ODD_VALUES, examples, mutated
from tests.unit.test_serve_app import PROFILE, SCHEMA, Response, call, config

LIMIT = 64 * 1024


def predict(batch: Batch) -> Outputs:
    return Outputs({"predict": (np.asarray(batch.columns["a"]) > 5).astype(np.int64)})


def fuzz_app(limit: int = LIMIT) -> ServerApp:
    app = ServerApp(config(MLOPS_MAX_BODY_BYTES=str(limit)))
    app.set_model(
        LoadedModel(
            name="m",
            version="3",
            uri="models:/m/3",
            schema=SCHEMA,
            predictor=predict,
            path="test",
            profile=PROFILE,
            cost=Cost(fixed_s=1e-5, per_row_s=1e-7),
            sample_output=Outputs({"predict": np.array([0])}),
        )
    )
    return app


APP = fuzz_app()
#: With the default body limit (4 MiB): room for deep nesting and many rows.
BIG_APP = fuzz_app(DEFAULT_MAX_BODY_BYTES)

OIP_PATHS = ["/v2/models/m/infer", "/v2/models/m/versions/3/infer"]
POST_PATHS = [*OIP_PATHS, "/invocations"]
GET_PATHS = [
    "/v2/health/live",
    "/v2/health/ready",
    "/v2",
    "/v2/models/m",
    "/v2/models/m/ready",
    "/v2/models/m/versions/3",
    "/ping",
    "/health",
    "/version",
    "/metrics",
]
PATHS = st.one_of(
    st.sampled_from(POST_PATHS + GET_PATHS),
    st.sampled_from(["/v2/models/other/infer", "/v2/models//infer", "/v2/models/m/versions/x/infer", "/"]),
    st.text(max_size=40).map(lambda s: "/" + s),
    st.text(max_size=10).map(lambda s: f"/v2/models/{s}/infer"),
)
METHODS = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "X" * 20])
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "text/csv",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "",
        ";;;",
        "\u00e9/\u00e9",
    ]
)
ACCEPT = st.sampled_from([None, "application/openmetrics-text", "text/plain", "*/*", "\u00ff", ""])

OIP_VALID = {
    "id": "r1",
    "inputs": [
        {"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 9]},
        {"name": "b", "shape": [2], "datatype": "FP64", "data": [0.5, -0.5]},
    ],
}
OIP_TENSOR = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 0], [9, 0]]}]}
INVOCATIONS_VALID = [
    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 0], [9, 0]]}},
    {"dataframe_records": [{"a": 1, "b": 0}, {"a": 9, "b": 0}]},
    {"instances": [[1, 0], [9, 0]]},
    {"inputs": {"a": [1, 9], "b": [0, 0]}},
]
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.sampled_from(ODD_VALUES),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def near_valid(path: str) -> st.SearchStrategy[Any]:
    bases = [OIP_VALID, OIP_TENSOR] if path in OIP_PATHS else INVOCATIONS_VALID
    return mutated(st.sampled_from(bases)).map(lambda t: t[0])


@st.composite
def textual(draw: st.DrawFn, body: Any) -> bytes:
    """JSON text of ``body`` with, sometimes, what ``json.dumps`` never writes: NaN/Infinity literals,
    huge numbers, duplicate keys, odd whitespace, a BOM, truncation, invalid UTF-8."""
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    trick = draw(st.integers(0, 9))
    numbers = list(re.finditer(r"(?<![\w.])-?\d+(\.\d+)?([eE][-+]?\d+)?", text))
    if trick == 1 and numbers:
        m = draw(st.sampled_from(numbers))
        lit = draw(
            st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 400, "1" * 5000])
        )
        text = text[: m.start()] + lit + text[m.end() :]
    elif trick == 2 and text.startswith("{") and len(text) > 2:
        text = '{"inputs": [], "instances": 1, ' + text[1:]
    elif trick == 3:
        text = "\ufeff" + text
    elif trick == 4:
        text = text[: draw(st.integers(0, len(text)))]
    elif trick == 5:
        raw = text.encode()
        cut = draw(st.integers(0, len(raw)))
        return raw[:cut] + b"\xff\xfe\xc3" + raw[cut:]
    elif trick == 6:
        text = f" \n\t{text}\r\n "
    elif trick == 7:
        text = text + text
    return text.encode()


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str], int]:
    path = draw(PATHS)
    method = draw(st.sampled_from(["POST", "GET"])) if draw(st.integers(0, 4)) else draw(METHODS)
    kind = draw(st.sampled_from(["near-valid", "near-valid", "json", "bytes", "empty"]))
    if kind == "near-valid":
        body = draw(textual(draw(near_valid(path))))
    elif kind == "json":
        body = draw(textual(draw(JSON_VALUES)))
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
    else:
        body = b""
    headers: dict[str, str] = {}
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers["content-type"] = content_type
    length = draw(st.sampled_from(["right", "right", "none", "wrong", "absurd", "junk"]))
    if length == "right":
        headers["content-length"] = str(len(body))
    elif length == "wrong":
        headers["content-length"] = str(draw(st.integers(0, 2 * LIMIT)))
    elif length == "absurd":
        headers["content-length"] = draw(st.sampled_from(["9" * 30, "1" * 5000, str(2**64), "0" * 40 + "5"]))
    elif length == "junk":
        headers["content-length"] = draw(st.sampled_from(["-1", "+5", "1e3", " 5", "", "\u0665", "0x10"]))
    accept = draw(ACCEPT)
    if accept is not None:
        headers["accept"] = accept
    chunks = draw(st.integers(1, 5))
    return method, path, body, headers, chunks


async def call_raw(
    app: ServerApp, method: str, path: str, body: bytes, headers: dict[str, str], chunks: int
) -> Response:
    """Like ``call`` but with exactly the given headers (no default content type), latin-1 encoded the way
    an HTTP server hands them over."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode("utf-8")) for k, v in headers.items()],
    }
    size = max(1, -(-len(body) // chunks))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if not sent:  # the body was shorter than declared: the client "went away" mid-body
        return Response(0, {}, b"")
    start, body_msg = sent
    return Response(start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body_msg["body"])


async def still_serves(app: ServerApp) -> None:
    oip = await call(app, "POST", "/v2/models/m/infer", OIP_VALID)
    assert oip.status == 200 and oip.json()["outputs"][0]["data"] == [0, 1], oip.body
    inv = await call(app, "POST", "/invocations", INVOCATIONS_VALID[0])
    assert inv.status == 200 and inv.json() == {"predictions": [0, 1]}, inv.body


def check_response(response: Response, method: str) -> None:
    assert response.status == 0 or 200 <= response.status < 500, (response.status, response.body)
    if response.status >= 400:
        error = json.loads(response.body)["error"]
        assert isinstance(error, str) and error
    assert response.status != 503 or method not in ("POST",), "overloaded by a sequential client"


@examples(1500, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
def test_no_request_gets_a_5xx_or_breaks_the_server(
    request: tuple[str, str, bytes, dict[str, str], int], caplog: pytest.LogCaptureFixture
) -> None:
    method, path, body, headers, chunks = request
    note(f"{method} {path} {headers} chunks={chunks} body={body[:300]!r}")

    async def run() -> None:
        with caplog.at_level(logging.WARNING, logger="mlops_operator"):
            caplog.clear()
            response = await call_raw(APP, method, path, body, headers, chunks)
            # the payload validation never relies on its catch-all for an unexpected exception
            unexpected = [r.getMessage() for r in caplog.records if "unexpected" in r.getMessage()]
            assert not unexpected, unexpected
        check_response(response, method)
        await still_serves(APP)

    asyncio.run(run())


# --------------------------------------------------------------------------------------------------------
# big, deep and wide
# --------------------------------------------------------------------------------------------------------


async def test_a_declared_oversized_body_is_a_413_without_reading_it() -> None:
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1 << 20
        return {"type": "http.request", "body": b"[" * (1 << 20), "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for length in (str(LIMIT + 1), str(DRAIN_LIMIT + 1), "9" * 5000):
        pulled = 0
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/invocations",
            "headers": [(b"content-type", b"application/json"), (b"content-length", length.encode())],
        }
        sent.clear()
        await APP(scope, receive, send)
        assert sent[0]["status"] == 413, (length[:20], sent)
        assert "exceeds the limit" in json.loads(sent[1]["body"])["error"]
        # a body too big to drain is not read at all; a smaller one is drained (and dropped) in chunks
        assert pulled <= (0 if len(length) > 9 else DRAIN_LIMIT + (1 << 20))
    await still_serves(APP)


async def test_a_streamed_oversized_body_is_a_413_and_never_buffered() -> None:
    """No Content-Length (chunked transfer): the app counts as it reads, stops buffering at the limit and
    reads (dropping) at most DRAIN_LIMIT bytes of an endless body."""
    chunk = b"[1, 2]," * 10_000  # 70 kB, the same object every time: the test holds no big buffer
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": []}
    started = time.perf_counter()
    await APP(scope, receive, send)
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert pulled <= DRAIN_LIMIT + 2 * len(chunk)
    assert time.perf_counter() - started < 5
    await still_serves(APP)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"instances": ' + b"[" * 60_000 + b"]" * 60_000 + b"}",
        b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": '
        + b"[" * 2000
        + b"1"
        + b"]" * 2000
        + b"}]}",
    ],
    ids=["open", "closed", "objects", "instances", "oip-data"],
)
async def test_deep_nesting_is_a_quick_400(body: bytes) -> None:
    started = time.perf_counter()
    for path in ("/invocations", "/v2/models/m/infer"):
        response = await call_raw(BIG_APP, "POST", path, body, {"content-length": str(len(body))}, 3)
        assert response.status == 400, response.body[:300]
    assert time.perf_counter() - started < 1.0
    await still_serves(BIG_APP)


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/invocations", {"instances": [[1, 0, 3]] * 10}, "expected 2"),
        (
            "/invocations",
            {"dataframe_split": {"columns": [f"c{i}" for i in range(2000)], "data": [[0] * 2000]}},
            "c",
        ),
        ("/invocations", {"dataframe_records": [{"a": 1, "b": 2, **{f"x{i}": 0 for i in range(500)}}]}, "x"),
        (
            "/v2/models/m/infer",
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            "column",
        ),
        (
            "/v2/models/m/infer",
            {"inputs": [{"name": "a", "shape": [10**18], "datatype": "FP64", "data": [1]}]},
            "shape",
        ),
        (
            "/v2/models/m/infer",
            {"inputs": [{"name": "a", "shape": [1] * 17, "datatype": "FP64", "data": [1]}]},
            "dimensions",
        ),
        (
            "/v2/models/m/infer",
            {"inputs": [{"name": "a", "shape": [2**64, 0], "datatype": "FP64", "data": []}]},
            "shape",
        ),
    ],
)
async def test_too_many_columns_or_values_is_a_4xx_naming_the_problem(
    path: str, body: Any, needle: str
) -> None:
    response = await call(APP, "POST", path, body)
    assert 400 <= response.status < 500, response.body[:300]
    assert needle in response.json()["error"], response.json()
    await still_serves(APP)


def test_many_rows_within_the_body_limit_are_served() -> None:
    rows = 400_000  # 3.2 MB of JSON, within the default limit
    response = asyncio.run(call(BIG_APP, "POST", "/invocations", {"instances": [[9, 0]] * rows}))
    assert response.status == 200, response.body[:200]
    assert response.json()["predictions"] == [1] * rows
