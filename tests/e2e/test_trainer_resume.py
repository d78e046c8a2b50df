"""Checkpoints: an attempt killed after epoch k is resumed by the next attempt at epoch k+1, with a coherent
metric history and the same result as an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlops_operator.api.v1alpha1 import mlflow_contract as names
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.mlflow_registry import Registry
from tests.e2e.conftest import Datasets, TrainerRunner, builtin_spec, unique

pytestmark = pytest.mark.e2e


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_killed_attempt_resumes_from_its_latest_checkpoint(
    trainer: TrainerRunner, datasets: Datasets, tmp_path: Path, mlflow_server: str, mlflow_client: Any
) -> None:
    model = unique("resume")
    checkpoints = tmp_path / "checkpoints"
    spec = builtin_spec(
        model,
        f"file://{datasets.iris_csv}",
        "species",
        epochs=6,
        builtin={"dropout": 0.1},
        runPolicy={"checkpoint": {"uri": str(checkpoints), "everyEpochs": 2}},
    )
    uid = str(uuid.uuid4())
    first = trainer.run(spec, uid=uid, pod="resume-0", extra={names.ENV_FAULT_EXIT_AFTER_EPOCH: "4"})
    assert first.returncode == 137, first.explain()
    written = sorted(p.name for p in (checkpoints / uid).iterdir())
    assert written == ["checkpoint-epoch-000002.pt", "checkpoint-epoch-000004.pt"]

    second = trainer.run(spec, uid=uid, pod="resume-1")
    assert second.returncode == 0, second.explain()
    assert "resuming from the checkpoint of epoch 4: starting at epoch 5" in second.stderr
    assert "epoch 1/6" not in second.stderr and "epoch 5/6" in second.stderr

    registry = Registry(mlflow_server)
    runs = registry.training_runs(uid, experiments=[model])
    assert [r.attempt for r in runs] == ["resume-1", "resume-0"], "one run per attempt, latest first"
    resumed, killed = runs
    assert killed.status == "KILLED"  # the next attempt ended the run its dead predecessor left RUNNING
    assert "superseded by attempt resume-1" in (killed.failure_message or "")
    assert resumed.status == "FINISHED"
    assert resumed.resumed_from_epoch == 4
    assert resumed.tags[names.TAG_RESUMED_FROM_RUN] == killed.run_id
    view = registry.observe_training_job(uid, experiments=[model])
    assert view is not None and view.run_id == resumed.run_id and (view.epoch, view.total_epochs) == (6, 6)

    # the resumed run's history covers every epoch once; its first epochs are the killed run's
    loss = _history(mlflow_client, resumed.run_id, "loss")
    assert [step for step, _ in loss] == [1, 2, 3, 4, 5, 6]
    assert loss[:4] == _history(mlflow_client, killed.run_id, "loss")
    assert [v.version for v in registry.trainingjob_versions(model, uid)] == [1]

    # and training continued exactly where it stopped: same result as a run never interrupted
    baseline = trainer.run(spec, pod="straight-0")
    assert baseline.returncode == 0, baseline.explain()
    straight = registry.latest_training_run(baseline.uid, experiments=[model])
    assert straight is not None
    for key in ("loss", "val_loss", "val_accuracy"):
        assert _history(mlflow_client, straight.run_id, key) == _history(
            mlflow_client, resumed.run_id, key
        ), key
    assert straight.metrics["test_accuracy"] == resumed.metrics["test_accuracy"]


def test_sigterm_stops_training_and_ends_the_run_killed(
    trainer: TrainerRunner, datasets: Datasets, mlflow_server: str
) -> None:
    """What a pod deletion or preemption sends: the trainer stops at the next batch, ends its run KILLED and
    exits 1 (TrainerError, retried by the Job)."""
    model = unique("sigterm")
    spec = builtin_spec(model, str(datasets.iris_csv), "species", epochs=5000)
    env = trainer.env(spec)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_operator.runtime.train"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("epoch 3/5000"):
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == pc.ExitCode.UNEXPECTED, "".join(seen) + rest
    message = Path(env[pc.ENV_TERMINATION_LOG]).read_text()
    assert message.startswith("TrainerError: terminated by SIGTERM")
    run = Registry(mlflow_server).latest_training_run(env[pc.ENV_TRAININGJOB_UID], experiments=[model])
    assert run is not None and run.status == "KILLED" and run.failure_reason == "TrainerError"
    assert run.epoch is not None and 3 <= run.epoch < 5000
