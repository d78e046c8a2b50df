"""GPU check of the trainer's CUDA path on a machine with an NVIDIA GPU (not in `make test`: CI has none).

What it proves, each step recorded in a JSON report (``--out``):

1. ``cuda-train``: the built-in trainer (``python -m mlops_operator.runtime.train``, configured only
   through the pod contract's environment, as in a pod) trains on ``cuda:0``, logs the run with tag
   ``mlops.dev/device=cuda`` and registers a model version (MLflow file store: no server needed).
2. ``cuda-deterministic``: a second run with the same seed gives bit-identical metrics (deterministic cuBLAS).
3. ``cpu-serving-of-gpu-model``: the GPU-trained version loads in a process that sees no GPU
   (``CUDA_VISIBLE_DEVICES=""``), as the model server does, and predicts what the GPU process predicts.
4. ``nccl-collectives``: ``DistContext`` with the nccl backend (one rank: a single GPU cannot hold two nccl
   ranks) runs agree/sum/broadcast/barrier on CUDA tensors, and a DistributedDataParallel step with
   ``device_ids`` runs.

Usage: ``python hack/gpu_check.py --out /tmp/gpu-check``. ``--cpu`` rehearses the same steps without a GPU
(device ``cpu``, gloo instead of nccl), to check the script itself before spending GPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from mlops_operator.api.v1alpha1 import pod_contract as pc  # noqa: E402

# the GPU machine has no MLflow server: a file store (MLflow keeps it in maintenance mode, opt-in)
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
ROWS = 20_000
FEATURES = 16


def write_dataset(path: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype("float64")
    weights = rng.normal(size=FEATURES)
    label = np.where(x @ weights + 0.5 * rng.normal(size=ROWS) > 0, "yes", "no")
    frame = pd.DataFrame({f"f{i}": x[:, i] for i in range(FEATURES)})
    frame["label"] = label
    frame.to_csv(path, index=False)


def trainer_spec(model: str, dataset: Path) -> dict[str, Any]:
    return {
        "model": {"name": model},
        "dataset": {"uri": f"file://{dataset}", "target": "label", "split": {"validation": 0.2, "test": 0.2}},
        "trainer": {
            "builtin": {
                "task": "classification",
                "hidden": [512, 512],
                "epochs": 6,
                "batchSize": 256,
                "lr": 0.01,
                "seed": 11,
            }
        },
        "resources": {"gpus": 1},
        "gate": {"metrics": [{"name": "test_accuracy", "op": ">=", "threshold": 0.8}]},
    }


def run_trainer(spec: dict[str, Any], tracking_uri: str, scratch: Path) -> tuple[int, str, str]:
    scratch.mkdir(parents=True, exist_ok=True)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "RANK", "WORLD_SIZE"))
    }
    uid = str(uuid.uuid4())
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "operator"), env.get("PYTHONPATH", "")])),
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(scratch),
            pc.ENV_TRAININGJOB_SPEC: json.dumps(spec),
            pc.ENV_TRAININGJOB_NAME: "gpu-check",
            pc.ENV_TRAININGJOB_NAMESPACE: "gpu",
            pc.ENV_TRAININGJOB_UID: uid,
            pc.ENV_POD_NAME: f"gpu-check-{secrets.token_hex(3)}",
            pc.ENV_IMAGE: "local",
            pc.ENV_TERMINATION_LOG: str(scratch / "termination-log"),
            pc.ENV_MLFLOW_TRACKING_URI: tracking_uri,
            "MLFLOW_ALLOW_FILE_STORE": "true",
            pc.ENV_NNODES: "1",
            pc.ENV_NODE_RANK: "0",
            pc.ENV_NPROC_PER_NODE: "1",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_operator.runtime.train"],
        env=env,
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    termination = scratch / "termination-log"
    message = termination.read_text(encoding="utf-8") if termination.exists() else ""
    return proc.returncode, uid, (message + "\n" + proc.stderr[-3000:]).strip()


def run_of(tracking_uri: str, model: str, uid: str) -> Any:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(model)
    runs = client.search_runs(
        experiment_ids=[experiment.experiment_id], filter_string=f"tags.`{pc.TAG_TRAININGJOB_UID}` = '{uid}'"
    )
    assert len(runs) == 1, f"expected one run for {uid}, found {len(runs)}"
    return runs[0]


PREDICT_SNIPPET = """
import json, sys
import mlflow, pandas as pd, torch
mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_registry_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
frame = pd.read_csv(sys.argv[3]).drop(columns=["label"]).head(200)
out = model.predict(frame)
values = out.tolist() if hasattr(out, "tolist") else list(out)
print(json.dumps({"cuda_available": torch.cuda.is_available(), "predictions": values}, default=str))
"""


def predict_in_subprocess(tracking_uri: str, model_uri: str, dataset: Path, *, gpu: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "operator"), env.get("PYTHONPATH", "")]))
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT_SNIPPET, tracking_uri, model_uri, str(dataset)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"predict (gpu={gpu}) failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def collectives(cpu: bool) -> dict[str, Any]:
    from datetime import timedelta

    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    from mlops_operator.runtime.distributed import DistContext
    from mlops_operator.runtime.tabular_model import MLP

    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"}
    )
    device = torch.device("cpu" if cpu else "cuda:0")
    backend = "gloo" if cpu else "nccl"
    if not cpu:
        torch.cuda.set_device(device)
    tdist.init_process_group(backend=backend, timeout=timedelta(seconds=120))
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device, backend=backend)
    try:
        assert ctx.agree(3) == 3
        assert ctx.sum([1.5, 2.0]) == [1.5, 2.0]
        assert ctx.broadcast_flag(True) is True
        ctx.barrier()
        net = MLP(FEATURES, [64], 2).to(device)
        model = DistributedDataParallel(net, device_ids=None if cpu else [device.index])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(128, FEATURES, device=device)
        y = torch.randint(0, 2, (128,), device=device)
        losses = []
        for _ in range(20):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
        assert losses[-1] < losses[0], losses
        return {"backend": tdist.get_backend(), "loss_first": losses[0], "loss_last": losses[-1]}
    finally:
        ctx.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu", action="store_true", help="rehearse without a GPU")
    args = parser.parse_args()
    expected_device = "cpu" if args.cpu else "cuda"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu-check-{secrets.token_hex(3)}"
    work.mkdir(parents=True)
    os.chdir(work)  # MLflow may create files (mlflow.db) in the working directory
    report: dict[str, Any] = {"steps": {}}

    import torch

    report["torch"] = torch.__version__
    report["cuda_available"] = torch.cuda.is_available()
    report["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    report["nccl"] = ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None

    dataset = work / "data.csv"
    write_dataset(dataset)
    tracking_uri = f"file://{work / 'mlruns'}"
    model = "gpu-check-clf"
    spec = trainer_spec(model, dataset)
    if args.cpu:
        spec["resources"] = {"gpus": 0}
    state: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        started = time.monotonic()
        try:
            detail = fn()
            report["steps"][name] = {"ok": True, "seconds": round(time.monotonic() - started, 2), **detail}
        except Exception as error:
            report["steps"][name] = {
                "ok": False,
                "seconds": round(time.monotonic() - started, 2),
                "error": "".join(traceback.format_exception(error))[-4000:],
            }
        print(json.dumps({name: report["steps"][name]}, default=str), flush=True)

    def cuda_train() -> dict[str, Any]:
        code, uid, log = run_trainer(spec, tracking_uri, work / "run1")
        assert code == 0, f"trainer exit {code}: {log}"
        run = run_of(tracking_uri, model, uid)
        assert run.data.tags["mlops.dev/device"] == expected_device, run.data.tags
        state["metrics"] = dict(run.data.metrics)
        from mlflow import MlflowClient

        versions = MlflowClient(tracking_uri=tracking_uri).search_model_versions(f"name='{model}'")
        assert len(versions) == 1, versions
        state["version"] = versions[0].version
        return {"metrics": state["metrics"], "version": state["version"]}

    def deterministic() -> dict[str, Any]:
        code, uid, log = run_trainer(spec, tracking_uri, work / "run2")
        assert code == 0, f"trainer exit {code}: {log}"
        second = dict(run_of(tracking_uri, model, uid).data.metrics)
        keys = sorted(state["metrics"])
        differ = {
            k: (state["metrics"][k], second.get(k)) for k in keys if state["metrics"][k] != second.get(k)
        }
        assert not differ, f"same seed, different metrics on CUDA: {differ}"
        return {"compared": keys}

    def cpu_serving() -> dict[str, Any]:
        model_uri = f"models:/{model}/{state['version']}"
        on_gpu = predict_in_subprocess(tracking_uri, model_uri, dataset, gpu=True)
        on_cpu = predict_in_subprocess(tracking_uri, model_uri, dataset, gpu=False)
        assert on_cpu["cuda_available"] is False
        assert on_gpu["predictions"] == on_cpu["predictions"], "GPU and CPU predictions differ"
        return {"rows": len(on_cpu["predictions"])}

    step("cuda-train", cuda_train)
    if report["steps"]["cuda-train"]["ok"]:
        step("cuda-deterministic", deterministic)
        step("cpu-serving-of-gpu-model", cpu_serving)
    step("gloo-collectives" if args.cpu else "nccl-collectives", lambda: collectives(args.cpu))
    report["ok"] = all(s["ok"] for s in report["steps"].values()) and len(report["steps"]) == 4
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(json.dumps({"ok": report["ok"]}))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
