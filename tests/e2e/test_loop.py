"""The loop so far, for real: the operator on the real control plane, a process node that runs the pods as
local processes, a real MLflow server, real torch training and real serving.

TrainingJob trains on the process node and registers version 1 as champion -> a ModelDeployment serves it
and answers predictions through its pod IP -> a second TrainingJob registers version 2 and moves champion
-> the Deployment rolls and the new pod answers with version 2 -> deleting the ModelDeployment stops its
processes.
"""

from __future__ import annotations

import secrets
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.loop_support import (
    GROUP,
    VERSION,
    custom,
    infer,
    on_node,
    serving_pods,
    trainingjob,
    wait_trainingjob,
)
from tests.support.kube import Kube, wait_until

pytestmark = pytest.mark.usefixtures("operator")


@pytest.mark.timeout(900)
def test_train_serve_and_roll_to_a_new_champion(
    kube: Kube, namespace: str, process_node: str, iris_csv: Path, mlflow_server: str
) -> None:
    model = f"iris-{secrets.token_hex(3)}"
    started = time.monotonic()
    kube.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "trainingjobs",
        trainingjob("train-1", model, iris_csv, process_node, seed=1),
    )
    first = wait_trainingjob(kube, namespace, "train-1")
    assert first["modelVersion"] == 1
    assert first["datasetDigest"].startswith("sha256:")
    assert first["mlflowRunId"]
    assert first["progress"]["epoch"] >= 1
    assert first["gate"]["passed"] is True
    trained_after = time.monotonic() - started

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_model_version_by_alias(model, "champion").version == "1"

    deployment = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {
            "model": {"name": model, "alias": "champion"},
            "resources": {"cpu": "500m", "memory": "1Gi"},
            "scheduling": on_node(process_node),
        },
    }
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", deployment)

    def ready_on(version: int) -> list[Any] | None:
        status = custom(kube, namespace, "modeldeployments", "iris").get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        pods = [
            p
            for p in serving_pods(kube, namespace, "iris")
            if p.metadata.labels.get("mlops.dev/model-version") == str(version)
        ]
        live = [
            p
            for p in pods
            if p.status.pod_ip
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        done = (
            ready
            and status.get("resolvedVersion") == version
            and live
            and len(serving_pods(kube, namespace, "iris")) == len(live)
        )
        return live if done else None

    pods = wait_until(lambda: ready_on(1), timeout=180, interval=1, message="version 1 served")
    setosa, virginica = [5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.4, 2.1]
    answer = infer(pods[0].status.pod_ip, model, [setosa, virginica])
    assert answer["model_version"] == "1"
    assert answer["outputs"][0]["data"][0] == "setosa"

    kube.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "trainingjobs",
        trainingjob("train-2", model, iris_csv, process_node, seed=2),
    )
    second = wait_trainingjob(kube, namespace, "train-2")
    assert second["modelVersion"] == 2
    pods = wait_until(lambda: ready_on(2), timeout=180, interval=1, message="rolled to version 2")
    assert infer(pods[0].status.pod_ip, model, [setosa])["model_version"] == "2"
    status = custom(kube, namespace, "modeldeployments", "iris")["status"]
    assert [(r["version"], r["reason"]) for r in status["rollout"]["history"]] == [
        (2, "AliasMoved"),
        (1, "Initial"),
    ]

    pod_ip = pods[0].status.pod_ip
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "iris")
    wait_until(lambda: not serving_pods(kube, namespace, "iris"), timeout=90, message="serving pods gone")

    def stopped() -> bool:
        try:
            urllib.request.urlopen(f"http://{pod_ip}:8080/v2/health/live", timeout=1)
        except OSError:
            return True
        return False

    wait_until(stopped, timeout=30, message="the server process to stop")
    print(
        f"first model registered after {trained_after:.0f}s; loop done in {time.monotonic() - started:.0f}s"
    )
