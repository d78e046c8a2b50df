"""The REST registry reader the ModelDeployment controller resolves with: the requests it sends and how
MLflow's answers map onto the registry errors (a local stand-in server; the real one: tests/cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mlops_operator.mlflow_registry import ModelNotFoundError, RegistryError, RegistryUnavailableError, rest

ANSWERS: dict[str, tuple[int, dict[str, Any]]] = {}
SEEN: list[tuple[str, dict[str, list[str]], str | None]] = []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        SEEN.append((parts.path, query, self.headers.get("Authorization")))
        key = f"{parts.path}:{query.get('alias', query.get('version', ['']))[0]}"
        status, body = ANSWERS.get(key, (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "nope"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


ALIAS = "/api/2.0/mlflow/registered-models/alias"
VERSION = "/api/2.0/mlflow/model-versions/get"


def test_an_alias_resolves_to_its_version(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0k")
    ANSWERS[f"{ALIAS}:champion"] = (200, {"model_version": {"name": "iris", "version": "3"}})
    assert rest.RestRegistryReader(server).resolve_alias("iris", "champion") == 3
    path, query, auth = SEEN[-1]
    assert (path, query["name"], query["alias"], auth) == (ALIAS, ["iris"], ["champion"], "Bearer t0k")


def test_a_pinned_version_is_checked(server: str) -> None:
    ANSWERS[f"{VERSION}:2"] = (200, {"model_version": {"name": "iris", "version": "2"}})
    assert rest.RestRegistryReader(server).get_version("iris", 2) == 2
    with pytest.raises(ModelNotFoundError):
        rest.RestRegistryReader(server).get_version("iris", 9)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "alias x not found."}, ModelNotFoundError),
        (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"}, ModelNotFoundError),
        (401, {"error_code": "UNAUTHENTICATED", "message": "who are you"}, RegistryUnavailableError),
        (503, {"message": "busy"}, RegistryUnavailableError),
        (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad name"}, RegistryError),
        (200, {"unexpected": True}, RegistryError),
    ],
)  # fmt: skip
def test_answers_map_onto_the_registry_errors(
    server: str, status: int, body: dict[str, Any], error: type[Exception]
) -> None:
    ANSWERS[f"{ALIAS}:x"] = (status, body)
    with pytest.raises(error):
        rest.RestRegistryReader(server).resolve_alias("iris", "x")


def test_a_dead_server_is_unavailable() -> None:
    with pytest.raises(RegistryUnavailableError, match="not reachable"):
        rest.RestRegistryReader("http://127.0.0.1:9", timeout_s=1).resolve_alias("iris", "champion")


def test_what_it_cannot_do_is_left_to_the_mlflow_client(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rest.supports("http://mlflow:5000") and rest.supports("https://mlflow")
    assert not rest.supports("databricks://profile") and not rest.supports("file:///tmp/mlruns")
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "my-plugin")
    assert not rest.supports("http://mlflow:5000")


def test_resolving_does_not_import_mlflow() -> None:
    code = (
        "import sys; from mlops_operator.controllers.modeldeployment import controller as md; "
        "from mlops_operator.mlflow_registry import rest; "
        "r = md.resolve_in_registry('http://127.0.0.1:9', 'iris', 'champion', None); "
        "assert r.reason == 'RegistryUnavailable', r; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
