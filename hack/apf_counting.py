"""Count one identity's apiserver requests exactly, as the apiserver sees them: API Priority and Fairness
FlowSchemas that match only that ServiceAccount, one per request class, count what it sends in
``apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}``. (``apiserver_request_total`` has no
user label; an admin's own traffic lands in the exempt schema and is never counted.)

Pure manifests and parsing, no I/O: used by ``tests/support/request_counting.py`` (the write-count cluster
tests) and ``benchmarks/operator/run.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
_EVERYTHING = {"apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"], "clusterScope": True}

#: FlowSchema rules of the request classes both users share.
EVENT_WRITES: dict[str, Any] = {
    "resourceRules": [
        {
            "verbs": WRITE_VERBS,
            "apiGroups": ["", "events.k8s.io"],
            "resources": ["events"],
            "namespaces": ["*"],
        }
    ]
}
ANY_WRITE: dict[str, Any] = {"resourceRules": [{"verbs": WRITE_VERBS, **_EVERYTHING}]}
READS: dict[str, Any] = {"resourceRules": [{"verbs": ["get", "list"], **_EVERYTHING}]}
WATCHES: dict[str, Any] = {"resourceRules": [{"verbs": ["watch"], **_EVERYTHING}]}

_DISPATCHED = re.compile(r"^apiserver_flowcontrol_dispatched_requests_total\{([^}]*)\} (\S+)$")


def flow_objects(
    service_account: tuple[str, str],
    classes: Mapping[str, Mapping[str, Any]],
    prefix: str,
    precedence: int,
) -> list[dict[str, Any]]:
    """A priority level ``<prefix>counted`` and one FlowSchema ``<prefix><class>`` per request class, all
    matching only ``service_account`` (namespace, name). ``classes`` is in matching order: the first
    FlowSchema that matches a request counts it; their precedences start at ``precedence``."""
    namespace, name = service_account
    subject = {"kind": "ServiceAccount", "serviceAccount": {"name": name, "namespace": namespace}}
    level = f"{prefix}counted"
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": level},
            "spec": {
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": 200,
                    "limitResponse": {
                        "type": "Queue",
                        "queuing": {"queues": 16, "handSize": 4, "queueLengthLimit": 1000},
                    },
                },
            },
        }
    ]
    for offset, (request_class, rules) in enumerate(classes.items()):
        objects.append(
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {"name": f"{prefix}{request_class}"},
                "spec": {
                    "priorityLevelConfiguration": {"name": level},
                    "matchingPrecedence": precedence + offset,
                    "rules": [{"subjects": [subject], **rules}],
                },
            }
        )
    return objects


def dispatched(metrics_text: str, prefix: str, classes: Sequence[str]) -> dict[str, int]:
    """Requests dispatched so far per class, from the apiserver's ``/metrics`` text."""
    counts = dict.fromkeys(classes, 0)
    for line in metrics_text.splitlines():
        match = _DISPATCHED.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        request_class = labels.get("flow_schema", "").removeprefix(prefix)
        if labels.get("flow_schema", "").startswith(prefix) and request_class in counts:
            counts[request_class] += int(float(match.group(2)))
    return counts


def token_kubeconfig(server: str, token: str, ca_file: Path) -> dict[str, Any]:
    """A kubeconfig that logs in to ``server`` with a ServiceAccount ``token``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    }
