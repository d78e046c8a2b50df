"""Count an operator's apiserver requests exactly, as the apiserver sees them: the operator runs as its own
ServiceAccount, and API Priority and Fairness FlowSchemas that match only that account (one per request
class) count what it sends in ``apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}``.
(``apiserver_request_total`` has no user label; the tests' own admin traffic is in the exempt schema.)
``benchmarks/operator/run.py`` uses the same technique."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.kube import Kube

PRIORITY_LEVEL = "mlops-tests-counted"
WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
#: Request classes in matching order: the first FlowSchema that matches a request counts it.
CLASSES = ("events", "write", "read", "watch")


@dataclass
class CountedIdentity:
    """An operator identity whose requests the apiserver counts by class."""

    name: str
    namespace: str
    kubeconfig: Path

    def schema(self, request_class: str) -> str:
        return f"{self.name}-{request_class}"

    def counts(self, kube: Kube) -> dict[str, int]:
        text = kube.kubectl("get", "--raw", "/metrics").stdout
        counts = dict.fromkeys(CLASSES, 0)
        wanted = {self.schema(c): c for c in CLASSES}
        for line in text.splitlines():
            if not line.startswith("apiserver_flowcontrol_dispatched_requests_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[line.index("{") : line.index("}")]))
            request_class = wanted.get(labels.get("flow_schema", ""))
            if request_class:
                counts[request_class] += int(float(line.rsplit(" ", 1)[1]))
        return counts

    def delete(self, kube: Kube) -> None:
        for request_class in CLASSES:
            kube.kubectl(
                "delete", "flowschema", self.schema(request_class), "--ignore-not-found", check=False
            )
        kube.kubectl("delete", "clusterrolebinding", self.name, "--ignore-not-found", check=False)


def counted_identity(
    kube: Kube, namespace: str, server: str, ca_file: Path, directory: Path
) -> CountedIdentity:
    """A cluster-admin ServiceAccount in ``namespace``, its kubeconfig, and FlowSchemas counting its
    requests."""
    name = f"counted-{namespace}"[:60]
    subject = {"kind": "ServiceAccount", "serviceAccount": {"name": "operator", "namespace": namespace}}
    everything = {"apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"], "clusterScope": True}
    rules: dict[str, dict[str, Any]] = {
        "events": {
            "resourceRules": [
                {
                    "verbs": WRITE_VERBS,
                    "apiGroups": ["", "events.k8s.io"],
                    "resources": ["events"],
                    "namespaces": ["*"],
                }
            ]
        },
        "write": {"resourceRules": [{"verbs": WRITE_VERBS, **everything}]},
        "read": {"resourceRules": [{"verbs": ["get", "list"], **everything}]},
        "watch": {"resourceRules": [{"verbs": ["watch"], **everything}]},
    }
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "operator", "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": PRIORITY_LEVEL},
            "spec": {
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": 100,
                    "limitResponse": {
                        "type": "Queue",
                        "queuing": {"queues": 8, "handSize": 4, "queueLengthLimit": 100},
                    },
                },
            },
        },
    ]
    identity = CountedIdentity(name, namespace, directory / f"{name}.kubeconfig")
    for precedence, request_class in enumerate(CLASSES, start=60):
        objects.append(
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {"name": identity.schema(request_class)},
                "spec": {
                    "priorityLevelConfiguration": {"name": PRIORITY_LEVEL},
                    "matchingPrecedence": precedence,
                    "rules": [{"subjects": [subject], **rules[request_class]}],
                },
            }
        )
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    kube.kubectl("apply", "--server-side", "--field-manager=mlops-tests", "-f", "-", input_text=body)
    token = kube.kubectl("create", "token", "operator", "-n", namespace, "--duration=2h").stdout.strip()
    identity.kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
                "current-context": "operator",
            }
        )
    )
    return identity
