"""The chart's Grafana dashboard: valid JSON, PromQL that names only metrics the code exports, variables
that exist, and the ConfigMap the chart renders for the Grafana sidecar."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlops-operator"
DASHBOARD = CHART / "dashboards" / "mlops-operator.json"
#: Where the code names the metrics: the pod contract, the operator's drift gauges, the model server.
METRIC_SOURCES = [
    REPO / "operator" / "mlops_operator" / "api" / "v1alpha1" / "pod_contract.py",
    REPO / "operator" / "mlops_operator" / "controllers" / "driftpolicy" / "evaluation.py",
    REPO / "operator" / "mlops_operator" / "runtime" / "serving" / "metrics.py",
]
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: Labels the series can carry: the servers' and the operator's own, the scrape's target labels, and
#: ``exported_namespace`` (the operator's ``namespace`` label when scraped without honorLabels).
KNOWN_LABELS = {
    *("endpoint", "code", "le", "model", "version", "role", "output", "feature", "bin", "category"),
    *("outcome", "policy", "method", "namespace", "pod", "exported_namespace"),
}
PROMQL_WORDS = {
    *("sum", "max", "min", "avg", "count", "rate", "increase", "irate", "changes", "histogram_quantile"),
    *("by", "on", "group_left", "group_right", "without", "or", "and", "unless", "offset", "label_values"),
    *("query_result", "max_over_time"),
}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


@cache
def exported_metrics() -> frozenset[str]:
    names: set[str] = set()
    for source in METRIC_SOURCES:
        names.update(re.findall(r'"(mlops_[a-z0-9_]+)"', source.read_text()))
    assert len(names) > 10, names
    return frozenset(names)


def histograms() -> set[str]:
    text = METRIC_SOURCES[2].read_text()
    return set(re.findall(r"HistogramMetricFamily\(\s*(\w+)", text))


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def expressions() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for p in panels(board["panels"]) for t in p.get("targets", [])]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_dashboard_is_valid_json_with_the_expected_shape() -> None:
    board = dashboard()
    assert board["uid"] == "mlops-operator"
    assert 36 <= board["schemaVersion"] <= 41
    ids = [p["id"] for p in panels(board["panels"])]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in panels(board["panels"])}
    for title in ("Request rate by version", "Latency p50 / p90 / p99 by version", "Error ratio by version"):
        assert title in titles
    assert "In-flight requests" in titles and "Feature drift score vs threshold" in titles
    for p in panels(board["panels"]):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]


def test_expressions_name_only_exported_metrics() -> None:
    known = set(exported_metrics())
    for name in list(known):
        known.update(f"{name}{suffix}" for suffix in HISTOGRAM_SUFFIXES)
    histogram_names = {
        value
        for constant in histograms()
        for value in re.findall(rf'{constant}: Final = "([a-z0-9_]+)"', METRIC_SOURCES[0].read_text())
    }
    used: set[str] = set()
    for expr in expressions():
        stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values are not metric names
        stripped = re.sub(r"\$\{?\w+\}?", "", stripped)  # nor Grafana's variables ($__rate_interval)
        for name in re.findall(r"\bmlops_[a-z0-9_]+", stripped):
            assert name in known, f"{name} in {expr}"
            if name.endswith(HISTOGRAM_SUFFIXES):
                assert name.rsplit("_", 1)[0] in histogram_names, f"{name} is not a histogram"
            used.add(name)
        # every selector names a known metric (no bare {…} and no other metric names)
        for selector in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{", stripped):
            assert selector.startswith("mlops_"), f"selector {selector!r} in {expr}"
        # every identifier is a known metric, a PromQL word, a label, or a number's unit
        for word in re.findall(r"\b[a-z_][a-z0-9_]*\b", stripped):
            assert word in known or word in PROMQL_WORDS or word in KNOWN_LABELS, f"{word!r} in {expr}"
    # the dashboard covers the serving and the drift metrics it promises
    for name in (
        "mlops_inference_requests_total",
        "mlops_inference_request_duration_seconds_bucket",
        "mlops_inference_inflight_requests",
        "mlops_model_info",
        "mlops_drift_feature_score",
        "mlops_drift_feature_threshold",
        "mlops_drift_drifted_share",
        "mlops_drift_samples",
        "mlops_drift_drifted",
    ):
        assert name in used, name


def test_grouping_labels_exist() -> None:
    for expr in expressions():
        for clause in re.findall(r"\b(?:by|on|group_left|group_right|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (part.strip() for part in clause.split(","))):
                assert label in KNOWN_LABELS, f"{label!r} in {expr}"


def test_variables_exist() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "modeldeployment"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    text = json.dumps(board)
    for name in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text):
        assert name.startswith("__") or name in variables, name


def test_modeldeployment_variable_extracts_the_name_from_pod_names() -> None:
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "modeldeployment")
    pattern = re.compile(variable["regex"].strip("/"))
    for pod, name in [
        ("fraud-7d9c8b6f5-x2k4q", "fraud"),
        ("fraud-challenger-5f6d7c8b9-abcde", "fraud"),
        ("credit-risk-v2-6b7c8d9f4-zz9zz", "credit-risk-v2"),
    ]:
        match = pattern.match(pod)
        assert match is not None and match.group(1) == name, pod


@cache
def helm() -> str | None:
    local = REPO / ".cluster" / "bin" / "helm"
    if local.exists():
        return str(local)
    found = shutil.which("helm")
    if found:
        return found
    try:
        printed = subprocess.run(
            ["bash", str(REPO / "hack" / "build-tools.sh"), "--print"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in printed.splitlines():
        if line.startswith("helm="):
            path = line.removeprefix("helm=")
            return path if Path(path).exists() else None
    return None


def render(*args: str) -> list[dict[str, Any]]:
    binary = helm()
    if binary is None:
        pytest.fail("helm is not available: run hack/build-tools.sh (make tools)")
    out = subprocess.run(
        [binary, "template", "t", str(CHART), "--namespace", "ml", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def configmaps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]


def test_chart_renders_the_dashboard_configmap_when_enabled() -> None:
    assert configmaps(render()) == []
    (configmap,) = configmaps(render("--set", "grafanaDashboard.enabled=true"))
    assert configmap["metadata"]["namespace"] == "ml"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["mlops-operator.json"]) == dashboard()
    (moved,) = configmaps(
        render(
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "grafanaDashboard.namespace=monitoring",
            "--set-string",
            "grafanaDashboard.labels.grafana_folder=mlops",
        )
    )
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["labels"]["grafana_folder"] == "mlops"
