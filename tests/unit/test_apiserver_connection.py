"""The operator's own apiserver connection (kube/connection.py) and what ``mlops-operator run`` keeps
out of its process (the kubernetes client, numpy), against a local HTTP server standing in for the
transport (the Kubernetes API itself is exercised by the cluster tests)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kopf
import pytest

from mlops_operator.kube import connection as apiserver
from mlops_operator.kube import kubeconfig
from mlops_operator.kube.client import KubeClient
from tests.support.operator_imports import token_kubeconfig, top_level_modules


class _Recorder(BaseHTTPRequestHandler):
    """Answers 401 to any token but ``valid_token``, else echoes the request as JSON."""

    valid_token = "fresh"
    seen: list[dict[str, Any]] = []  # noqa: RUF012  (one test server at a time)

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "type": self.headers.get("Content-Type"),
                "accept": self.headers.get("Accept"),
                "body": body,
            }
        )
        if self.headers.get("Authorization") != f"Bearer {self.valid_token}":
            status, payload = 401, {"kind": "Status", "message": "Unauthorized", "code": 401}
        elif self.path.startswith("/missing"):
            status, payload = 404, {"kind": "Status", "message": 'jobs.batch "x" not found', "code": 404}
        else:
            status, payload = 200, {"method": self.command, "path": self.path, "body": body}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = do_DELETE = _answer  # noqa: N815  (http.server names)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """A local server; the ApiServer's login hands out the tokens listed in the returned list, in order."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    tokens: list[str] = []

    def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, token=tokens.pop(0))

    _Recorder.seen = []
    api = apiserver.ApiServer(login)
    _current["api"] = api
    _current["client"] = KubeClient(api, field_manager="test", annotation_prefix="test/")
    yield url, tokens
    _current.clear()
    httpd.shutdown()


_current: dict[str, Any] = {}


def _api() -> apiserver.ApiServer:
    api: apiserver.ApiServer = _current["api"]
    return api


def _client() -> KubeClient:
    client: KubeClient = _current["client"]
    return client


def test_a_request_carries_the_token_the_query_and_the_json_body(server: tuple[str, list[str]]) -> None:
    _, tokens = server
    tokens.append("fresh")
    answer = _api().request(
        "PATCH", "/apis/batch/v1/namespaces/ns/jobs/j", {"a": 1}, [("fieldManager", "m")], "application/x"
    )
    assert answer == {
        "method": "PATCH",
        "path": "/apis/batch/v1/namespaces/ns/jobs/j?fieldManager=m",
        "body": '{"a":1}',
    }
    assert _Recorder.seen[0]["auth"] == "Bearer fresh"
    assert _Recorder.seen[0]["type"] == "application/x"
    assert _Recorder.seen[0]["accept"] == "application/json"


def test_status_patches_and_events_ask_for_the_metadata_only(server: tuple[str, list[str]]) -> None:
    """Their answers are only read for the resourceVersion: the apiserver need not send the object."""
    _, tokens = server
    tokens.append("fresh")
    _client().patch_status("batch/v1", "Job", "ns", "j", {"phase": "Running"})
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns", "uid": "u"}}
    _client().post_event(body, "Normal", "Seen", "m")
    patch, event = _Recorder.seen
    assert (patch["method"], patch["path"], patch["type"]) == (
        "PATCH",
        "/apis/batch/v1/namespaces/ns/jobs/j/status",
        "application/merge-patch+json",
    )
    assert json.loads(patch["body"]) == {"status": {"phase": "Running"}}
    assert (event["method"], event["path"]) == ("POST", "/api/v1/namespaces/ns/events")
    assert patch["accept"] == event["accept"] == apiserver.METADATA_ONLY


def test_a_401_logs_in_again_and_resends_once(server: tuple[str, list[str]]) -> None:
    """A rotated service-account token (or an expired exec token) is picked up without a restart."""
    _, tokens = server
    tokens.extend(["expired", "fresh"])
    assert _api().request("GET", "/api/v1/namespaces/ns/pods")["path"] == "/api/v1/namespaces/ns/pods"
    assert [seen["auth"] for seen in _Recorder.seen] == ["Bearer expired", "Bearer fresh"]
    _api().request("GET", "/api")  # the fresh connection is kept
    assert [seen["auth"] for seen in _Recorder.seen][-1] == "Bearer fresh"
    assert tokens == []


