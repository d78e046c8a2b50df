"""Live feature counts over a window from Prometheus (a DriftPolicy's ``spec.source.prometheus.url``).

The alternative to scraping the model servers directly (``window``): Prometheus already keeps the
servers' cumulative per-feature counters, so the window's counts are ``increase(...[window])`` summed over
the serving pods, in exactly ``window``'s ``Counts`` shape.

Which series belong to a ModelDeployment's primary: the model server labels its feature counters only
with ``feature`` and ``bin``/``category`` (runtime/serving/metrics.py); the deployment and the role are
not on them. A Prometheus pod scrape (a PodMonitor/ServiceMonitor of the Prometheus Operator, or the
usual ``kubernetes_sd`` relabelling) adds the ``namespace`` and ``pod`` target labels, so the series are
selected by

* ``namespace="<namespace>"``;
* ``pod=~"<deployment>-<pod-template-hash>-<suffix>"``: the primary Deployment is named after the
  ModelDeployment and its pods ``<deployment>-<hash>-<5 chars>``; two dash-free segments exclude the
  challenger's pods (``<deployment>-challenger-…``) and another ModelDeployment named ``<deployment>-x``.
  Kubernetes cuts a generated pod name's prefix to 58 characters, so for a name longer than 36 characters
  the selector falls back to that prefix followed by anything;
* a join on the server's ``mlops_model_info{role="primary"}`` (seen at any time in the window, so a pod
  that went away during the window still counts) on ``(namespace, pod)``, which keeps only primary
  servers, as the direct scrape does.

Counter resets (a restarted container) are handled by ``increase``; its extrapolation makes the counts
non-integral, which the drift engine accepts (it works on float counts).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.controllers.driftpolicy.window import BIN, CATEGORY, MISSING, Counts

#: The role whose servers are evaluated (the direct scrape reads only the primary too).
PRIMARY_ROLE: Final = "primary"
#: Longest deployment name whose pod names are never cut (``<name>-<hash ≤10>-`` within 58 characters).
_MAX_EXACT_NAME: Final = 36
_GENERATED_PREFIX_LIMIT: Final = 58
_RE2_SPECIAL: Final = frozenset("\\.+*?()|[]{}^$")


class PrometheusUnavailableError(Exception):
    """Prometheus could not be reached or did not answer a query successfully."""


def escape_label_value(value: str) -> str:
    """``value`` as the inside of a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _regex_literal(value: str) -> str:
    """``value`` matched literally in an RE2 regular expression."""
    return "".join(f"\\{char}" if char in _RE2_SPECIAL else char for char in value)


def primary_pod_regex(deployment: str) -> str:
    """The RE2 expression (unquoted) of the names of the primary Deployment's pods."""
    if len(deployment) <= _MAX_EXACT_NAME:
        return f"{_regex_literal(deployment)}-[a-z0-9]+-[a-z0-9]+"
    return f"{_regex_literal(f'{deployment}-'[:_GENERATED_PREFIX_LIMIT])}.*"


def window_queries(namespace: str, deployment: str, window_seconds: int) -> dict[str, str]:
    """The PromQL of each counter kind (``bin``/``category``/``missing``) for one window."""
    if window_seconds < 1:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    selector = (
        f'namespace="{escape_label_value(namespace)}", '
        f'pod=~"{escape_label_value(primary_pod_regex(deployment))}"'
    )
    primary = (
        f"max by (namespace, pod) (max_over_time({pc.METRIC_MODEL_INFO}"
        f'{{{selector}, role="{PRIMARY_ROLE}"}}[{window_seconds}s]))'
    )

    def query(metric: str, by: str) -> str:
        return (
            f"sum by ({by}) (increase({metric}{{{selector}}}[{window_seconds}s])"
            f" * on (namespace, pod) group_left () {primary})"
        )

    return {
        BIN: query(pc.METRIC_FEATURE_BIN, "feature, bin"),
        CATEGORY: query(pc.METRIC_FEATURE_CATEGORY, "feature, category"),
        MISSING: query(pc.METRIC_FEATURE_MISSING, "feature"),
    }


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else f"{line[: limit - 1]}…"


def instant_query(url: str, query: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The result of an instant query (``/api/v1/query``), which must be a vector."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PrometheusUnavailableError(_one_line(f"Prometheus at {url}: not an http(s) URL"))
    endpoint = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    request = urllib.request.Request(endpoint, headers={"Accept": "application/json"})  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as error:
        detail = ""
        try:
            payload = json.loads(error.read())
            detail = f": {payload.get('errorType', '')} {payload.get('error', '')}".rstrip()
        except (ValueError, AttributeError, OSError):
            pass
        raise PrometheusUnavailableError(
            _one_line(f"Prometheus at {url} answered HTTP {error.code}{detail}")
        ) from error
    except (OSError, ValueError) as error:  # URLError, timeouts, refused connections, bad URLs
        reason = getattr(error, "reason", error)
        raise PrometheusUnavailableError(
            _one_line(f"Prometheus at {url} is unreachable: {reason}")
        ) from error
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise PrometheusUnavailableError(_one_line(f"Prometheus at {url} answered non-JSON")) from error
    if not isinstance(payload, dict) or payload.get("status") != "success":
        status = payload.get("status") if isinstance(payload, dict) else None
        error_text = payload.get("error", "") if isinstance(payload, dict) else ""
        raise PrometheusUnavailableError(
            _one_line(f"Prometheus at {url} answered status {status!r}: {error_text}")
        )
    data = payload.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        kind = data.get("resultType") if isinstance(data, dict) else None
        raise PrometheusUnavailableError(
            _one_line(f"Prometheus at {url} answered a {kind!r} result, expected a vector")
        )
    result = data.get("result")
    if not isinstance(result, list):
        raise PrometheusUnavailableError(_one_line(f"Prometheus at {url} answered a malformed vector"))
    return result


def query_window_counts(
    url: str, namespace: str, deployment: str, window_seconds: int, timeout: float = 5.0
) -> Counts:
    """Per-feature counts of ``deployment``'s primary servers over the last ``window_seconds``, keyed
    like ``window.Counts``: ``("bin", feature, bin)``, ``("category", feature, category)``,
    ``("missing", feature, "")``. Raises ``PrometheusUnavailableError`` when Prometheus cannot answer."""
    counts: Counts = {}
    for kind, query in window_queries(namespace, deployment, window_seconds).items():
        for sample in instant_query(url, query, timeout):
            try:
                labels = sample["metric"]
                value = float(sample["value"][1])
            except (KeyError, IndexError, TypeError, ValueError) as error:
                raise PrometheusUnavailableError(
                    _one_line(f"Prometheus at {url} answered a malformed sample: {sample!r}")
                ) from error
            if not math.isfinite(value):
                continue
            feature = labels.get("feature", "")
            if kind == BIN:
                detail = labels.get("bin", "")
            elif kind == CATEGORY:
                detail = labels.get("category", "")
            else:
                detail = ""
            key = (kind, feature, detail)
            counts[key] = counts.get(key, 0.0) + value
    return counts
