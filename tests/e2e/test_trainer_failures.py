"""Bad input, an unreachable MLflow and a failing gate: a distinct exit code, one termination line, the run
marked failed, and nothing registered."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlflow_server import free_port
from mlops_operator.api.v1alpha1 import mlflow_contract as names
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.mlflow_registry import ModelNotFoundError, Registry, RegistryUnavailableError
from tests.e2e.conftest import (
    Datasets,
    StaticServer,
    TrainerRunner,
    builtin_spec,
    classification_frame,
    unique,
)

pytestmark = pytest.mark.e2e


def _assert_nothing_registered(registry: Registry, model: str) -> None:
    with pytest.raises(ModelNotFoundError):
        registry.get_version(model, 1)


def test_gate_threshold_failure_registers_nothing(
    trainer: TrainerRunner, datasets: Datasets, mlflow_server: str
) -> None:
    path = datasets.directory / "random-labels.csv"
    classification_frame(n=120, seed=5, random_labels=True).to_csv(path, index=False)
    model = unique("gated")
    spec = builtin_spec(
        model,
        str(path),
        "label",
        epochs=2,
        gate={"metrics": [{"name": "test_accuracy", "op": ">=", "threshold": 0.99}]},
        registration={"alias": "challenger"},
    )
    result = trainer.run(spec)
    assert result.returncode == pc.ExitCode.GATE_FAILED, result.explain()
    message = result.termination_message
    assert message is not None and "\n" not in message
    assert message.startswith("GateFailed: test_accuracy ")
    assert "does not meet >= 0.99" in message and f"{model} was not registered" in message
    registry = Registry(mlflow_server)
    _assert_nothing_registered(registry, model)
    run = registry.latest_training_run(result.uid, experiments=[model])
    assert run is not None
    assert run.status == "FAILED"
    assert run.gate_outcome == "failed" and run.failure_reason == "GateFailed"
    assert run.gate is not None and not run.gate.passed and run.gate.results[0].value is not None
    assert run.model_version is None


def _write(directory: Path, name: str, frame: Any) -> str:
    path = directory / name
    frame.to_csv(path, index=False)
    return str(path)


def _bad_datasets(directory: Path, http: StaticServer) -> dict[str, tuple[str, str, str]]:
    """case -> (uri, task, expected text in the message)"""
    good = classification_frame(n=40, seed=2)
    nan = good.copy()
    nan.loc[[3, 7], "x2"] = np.nan
    wrong = good.astype({"x1": object})
    wrong.loc[5, "x1"] = "abc"
    regression_labels = good.rename(columns={"label": "y"})
    garbage = directory / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet")
    no_target = _write(directory, "no-target.csv", good.drop(columns=["label"]))
    return {
        "missing-file": (str(directory / "nope.csv"), "classification", "does not exist"),
        "missing-target": (no_target, "classification", "target column 'label' is not in dataset"),
        "nan": (
            _write(directory, "nan.csv", nan),
            "classification",
            "feature column 'x2' has 2 missing value(s) (data rows 4, 8)",
        ),
        "wrong-type": (
            _write(directory, "wrong.csv", wrong),
            "classification",
            "feature column 'x1' is numeric except for 1 value(s) such as 'abc' (data row 6)",
        ),
        "regression-text-target": (
            _write(directory, "text-target.csv", regression_labels),
            "regression",
            "must be numeric for regression",
        ),
        "unparseable": (str(garbage), "classification", "cannot parse dataset"),
        "http-404": (http.url("missing.csv"), "classification", "HTTP Error 404"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing-file",
        "missing-target",
        "nan",
        "wrong-type",
        "regression-text-target",
        "unparseable",
        "http-404",
    ],
)
def test_bad_dataset(
    case: str, trainer: TrainerRunner, datasets: Datasets, http_files: StaticServer, mlflow_server: str
) -> None:
    uri, task, expected = _bad_datasets(datasets.directory, http_files)[case]
    target = "y" if case == "regression-text-target" else "label"
    model = unique("bad")
    result = trainer.run(builtin_spec(model, uri, target, task=task, epochs=1))
    assert result.returncode == pc.ExitCode.DATA_ERROR, result.explain()
    assert result.termination_message is not None
    assert result.termination_message.startswith("InvalidDataset: "), result.termination_message
    assert expected in result.termination_message
    assert "\n" not in result.termination_message
    registry = Registry(mlflow_server)
    _assert_nothing_registered(registry, model)
    run = registry.latest_training_run(result.uid, experiments=[model])
    assert run is not None and run.status == "FAILED"
    assert run.failure_reason == "InvalidDataset" and expected in (run.failure_message or "")


def test_unreachable_mlflow(trainer: TrainerRunner, datasets: Datasets) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    spec = builtin_spec(unique("nomlflow"), str(datasets.iris_csv), "species", epochs=1)
    result = trainer.run(
        spec, extra={pc.ENV_MLFLOW_TRACKING_URI: dead, names.ENV_MLFLOW_CONNECT_TIMEOUT: "1"}, timeout=60
    )
    assert result.returncode == pc.ExitCode.MLFLOW_UNAVAILABLE, result.explain()
    assert result.termination_message is not None
    assert result.termination_message.startswith(
        f"MLflowUnavailable: MLflow tracking server {dead} is not reachable"
    )
    # the controllers' wrapper fails fast with its single exception type
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match=f"MLflow at {dead} is not reachable"):
        Registry(dead, timeout_s=1).latest_training_run(result.uid)
    assert time.monotonic() - started < 5


def test_invalid_spec(trainer: TrainerRunner) -> None:
    result = trainer.run(
        {
            "model": {"name": "x"},
            "dataset": {"uri": "/d.csv", "target": "y"},
            "trainer": {"builtin": {"task": "fly"}},
        }
    )
    assert result.returncode == pc.ExitCode.CONFIG_ERROR, result.explain()
    assert result.termination_message is not None
    assert result.termination_message.startswith(
        "InvalidConfig: invalid TrainingJob spec: trainer.builtin.task"
    )


def test_conflicting_hyperparameter_is_a_config_error(trainer: TrainerRunner, datasets: Datasets) -> None:
    spec = builtin_spec(
        unique("conflict"), str(datasets.iris_csv), "species", epochs=1, hyperparameters={"lr": 0.5}
    )
    result = trainer.run(spec)
    assert result.returncode == pc.ExitCode.CONFIG_ERROR, result.explain()
    assert result.termination_message is not None
    assert (
        "trainer.hyperparameters.lr=0.5 conflicts with the trainer setting lr=0.02"
        in result.termination_message
    )
    assert json.loads(result.env[pc.ENV_TRAININGJOB_SPEC])["trainer"]["hyperparameters"] == {"lr": 0.5}
