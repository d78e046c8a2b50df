"""``drift_prometheus``: the PromQL it sends and how it reads the answers, against a local HTTP server that
plays the Prometheus query API."""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mlops_operator.controllers.driftpolicy.prometheus import (
    PrometheusUnavailableError,
    escape_label_value,
    primary_pod_regex,
    query_window_counts,
)
from mlops_operator.controllers.driftpolicy.window import parse_feature_counters

SELECTOR = 'namespace="team-a", pod=~"fraud-[a-z0-9]+-[a-z0-9]+"'
PRIMARY = (
    'max by (namespace, pod) (max_over_time(mlops_model_info{namespace="team-a", '
    'pod=~"fraud-[a-z0-9]+-[a-z0-9]+", role="primary"}[600s]))'
)
EXPECTED = {
    "bin": (
        f"sum by (feature, bin) (increase(mlops_feature_bin_total{{{SELECTOR}}}[600s])"
        f" * on (namespace, pod) group_left () {PRIMARY})"
    ),
    "category": (
        f"sum by (feature, category) (increase(mlops_feature_category_total{{{SELECTOR}}}[600s])"
        f" * on (namespace, pod) group_left () {PRIMARY})"
    ),
    "missing": (
        f"sum by (feature) (increase(mlops_feature_missing_total{{{SELECTOR}}}[600s])"
        f" * on (namespace, pod) group_left () {PRIMARY})"
    ),
}


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": labels, "value": [1700000000.0, value]} for labels, value in samples],
        },
    }


class FakePrometheus:
    """Answers ``/api/v1/query`` with ``answer(query) -> (status, json)`` and records the queries."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.paths: list[str] = []
        self.answer: Any = lambda query: (200, vector())
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                fake.paths.append(parsed.path)
                query = urllib.parse.parse_qs(parsed.query).get("query", [""])[0]
                fake.queries.append(query)
                status, payload = fake.answer(query)
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    yield fake
    fake.close()


def test_sends_the_window_queries_and_parses_the_counts(prometheus: FakePrometheus) -> None:
    def answer(query: str) -> tuple[int, dict[str, Any]]:
        if query.startswith("sum by (feature, bin)"):
            return 200, vector(
                ({"feature": "amount", "bin": "0"}, "12"),
                ({"feature": "amount", "bin": "1"}, "7.5"),
                ({"feature": "age", "bin": "3"}, "NaN"),  # no rate yet: skipped
            )
        if query.startswith("sum by (feature, category)"):
            return 200, vector(
                ({"feature": "country", "category": "fr"}, "4"),
                ({"feature": "country", "category": "__other__"}, "1"),
            )
        return 200, vector(({"feature": "amount"}, "2"))

    prometheus.answer = answer
    counts = query_window_counts(f"{prometheus.url}/", "team-a", "fraud", 600)

    assert prometheus.paths == ["/api/v1/query"] * 3
    assert prometheus.queries == [EXPECTED["bin"], EXPECTED["category"], EXPECTED["missing"]]
    assert counts == {
        ("bin", "amount", "0"): 12.0,
        ("bin", "amount", "1"): 7.5,
        ("category", "country", "fr"): 4.0,
        ("category", "country", "__other__"): 1.0,
        ("missing", "amount", ""): 2.0,
    }


def test_keys_match_the_direct_scrape() -> None:
    """The same counters read from a /metrics page key exactly the same way."""
    exposition = (
        'mlops_feature_bin_total{feature="amount",bin="0"} 12\n'
        'mlops_feature_category_total{feature="country",category="fr"} 4\n'
        'mlops_feature_missing_total{feature="amount"} 2\n'
    )
    assert set(parse_feature_counters(exposition)) == {
        ("bin", "amount", "0"),
        ("category", "country", "fr"),
        ("missing", "amount", ""),
    }


def test_empty_answers_give_no_counts(prometheus: FakePrometheus) -> None:
    assert query_window_counts(prometheus.url, "team-a", "fraud", 60) == {}
    assert all("[60s]" in query for query in prometheus.queries)


def test_label_values_are_escaped() -> None:
    assert escape_label_value('a"b\\c') == 'a\\"b\\\\c'
    assert primary_pod_regex("model.v2") == "model\\.v2-[a-z0-9]+-[a-z0-9]+"
    long_name = "a" * 60
    assert primary_pod_regex(long_name) == "a" * 58 + ".*"
    assert primary_pod_regex("b" * 40) == "b" * 40 + "-.*"


def test_prometheus_error_answer_raises(prometheus: FakePrometheus) -> None:
    prometheus.answer = lambda query: (
        400,
        {"status": "error", "errorType": "bad_data", "error": "parse error\nat char 3"},
    )
    with pytest.raises(PrometheusUnavailableError) as raised:
        query_window_counts(prometheus.url, "team-a", "fraud", 600)
    message = str(raised.value)
    assert prometheus.url in message and "400" in message and "bad_data" in message
    assert "\n" not in message


def test_non_success_status_raises(prometheus: FakePrometheus) -> None:
    prometheus.answer = lambda query: (200, {"status": "error", "error": "query timed out"})
    with pytest.raises(PrometheusUnavailableError, match="timed out"):
        query_window_counts(prometheus.url, "team-a", "fraud", 600)


def test_non_vector_result_raises(prometheus: FakePrometheus) -> None:
    prometheus.answer = lambda query: (200, {"status": "success", "data": {"resultType": "matrix"}})
    with pytest.raises(PrometheusUnavailableError, match="matrix"):
        query_window_counts(prometheus.url, "team-a", "fraud", 600)


def test_dead_port_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(PrometheusUnavailableError) as raised:
        query_window_counts(url, "team-a", "fraud", 600, timeout=2.0)
    assert url in str(raised.value) and "unreachable" in str(raised.value)


def test_only_http_urls_are_queried() -> None:
    with pytest.raises(PrometheusUnavailableError, match="file:///etc/passwd"):
        query_window_counts("file:///etc/passwd", "team-a", "fraud", 600)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        query_window_counts("http://127.0.0.1:1", "team-a", "fraud", 0)
