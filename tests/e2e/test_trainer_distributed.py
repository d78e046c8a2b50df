"""Data-parallel training with torchrun (gloo on CPU): one MLflow run, one registered version."""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_server import free_port
from mlops_operator.api.v1alpha1 import mlflow_contract as names
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.mlflow_registry import Registry
from tests.e2e.conftest import Datasets, TrainerRunner, builtin_spec, unique

pytestmark = pytest.mark.e2e


def test_two_processes_under_torchrun_register_exactly_one_version(
    trainer: TrainerRunner, datasets: Datasets, mlflow_server: str, mlflow_client: Any
) -> None:
    model = unique("ddp")
    spec = builtin_spec(
        model,
        str(datasets.classification_parquet),
        "label",
        epochs=3,
        resources={"nodes": 1, "procPerNode": 2},
        registration={"alias": "challenger"},
    )
    result = trainer.run(spec, nproc=2)
    assert result.returncode == 0, result.explain()
    registry = Registry(mlflow_server)
    runs = registry.training_runs(result.uid, experiments=[model])
    assert len(runs) == 1, "only rank 0 may create a run"
    run = runs[0]
    assert run.status == "FINISHED"
    assert run.tags[names.TAG_WORLD_SIZE] == "2" and run.tags[names.TAG_DEVICE] == "cpu"
    assert run.params["world_size"] == "2"
    history = mlflow_client.get_metric_history(run.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3], "each epoch is logged once, by rank 0"
    versions = registry.trainingjob_versions(model, result.uid)
    assert [v.version for v in versions] == [1]
    assert registry.resolve_alias(model, "challenger") == 1
    assert run.metrics["test_accuracy"] > 0.6


def test_launcher_starts_torchrun_and_passes_on_the_exit_code(
    trainer: TrainerRunner, datasets: Datasets, mlflow_server: str
) -> None:
    """NPROC_PER_NODE=2 without torchrun around it: the trainer starts torchrun itself; a dataset error in
    the workers comes out as exit 3 (torchrun alone would say 1) with the workers' termination message."""
    model = unique("launch")
    spec = builtin_spec(
        model, str(datasets.iris_csv), "no_such_column", epochs=1, resources={"procPerNode": 2}
    )
    result = trainer.run(
        spec,
        extra={
            pc.ENV_NPROC_PER_NODE: "2",
            pc.ENV_MASTER_ADDR: "127.0.0.1",
            pc.ENV_MASTER_PORT: str(free_port()),
        },
    )
    assert result.returncode == pc.ExitCode.DATA_ERROR, result.explain()
    assert result.termination_message is not None
    assert result.termination_message.startswith(
        "InvalidDataset: target column 'no_such_column' is not in dataset"
    )
    run = Registry(mlflow_server).latest_training_run(result.uid, experiments=[model])
    assert run is not None and run.status == "FAILED" and run.failure_reason == "InvalidDataset"