def test_refused_credentials_surface_as_a_401_error(server: tuple[str, list[str]]) -> None:
    _, tokens = server
    tokens.extend(["wrong", "still-wrong"])
    with pytest.raises(apiserver.ApiError) as raised:
        _api().request("GET", "/api")
    assert (raised.value.status, raised.value.message) == (401, "Unauthorized")


def test_an_error_answer_keeps_status_reason_and_the_status_message(server: tuple[str, list[str]]) -> None:
    _, tokens = server
    tokens.append("fresh")
    with pytest.raises(apiserver.ApiError) as raised:
        _api().request("GET", "/missing")
    error = raised.value
    assert (error.status, error.reason, error.message) == (404, "Not Found", 'jobs.batch "x" not found')
    assert str(error) == '(404) Not Found: jobs.batch "x" not found'
    assert _client().get("batch/v1", "Job", "ns", "x") is not None  # another path: found (echoed)


def test_get_of_a_missing_object_is_none(
    server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, tokens = server
    tokens.append("fresh")
    monkeypatch.setattr(_client(), "path", lambda *_args: "/missing/job")
    assert _client().get("batch/v1", "Job", "ns", "x") is None


def _kubeconfig(tmp_path: Path, user: dict[str, Any], name: str = "config") -> Path:
    return token_kubeconfig(tmp_path / name, user)


@pytest.mark.parametrize(
    ("user", "needs_plugin"),
    [
        ({"client-certificate": "/c.crt", "client-key": "/c.key"}, False),
        ({"token": "abc"}, False),
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}, True),
        ({"auth-provider": {"name": "oidc", "config": {"idp-issuer-url": "https://x"}}}, True),
        ({"auth-provider": {"name": "gcp", "config": {"access-token": "t"}}}, False),
    ],
)
def test_only_credential_plugins_need_the_kubernetes_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: dict[str, Any], needs_plugin: bool
) -> None:
    monkeypatch.setattr(kubeconfig, "SERVICE_ACCOUNT_TOKEN", tmp_path / "no-token")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, user)))
    assert kubeconfig.needs_credential_plugin() is needs_plugin


def test_the_first_kubeconfig_file_naming_a_user_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _kubeconfig(tmp_path, {"exec": {"command": "login"}}, "first")
    second = _kubeconfig(tmp_path, {"token": "abc"}, "second")
    monkeypatch.setattr(kubeconfig, "SERVICE_ACCOUNT_TOKEN", tmp_path / "no-token")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(second)]))
    assert kubeconfig.needs_credential_plugin() is True
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(second), str(first)]))
    assert kubeconfig.needs_credential_plugin() is False


def test_in_a_pod_the_service_account_is_used_whatever_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    monkeypatch.setattr(kubeconfig, "SERVICE_ACCOUNT_TOKEN", token)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, {"exec": {"command": "login"}})))
    assert kubeconfig.needs_credential_plugin() is False


def test_the_operator_process_imports_neither_the_kubernetes_client_nor_numpy_nor_mlflow(
    tmp_path: Path,
) -> None:
    """What keeps the idle operator small (benchmarks/results/operator.md): ~25 MiB for the kubernetes
    client, ~14 MiB for numpy (loaded by the first DriftPolicy evaluation), ~100 MiB for mlflow."""
    modules = top_level_modules(_kubeconfig(tmp_path, {"token": "abc"}))
    assert {"kopf", "mlops_operator"} <= modules
    assert modules.isdisjoint({"kubernetes", "numpy", "mlflow", "pandas", "pyarrow", "torch"})


def test_a_credential_plugin_brings_the_kubernetes_client_back(tmp_path: Path) -> None:
    modules = top_level_modules(_kubeconfig(tmp_path, {"exec": {"command": "login"}}))
    assert "kubernetes" in modules
