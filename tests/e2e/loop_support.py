"""Helpers of the e2e loop tests: manifests placed on the e2e process node, reads, inference calls."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.kube import Kube, wait_until

GROUP, VERSION = "mlops.dev", "v1alpha1"
#: The e2e process node's taint: only pods that tolerate it (ours) land there.
TAINT = {"key": "mlops.dev/process-node", "value": "e2e", "effect": "NoSchedule"}


def on_node(node: str) -> dict[str, Any]:
    return {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [
            {"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"], "effect": "NoSchedule"}
        ],
    }


def trainingjob(name: str, model: str, dataset: Path, node: str, seed: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": model},
            "dataset": {
                "uri": f"file://{dataset}",
                "target": "species",
                "split": {"validation": 0.2, "test": 0.2},
            },
            "trainer": {
                "builtin": {"task": "classification", "hidden": [16], "epochs": 15, "lr": 0.02, "seed": seed}
            },
            "resources": {"cpu": "1", "memory": "2Gi"},
            "gate": {"metrics": [{"name": "val_accuracy", "op": ">=", "threshold": 0.5}]},
            "registration": {"alias": "champion"},
            "scheduling": on_node(node),
            "runPolicy": {"backoffLimit": 0},
        },
    }


def custom(kube: Kube, namespace: str, plural: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    return result


def wait_trainingjob(kube: Kube, namespace: str, name: str, timeout: float = 300) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = custom(kube, namespace, "trainingjobs", name).get("status") or {}
        if status.get("phase") == "Failed":
            raise AssertionError(f"{name} failed: {json.dumps(status.get('failure'))}")
        return status if status.get("phase") == "Succeeded" and status.get("modelVersion") else None

    return wait_until(
        done,
        timeout=timeout,
        interval=1,
        message=lambda: f"{name} to succeed: {custom(kube, namespace, 'trainingjobs', name).get('status')}",
    )


def serving_pods(kube: Kube, namespace: str, name: str) -> list[Any]:
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"mlops.dev/modeldeployment={name}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def infer(pod_ip: str, model: str, rows: list[list[float]]) -> dict[str, Any]:
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    body = {
        "inputs": [
            {"name": column, "shape": [len(rows)], "datatype": "FP64", "data": [row[i] for row in rows]}
            for i, column in enumerate(columns)
        ]
    }
    request = urllib.request.Request(
        f"http://{pod_ip}:8080/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a local pod IP
        result: dict[str, Any] = json.loads(response.read())
        return result
