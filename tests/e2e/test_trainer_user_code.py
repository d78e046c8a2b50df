"""User code: the command/script runs as a child of the trainer, inside the attempt's MLflow run."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.mlflow_registry import ModelNotFoundError, Registry
from tests.e2e.conftest import Datasets, TrainerRunner, sha256_of, unique

pytestmark = pytest.mark.e2e

USER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys

    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    hp = json.loads(os.environ["MLOPS_HYPERPARAMETERS"])
    frame = pd.read_csv(os.environ["MLOPS_DATASET_PATH"])
    features = json.loads(os.environ["MLOPS_DATASET_FEATURES"])
    x, y = frame[features], frame[os.environ["MLOPS_DATASET_TARGET"]]
    with mlflow.start_run() as run:  # an unmodified script: MLFLOW_RUN_ID makes this the trainer's run
        mlflow.log_param("C", hp["C"])
        mlflow.log_param("argv", " ".join(sys.argv[1:]))
        model = LogisticRegression(C=float(hp["C"]), max_iter=500).fit(x, y)
        accuracy = float((model.predict(x) == y).mean())
        for step in (1, 2):
            mlflow.log_metric("accuracy", accuracy, step=step)
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x)),
            pip_requirements=["scikit-learn"],
        )
        print("USER_RUN_ID", run.info.run_id)
    """
)


def test_user_command_logs_into_the_same_run_and_is_registered(
    trainer: TrainerRunner, datasets: Datasets, tmp_path: Path, mlflow_server: str, mlflow_client: Any
) -> None:
    script = tmp_path / "train_user.py"
    script.write_text(USER_SCRIPT)
    model = unique("user")
    spec = {
        "model": {"name": model},
        "dataset": {"uri": str(datasets.iris_csv), "target": "species", "split": {"test": 0.2}},
        "trainer": {
            "command": [sys.executable, str(script)],
            "args": ["--flag", "value"],
            "hyperparameters": {"C": 2.0},
        },
        "gate": {"metrics": [{"name": "accuracy", "op": ">=", "threshold": 0.8}]},
        "registration": {"alias": "challenger"},
    }
    result = trainer.run(spec)
    assert result.returncode == 0, result.explain()
    user_run_id = next(
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("USER_RUN_ID")
    )

    registry = Registry(mlflow_server)
    runs = registry.training_runs(result.uid, experiments=[model])
    assert [r.run_id for r in runs] == [user_run_id], "the script logged into the trainer's run"
    run = runs[0]
    assert run.status == "FINISHED"
    assert run.params["C"] == "2.0" and run.params["argv"] == "--flag value"  # logged by the user code
    assert run.params["trainer.kind"] == "command"  # logged by the trainer
    assert run.dataset_digest == sha256_of(datasets.iris_csv)
    assert run.gate_outcome == "passed"
    assert [(m.step) for m in mlflow_client.get_metric_history(run.run_id, "accuracy")] == [1, 2]

    version = registry.alias_version(model, "challenger")
    assert version.version == 1 and version.run_id == user_run_id
    loaded = mlflow.pyfunc.load_model(version.model_uri)
    frame = pd.read_csv(datasets.iris_csv).head(10)
    predictions = np.asarray(loaded.predict(frame.drop(columns=["species"])))
    assert set(predictions.tolist()) <= {"setosa", "versicolor", "virginica"}


def test_failing_user_script(trainer: TrainerRunner, datasets: Datasets, mlflow_server: str) -> None:
    model = unique("userfail")
    spec = {
        "model": {"name": model},
        "dataset": {"uri": str(datasets.iris_csv), "target": "species"},
        "trainer": {"script": "print('training...')\nraise ValueError('boom')\n"},
    }
    result = trainer.run(spec)
    assert result.returncode == pc.ExitCode.USER_CODE_FAILED, result.explain()
    assert result.termination_message == "UserCodeFailed: trainer.script exited with code 1: ValueError: boom"
    registry = Registry(mlflow_server)
    run = registry.latest_training_run(result.uid, experiments=[model])
    assert run is not None and run.status == "FAILED" and run.failure_reason == "UserCodeFailed"
    with pytest.raises(ModelNotFoundError):
        registry.get_version(model, 1)
