"""`make demo`: the whole loop on one machine, for real, with a narrative.

Starts (in ``.demo/``) a local control plane whose only node is a process node (pods run as local processes),
a real MLflow server and the operator; then: a TrainingJob trains iris with torch and registers version 1 as
champion -> a ModelDeployment serves it and the demo sends requests (predictions, latency) -> a DriftPolicy
watches the inputs: in-distribution traffic is no drift, shifted traffic is -> a retrain TrainingJob runs on
the newest data snapshot, passes its gate against the champion, is promoted -> the deployment rolls to
version 2. Ends with a summary table, a PNG of the story and where to look. Everything keeps running until
``make demo-down`` (``python hack/demo.py down``).

The manifests it applies are written to ``.demo/manifests/``; ``python hack/demo.py up`` starts only the
infrastructure, for a user who wants to apply things by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

import local_cluster
from mlflow_server import MlflowServer

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
NAMESPACE = "default"
MODEL = "iris-classifier"
NODE = "demo-node"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
T = TypeVar("T")
_started = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {text}", flush=True)


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def wait(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}; logs are in {DEMO / 'logs'}")


# ------------------------------------------------------------------------------------------ infrastructure


def cluster_state() -> local_cluster.StateDir:
    return local_cluster.StateDir(DEMO / "cluster")


def kubectl(*args: str, input_text: str | None = None, check: bool = True) -> str:
    info = local_cluster.load_info(cluster_state())
    assert info is not None
    return local_cluster.kubectl(info, *args, input_text=input_text, check=check)


def start_background(name: str, argv: list[str], env: dict[str, str]) -> None:
    logs = DEMO / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    (DEMO / f"{name}.pid").write_text(str(process.pid))


def stop_background(name: str) -> None:
    pid_file = DEMO / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)


def up() -> dict[str, str]:
    """Control plane (no fake nodes), MLflow, the operator and the process node. Returns the endpoints."""
    step("Infrastructure: a real Kubernetes control plane, MLflow, the operator, a process node")
    DEMO.mkdir(exist_ok=True)
    info = local_cluster.up(cluster_state(), nodes=())
    say(f"control plane up: {info.server} (Kubernetes {info.kube_version})")
    kubectl("apply", "--server-side", "--field-manager=demo", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))

    endpoints_file = DEMO / "endpoints.json"
    mlflow = MlflowServer(DEMO / "mlflow")
    if not (DEMO / "mlflow.pid").exists():
        mlflow.start()
        (DEMO / "mlflow.pid").write_text(str(mlflow.process.pid if mlflow.process else 0))
        endpoints_file.write_text(json.dumps({"mlflow": mlflow.tracking_uri}))
    endpoints: dict[str, str] = json.loads(endpoints_file.read_text())
    say(f"MLflow server: {endpoints['mlflow']}")

    env = {
        **os.environ,
        "KUBECONFIG": info.kubeconfig,
        "MLOPS_MLFLOW_TRACKING_URI": endpoints["mlflow"],
        "MLOPS_RUNTIME_IMAGE": "ghcr.io/mlops-operator/runtime:dev",
        "MLOPS_PROGRESS_INTERVAL_SECONDS": "2",
        "MLOPS_RESOLVE_INTERVAL_SECONDS": "3",
        "MLOPS_DRIFT_SCRAPE_INTERVAL_SECONDS": "3",
    }
    venv_bin = Path(sys.executable).parent
    if not (DEMO / "operator.pid").exists():
        start_background("operator", [str(venv_bin / "mlops-operator"), "run", "--verbose"], env)
    say("operator running (log: .demo/logs/operator.log)")
    if not (DEMO / "process-node.pid").exists():
        node_argv = [
            sys.executable,
            str(REPO / "hack" / "process_node.py"),
            "run",
            "--name",
            NODE,
            "--kubeconfig",
            info.kubeconfig,
            "--state-dir",
            str(DEMO / "process-node"),
            "--cpu",
            "8",
            "--memory",
            "16Gi",
        ]
        start_background("process-node", node_argv, env)
    wait(
        "the process node to be Ready",
        lambda: (
            "True"
            in kubectl(
                "get",
                "node",
                NODE,
                "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                check=False,
            )
        ),
        60,
    )
    say(f"process node {NODE} Ready: pods run as local processes (images are ignored)")
    return endpoints


def down() -> None:
    for name in ("operator", "process-node"):
        stop_background(name)
    pid_file = DEMO / "mlflow.pid"
    if pid_file.exists():
        stop_background("mlflow")
    stopped = local_cluster.down(cluster_state())
    print(f"demo stopped ({', '.join(stopped) or 'nothing was running'}); state kept in {DEMO}")


# -------------------------------------------------------------------------------------------------- data


def write_datasets() -> tuple[Path, Path]:
    """Iris as the training data, and a 'newest snapshot' whose petals grew (the world drifted)."""
    import numpy as np
    from sklearn.datasets import load_iris

    data = DEMO / "data"
    data.mkdir(parents=True, exist_ok=True)
    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [str(iris.target_names[t]) for t in frame.pop("target")]
    reference = data / "iris.csv"
    frame.to_csv(reference, index=False)
    rng = np.random.default_rng(7)
    drifted = frame.sample(n=600, replace=True, random_state=7).reset_index(drop=True)
    drifted["petal_length"] = drifted["petal_length"] * 1.4 + rng.normal(0, 0.15, len(drifted))
    drifted["petal_width"] = drifted["petal_width"] * 1.4 + rng.normal(0, 0.08, len(drifted))
    for column in ("sepal_length", "sepal_width"):
        drifted[column] = drifted[column] + rng.normal(0, 0.1, len(drifted))
    snapshot = data / "iris-latest.csv"
    drifted.round(3).to_csv(snapshot, index=False)
    return reference, snapshot


def traffic(frame_path: Path, n: int, seed: int) -> list[list[float]]:
    import pandas as pd

    frame = pd.read_csv(frame_path).sample(n=n, replace=True, random_state=seed)
    return frame[FEATURES].to_numpy(dtype=float).tolist()


# ------------------------------------------------------------------------------------------- manifests


def trainingjob(name: str, dataset: Path, alias: str, must_beat: bool) -> dict[str, Any]:
    gate: dict[str, Any] = {"metrics": [{"name": "test_accuracy", "op": ">=", "threshold": 0.7}]}
    if must_beat:
        gate["mustBeat"] = {"alias": "champion", "metric": "accuracy", "margin": 0.0}
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": MODEL, "description": "iris species from sepal and petal sizes"},
            "dataset": {
                "uri": f"file://{dataset}",
                "target": "species",
                "split": {"validation": 0.2, "test": 0.2, "seed": 3},
            },
            "trainer": {
                "builtin": {"task": "classification", "hidden": [32, 16], "epochs": 30, "lr": 0.01, "seed": 1}
            },
            "resources": {"cpu": "1", "memory": "2Gi"},
            "gate": gate,
            "registration": {"alias": alias},
        },
    }


def manifests(reference: Path, snapshot: Path) -> dict[str, dict[str, Any]]:
    retrain = trainingjob("unused", snapshot, "challenger", must_beat=True)["spec"]
    return {
        "trainingjob": trainingjob("iris-v1", reference, "champion", must_beat=False),
        "modeldeployment": {
            "apiVersion": "mlops.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": NAMESPACE},
            "spec": {
                "model": {"name": MODEL, "alias": "champion"},
                "replicas": {"min": 1},
                "resources": {"cpu": "500m", "memory": "1Gi"},
            },
        },
        "driftpolicy": {
            "apiVersion": "mlops.dev/v1alpha1",
            "kind": "DriftPolicy",
            "metadata": {"name": "iris", "namespace": NAMESPACE},
            "spec": {
                "targetRef": {"name": "iris"},
                "method": "psi",
                "threshold": 0.2,
                "driftShare": 0.5,
                "windowSeconds": 60,
                "minSamples": 150,
                "intervalSeconds": 10,
                "forSeconds": 0,
                "action": {
                    "retrain": {"template": {"spec": retrain}},
                    "cooldownSeconds": 600,
                    "maxRetrainsPerDay": 3,
                },
                "promotion": {"mode": "auto", "alias": "champion"},
            },
        },
    }


def apply(manifest: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "--field-manager=demo", "-f", "-", input_text=json.dumps(manifest))


def get(kind: str, name: str) -> dict[str, Any]:
    out = kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(out) if out.strip() else {}


# -------------------------------------------------------------------------------------------- the story


def wait_trainingjob(name: str, timeout: float = 300) -> dict[str, Any]:
    last = ""

    def done() -> dict[str, Any] | None:
        nonlocal last
        status = get("trainingjob", name).get("status") or {}
        line = f"{name}: {status.get('phase', 'Pending')} {(status.get('progress') or {}).get('summary', '')}"
        if line != last:
            say(line)
            last = line
        if status.get("phase") == "Failed":
            raise SystemExit(f"demo: {name} failed: {json.dumps(status.get('failure'))}")
        return status if status.get("phase") == "Succeeded" and status.get("modelVersion") else None

    return wait(f"{name} to succeed", done, timeout)


def serving_ip(version: int) -> str:
    def ready() -> str | None:
        status = get("modeldeployment", "iris").get("status") or {}
        if status.get("resolvedVersion") != version:
            return None
        pods = json.loads(
            kubectl("get", "pods", "-n", NAMESPACE, "-l", "mlops.dev/modeldeployment=iris", "-o", "json")
        )["items"]
        live = [
            p
            for p in pods
            if p["metadata"].get("labels", {}).get("mlops.dev/model-version") == str(version)
            and not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []
            )
        ]
        return live[0]["status"].get("podIP") if live and len(live) == len(pods) else None

    return wait(f"version {version} to serve", ready, 240)


def send(ip: str, rows: list[list[float]], latencies: list[tuple[float, float]]) -> list[str]:
    predictions = []
    for row in rows:
        body = {
            "inputs": [
                {"name": f, "shape": [1], "datatype": "FP64", "data": [v]}
                for f, v in zip(FEATURES, row, strict=True)
            ]
        }
        request = urllib.request.Request(
            f"http://{ip}:8080/v2/models/{MODEL}/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a local pod address
            answer = json.loads(response.read())
        latencies.append((time.monotonic() - _started, (time.perf_counter() - started) * 1000))
        predictions.append(str(answer["outputs"][0]["data"][0]))
    return predictions


def run_story() -> None:
    endpoints = up()
    reference, snapshot = write_datasets()
    docs = manifests(reference, snapshot)
    manifest_dir = DEMO / "manifests"
    manifest_dir.mkdir(exist_ok=True)
    for name, doc in docs.items():
        (manifest_dir / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    latencies: list[tuple[float, float]] = []
    drift_points: list[tuple[float, float]] = []
    timings: dict[str, float] = {}

    step("1. Train: a TrainingJob trains iris with torch on the process node and registers it as champion")
    t0 = time.monotonic()
    apply(docs["trainingjob"])
    v1 = wait_trainingjob("iris-v1")
    timings["train v1"] = time.monotonic() - t0
    say(f"registered {v1['modelUri']} (run {v1['mlflowRunId']}, data {v1['datasetDigest'][:19]}...)")

    step("2. Serve: a ModelDeployment follows the champion alias")
    t0 = time.monotonic()
    apply(docs["modeldeployment"])
    ip = serving_ip(1)
    timings["serve v1"] = time.monotonic() - t0
    predictions = send(ip, traffic(reference, 5, seed=1), latencies)
    say(f"pod {ip} answers: {predictions}")
    rows = traffic(reference, 200, seed=2)
    send(ip, rows, latencies)
    recent = [ms for _, ms in latencies[-200:]]
    say(f"200 requests: p50 {statistics.median(recent):.2f} ms, p99 {sorted(recent)[197]:.2f} ms")

    step("3. Watch: a DriftPolicy compares live inputs with the training data's reference profile")
    apply(docs["driftpolicy"])
    t_watch = time.monotonic()

    def evaluated_after(since: float, want_samples: int) -> dict[str, Any] | None:
        status = get("driftpolicy", "iris").get("status") or {}
        evaluation = status.get("lastEvaluation") or {}
        if evaluation.get("driftedShare") is not None:
            drift_points.append((time.monotonic() - _started, float(evaluation["driftedShare"])))
        if evaluation.get("samples", 0) >= want_samples and time.monotonic() > since:
            return status
        return None

    send(ip, traffic(reference, 200, seed=3), latencies)
    status = wait("an evaluation of in-distribution traffic", lambda: evaluated_after(t_watch + 10, 150), 90)
    say(
        f"in-distribution traffic: drifted={status.get('drifted')}, "
        f"drifted share {status['lastEvaluation'].get('driftedShare')}"
    )

    step("4. Drift: the inputs shift (petals grew); the policy retrains on the newest data snapshot")
    t0 = time.monotonic()
    shifted = traffic(snapshot, 300, seed=4)
    send(ip, shifted, latencies)

    def retrain_started() -> dict[str, Any] | None:
        send(ip, traffic(snapshot, 20, seed=int(time.monotonic())), latencies)
        status = evaluated_after(t0, 1) or {}
        return status if status.get("lastRetrain") else None

    status = wait("drift to trigger a retrain", retrain_started, 120, interval=2)
    retrain_name = status["lastRetrain"]["name"]
    say(f"drift detected: {status['lastRetrain'].get('reason')}")
    say(f"created {retrain_name}")
    v2 = wait_trainingjob(retrain_name)
    timings["drift -> retrained"] = time.monotonic() - t0

    step("5. Promote and roll out: the retrained version beat the champion on the new held-out data")
    t0 = time.monotonic()
    ip2 = serving_ip(int(v2["modelVersion"]))
    timings["promotion -> serving"] = time.monotonic() - t0
    predictions = send(ip2, shifted[:5], latencies)
    say(f"version {v2['modelVersion']} serves at {ip2}: {predictions}")
    policy = get("driftpolicy", "iris").get("status") or {}

    step("Summary")
    rows_out = [
        (
            "version 1",
            v1["modelVersion"],
            v1["progress"]["metrics"].get("val_accuracy"),
            v1["datasetDigest"][:23],
        ),
        (
            "version 2",
            v2["modelVersion"],
            v2["progress"]["metrics"].get("val_accuracy"),
            v2["datasetDigest"][:23],
        ),
    ]
    print(f"{'model':<10} {'version':>7} {'val_accuracy':>12}  dataset")
    for label, version, accuracy, digest in rows_out:
        print(
            f"{label:<10} {version:>7} {accuracy if accuracy is None else round(accuracy, 3):>12}  {digest}"
        )
    print(f"last promotion: {json.dumps(policy.get('lastPromotion'))}")
    for name, seconds in timings.items():
        print(f"{name:<22} {seconds:6.1f}s")
    picture = plot(latencies, drift_points, rows_out)
    print(f"\npicture: {picture}\nMLflow UI: {endpoints['mlflow']}")
    print(
        'kubectl: MLOPS_CLUSTER_DIR=.demo/cluster eval "$(.venv/bin/python hack/local_cluster.py env)"; then'
    )
    print("  kubectl get mlops; kubectl describe dp iris; kubectl describe tj iris-v1")
    print("stop everything: make demo-down")
    print(f"total {time.monotonic() - _started:.0f}s")


def plot(
    latencies: list[tuple[float, float]], drift: list[tuple[float, float]], versions: list[tuple[Any, ...]]
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    left.bar([str(v[1]) for v in versions], [v[2] or 0 for v in versions], color=["#4c72b0", "#55a868"])
    left.set(title="validation accuracy per model version", xlabel="version", ylim=(0, 1))
    middle.plot([t for t, _ in latencies], [ms for _, ms in latencies], ".", markersize=2)
    middle.set(title="request latency", xlabel="seconds into the demo", ylabel="ms")
    right.plot([t for t, _ in drift], [s for _, s in drift], "-o", markersize=3, label="drifted share")
    right.axhline(0.5, color="red", linestyle="--", label="driftShare threshold")
    right.set(title="drift", xlabel="seconds into the demo", ylim=(0, 1.05))
    right.legend()
    figure.tight_layout()
    path = DEMO / "demo.png"
    figure.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "up", "down"])
    args = parser.parse_args(argv)
    os.environ["MLOPS_CLUSTER_DIR"] = str(DEMO / "cluster")
    if args.command == "down":
        down()
    elif args.command == "up":
        endpoints = up()
        print(f"MLflow: {endpoints['mlflow']}; KUBECONFIG={cluster_state().kubeconfig}")
    else:
        run_story()
    return 0


if __name__ == "__main__":
    sys.exit(main())
