"""Count an operator's apiserver requests exactly, as the apiserver sees them: the operator runs as its own
ServiceAccount, and API Priority and Fairness FlowSchemas that match only that account (one per request
class) count what it sends (``hack/apf_counting.py``, which ``benchmarks/operator/run.py`` uses too)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apf_counting
from tests.support.kube import Kube

#: Request classes in matching order: the first FlowSchema that matches a request counts it.
RULES = {
    "events": apf_counting.EVENT_WRITES,
    "write": apf_counting.ANY_WRITE,
    "read": apf_counting.READS,
    "watch": apf_counting.WATCHES,
}
CLASSES = tuple(RULES)


@dataclass
class CountedIdentity:
    """An operator identity whose requests the apiserver counts by class."""

    name: str
    namespace: str
    kubeconfig: Path

    @property
    def prefix(self) -> str:
        return f"{self.name}-"

    def counts(self, kube: Kube) -> dict[str, int]:
        metrics = kube.kubectl("get", "--raw", "/metrics").stdout
        return apf_counting.dispatched(metrics, self.prefix, CLASSES)

    def delete(self, kube: Kube) -> None:
        for request_class in CLASSES:
            kube.kubectl(
                "delete", "flowschema", f"{self.prefix}{request_class}", "--ignore-not-found", check=False
            )
        kube.kubectl(
            "delete", "prioritylevelconfiguration", f"{self.prefix}counted", "--ignore-not-found", check=False
        )
        kube.kubectl("delete", "clusterrolebinding", self.name, "--ignore-not-found", check=False)


def counted_identity(
    kube: Kube, namespace: str, server: str, ca_file: Path, directory: Path
) -> CountedIdentity:
    """A cluster-admin ServiceAccount in ``namespace``, its kubeconfig, and FlowSchemas counting its
    requests."""
    name = f"counted-{namespace}"[:60]
    identity = CountedIdentity(name, namespace, directory / f"{name}.kubeconfig")
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
        *apf_counting.flow_objects((namespace, "operator"), RULES, identity.prefix, precedence=60),
    ]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    kube.kubectl("apply", "--server-side", "--field-manager=mlops-tests", "-f", "-", input_text=body)
    token = kube.kubectl("create", "token", "operator", "-n", namespace, "--duration=2h").stdout.strip()
    identity.kubeconfig.write_text(json.dumps(apf_counting.token_kubeconfig(server, token, ca_file)))
    return identity
