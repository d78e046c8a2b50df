"""The closed loop with no human action: serve a model, send in-distribution traffic (no retrain), then
shifted traffic -> exactly one retrain -> its gate against the champion -> promotion -> the Deployment rolls
to the new version; cooldown stops a second retrain. A deliberately worse candidate is not promoted and the
policy's status says why. Real control plane, process node, MLflow server, torch training and serving."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.e2e.loop_support import GROUP, VERSION, custom, infer, on_node, serving_pods, trainingjob
from tests.support.kube import Kube, wait_until

pytestmark = pytest.mark.usefixtures("operator")
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def shifted_snapshot(reference: Path, directory: Path, *, random_labels: bool = False) -> Path:
    """The newest data: petals grew by 40% (labels kept, or shuffled for a worse candidate)."""
    frame = pd.read_csv(reference)
    rng = np.random.default_rng(5)
    frame = frame.sample(n=450, replace=True, random_state=5).reset_index(drop=True)
    frame["petal_length"] = frame["petal_length"] * 1.4 + rng.normal(0, 0.1, len(frame))
    frame["petal_width"] = frame["petal_width"] * 1.4 + rng.normal(0, 0.05, len(frame))
    if random_labels:
        frame["species"] = rng.permutation(frame["species"].to_numpy())
    path = directory / ("noise.csv" if random_labels else "latest.csv")
    frame.round(3).to_csv(path, index=False)
    return path


def rows(path: Path, n: int, seed: int) -> list[list[float]]:
    frame = pd.read_csv(path).sample(n=n, replace=True, random_state=seed)
    return frame[FEATURES].to_numpy(dtype=float).tolist()


def send(ip: str, model: str, data: list[list[float]], batch: int = 25) -> None:
    for start in range(0, len(data), batch):
        infer(ip, model, data[start : start + batch])


def policy(name: str, model_deployment: str, retrain_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DriftPolicy",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"name": model_deployment},
            "method": "psi",
            "threshold": 0.2,
            "driftShare": 0.5,
            "windowSeconds": 60,
            "minSamples": 150,
            "intervalSeconds": 10,
            "forSeconds": 0,
            "action": {
                "retrain": {"template": {"spec": retrain_spec}},
                "cooldownSeconds": 3600,
                "maxRetrainsPerDay": 5,
            },
            "promotion": {"mode": "auto", "alias": "champion"},
        },
    }


def dp_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return custom(kube, namespace, "driftpolicies", name).get("status") or {}


def serving_ip(kube: Kube, namespace: str, name: str, version: int) -> str:
    def ready() -> str | None:
        status = custom(kube, namespace, "modeldeployments", name).get("status") or {}
        pods = serving_pods(kube, namespace, name)
        live = [
            p
            for p in pods
            if p.metadata.labels.get("mlops.dev/model-version") == str(version)
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        done = status.get("resolvedVersion") == version and live and len(live) == len(pods)
        return live[0].status.pod_ip if done else None

    return wait_until(ready, timeout=240, interval=1, message=f"{name} to serve version {version}")


@pytest.mark.timeout(1500)
def test_drift_retrains_promotes_and_rolls_out_and_a_worse_candidate_is_rejected(
    kube: Kube, namespace: str, process_node: str, iris_csv: Path, tmp_path: Path
) -> None:
    model = f"iris-drift-{secrets.token_hex(3)}"
    latest = shifted_snapshot(iris_csv, tmp_path)
    kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "trainingjobs", trainingjob("base", model, iris_csv, process_node, seed=1)
    )
    wait_until(
        lambda: (custom(kube, namespace, "trainingjobs", "base").get("status") or {}).get("modelVersion"),
        timeout=300,
        interval=1,
        message="v1 registered",
    )
    deployment = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "served"},
        "spec": {"model": {"name": model, "alias": "champion"}, "scheduling": on_node(process_node)},
    }
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", deployment)
    ip = serving_ip(kube, namespace, "served", 1)

    retrain = trainingjob("unused", model, latest, process_node, seed=2)["spec"]
    retrain["gate"] = {"mustBeat": {"alias": "champion", "metric": "accuracy", "margin": 0.0}}
    retrain["registration"] = {"alias": "challenger"}  # promotion, not registration, moves champion
    kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "driftpolicies", policy("watch", "served", retrain)
    )

    # in-distribution traffic: evaluated, no drift, no retrain
    send(ip, model, rows(iris_csv, 250, seed=1))
    status = wait_until(
        lambda: (
            (s := dp_status(kube, namespace, "watch")).get("lastEvaluation", {}).get("samples", 0) >= 150
            and s
        ),
        timeout=90,
        interval=1,
        message=lambda: f"an evaluation of in-distribution traffic: {dp_status(kube, namespace, 'watch')}",
    )
    assert status["drifted"] is False, json.dumps(status["lastEvaluation"])
    assert "lastRetrain" not in status

    # shifted traffic: drift -> exactly one retrain
    drift_started = time.monotonic()

    def retrained() -> dict[str, Any] | None:
        send(ip, model, rows(latest, 50, seed=int(time.monotonic())))
        status = dp_status(kube, namespace, "watch")
        return status if status.get("lastRetrain") else None

    status = wait_until(
        retrained,
        timeout=120,
        interval=2,
        message=lambda: f"a retrain: {dp_status(kube, namespace, 'watch')}",
    )
    decision_to_job = time.monotonic() - drift_started
    assert status["drifted"] is True
    assert any(
        f["drifted"] and f["feature"].startswith("petal") for f in status["lastEvaluation"]["featureScores"]
    )
    job_name = status["lastRetrain"]["name"]
    assert job_name == "watch-retrain-1"
    job = custom(kube, namespace, "trainingjobs", job_name)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DriftPolicy"
    assert job["metadata"]["annotations"]["mlops.dev/drift-reason"]

    # the retrained version beats the champion on the new data -> promoted -> rolled out
    status = wait_until(
        lambda: (s := dp_status(kube, namespace, "watch")).get("lastPromotion") and s,
        timeout=400,
        interval=2,
        message=lambda: f"promotion: {dp_status(kube, namespace, 'watch')}",
    )
    assert (status["lastPromotion"]["version"], status["lastPromotion"]["previousVersion"]) == (2, 1)
    ip2 = serving_ip(kube, namespace, "served", 2)
    assert infer(ip2, model, rows(latest, 1, seed=9))["model_version"] == "2"
    md_status = custom(kube, namespace, "modeldeployments", "served")["status"]
    assert md_status["rollout"]["history"][0]["reason"] == "AliasMoved"
    retrain_job = custom(kube, namespace, "trainingjobs", job_name)["status"]
    assert (
        retrain_job["datasetDigest"]
        != custom(kube, namespace, "trainingjobs", "base")["status"]["datasetDigest"]
    )

    # cooldown: still drifted traffic, but no second retrain
    send(ip2, model, rows(iris_csv, 200, seed=3))
    time.sleep(25)
    status = dp_status(kube, namespace, "watch")
    jobs = [
        j
        for j in kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs")["items"]
        if j["metadata"]["name"].startswith("watch-retrain")
    ]
    assert len(jobs) == 1
    reasons = {e.reason for e in kube.events_for(namespace, "watch")}
    assert {"DriftDetected", "RetrainStarted", "Promoted"} <= reasons

    # a worse candidate (shuffled labels) fails its mustBeat gate: nothing changes, status says why
    noise = shifted_snapshot(iris_csv, tmp_path, random_labels=True)
    bad = trainingjob("unused", model, noise, process_node, seed=3)["spec"]
    bad["gate"] = {"mustBeat": {"alias": "champion", "metric": "accuracy", "margin": 0.0}}
    bad["registration"] = {"alias": "challenger"}
    kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "driftpolicies", policy("noisy", "served", bad)
    )
    send(
        ip2, model, rows(iris_csv, 300, seed=4)
    )  # v2 was trained on shifted data: original inputs drift for it

    def rejected() -> dict[str, Any] | None:
        send(ip2, model, rows(iris_csv, 30, seed=int(time.monotonic())))
        status = dp_status(kube, namespace, "noisy")
        promoted = [c for c in status.get("conditions") or [] if c["type"] == "Promoted"]
        return status if promoted and promoted[0]["status"] == "False" else None

    status = wait_until(
        rejected, timeout=500, interval=3, message=lambda: f"rejection: {dp_status(kube, namespace, 'noisy')}"
    )
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Promoted")
    assert "GateFailed" in message and "champion" in message
    assert "lastPromotion" not in status
    from mlflow import MlflowClient

    assert MlflowClient().get_model_version_by_alias(model, "champion").version == "2"
    print(f"drift decision -> retrain TrainingJob in {decision_to_job:.1f}s (including traffic)")
