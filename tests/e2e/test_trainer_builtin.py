"""The built-in trainer end to end: a real MLflow server, real torch, the trainer started like a pod."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops_operator.api.v1alpha1 import mlflow_contract as names
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.drift.profile import NumericFeatureProfile, load_profile
from mlops_operator.mlflow_registry import ModelNotFoundError, Registry
from tests.e2e.conftest import (
    Datasets,
    TrainerResult,
    TrainerRunner,
    builtin_spec,
    classification_frame,
    sha256_of,
    unique,
)

pytestmark = pytest.mark.e2e

EPOCHS = 5


@dataclass
class Trained:
    result: TrainerResult
    model: str
    run: Any
    spec: dict[str, Any]


@pytest.fixture(scope="module")
def classification(trainer: TrainerRunner, datasets: Datasets, mlflow_client: Any) -> Trained:
    """One classification job on a parquet file (file:// URI), registered with alias challenger."""
    model = unique("clf")
    spec = builtin_spec(
        model,
        f"file://{datasets.classification_parquet}",
        "label",
        epochs=EPOCHS,
        hyperparameters={"note": "e2e", "alpha": 0.5},
        registration={"alias": "challenger", "tags": {"team": "ml"}},
        gate={"metrics": [{"name": "test_accuracy", "op": ">=", "threshold": 0.6}]},
    )
    spec["model"]["description"] = "e2e classifier"
    result = trainer.run(spec, name="clf-job", namespace="team-a")
    assert result.returncode == 0, result.explain()
    runs = mlflow_client.search_runs(
        experiment_ids=[mlflow_client.get_experiment_by_name(model).experiment_id],
        filter_string=f"tags.`{pc.TAG_TRAININGJOB_UID}` = '{result.uid}'",
    )
    assert len(runs) == 1
    return Trained(result=result, model=model, run=runs[0], spec=spec)


def test_run_has_lineage_tags_and_params(classification: Trained, datasets: Datasets) -> None:
    run = classification.run
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert tags[pc.TAG_TRAININGJOB_UID] == classification.result.uid
    assert tags[pc.TAG_TRAININGJOB_NAME] == "clf-job"
    assert tags[pc.TAG_TRAININGJOB_NAMESPACE] == "team-a"
    assert tags[pc.TAG_ATTEMPT] == classification.result.env[pc.ENV_POD_NAME]
    assert tags[pc.TAG_IMAGE] == "ghcr.io/mlops-operator/runtime:e2e"
    assert tags[pc.TAG_CODE_VERSION]
    assert tags[pc.TAG_DATASET_DIGEST] == sha256_of(datasets.classification_parquet)
    assert tags[pc.TAG_GATE_RESULT] == "passed"
    gate = json.loads(tags[names.TAG_GATE_DETAIL])
    assert gate["passed"] is True and gate["results"][0]["name"] == "test_accuracy"
    assert params[names.PARAM_TOTAL_EPOCHS] == str(EPOCHS)
    assert params["task"] == "classification"
    assert params["epochs"] == str(EPOCHS)
    assert params["lr"] == "0.02"
    assert params["hidden"] == "[16]"
    assert params["note"] == "e2e" and params["alpha"] == "0.5"  # hyperparameters
    assert params["dataset.target"] == "label"


def test_metrics_per_epoch(classification: Trained, mlflow_client: Any) -> None:
    run_id = classification.run.info.run_id
    for key in ("loss", "val_loss", "val_accuracy", "val_f1", names.METRIC_EPOCH):
        history = mlflow_client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), key
    epochs = {m.step: m.value for m in mlflow_client.get_metric_history(run_id, names.METRIC_EPOCH)}
    assert epochs == {s: float(s) for s in range(1, EPOCHS + 1)}
    metrics = classification.run.data.metrics
    assert metrics["test_accuracy"] >= 0.6
    assert {"test_loss", "test_f1", "best_epoch"} <= set(metrics)


def test_dataset_input_and_reference_profile(
    classification: Trained, datasets: Datasets, tmp_path: Any
) -> None:
    run = classification.run
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    digest = sha256_of(datasets.classification_parquet)
    assert dataset.digest == digest.removeprefix("sha256:")[:32]
    assert str(datasets.classification_parquet) in dataset.source
    assert {t.key: t.value for t in inputs[0].tags}.get("mlflow.data.context") == "training"

    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path=pc.PROFILE_ARTIFACT, dst_path=str(tmp_path)
    )
    profile = load_profile(open(path, encoding="utf-8").read())  # noqa: PTH123, SIM115
    assert profile.dataset_digest == digest
    assert profile.feature_names == ["x1", "x2", "x3", "color"]
    train_rows = 240 - 48 - 48
    assert profile.row_count == train_rows
    x1 = profile.feature("x1")
    assert isinstance(x1, NumericFeatureProfile)
    assert sum(x1.bin_counts) == train_rows and len(x1.bin_edges) == len(x1.bin_counts) + 1
    color = profile.feature("color")
    assert color.type == "categorical" and set(color.counts) == {"red", "green", "blue"}
    assert profile.target is not None and profile.target.type == "categorical"


def test_model_signature_and_registered_version(
    classification: Trained, mlflow_client: Any, mlflow_server: str
) -> None:
    model = classification.model
    version = mlflow_client.get_model_version_by_alias(model, "challenger")
    assert version.version == "1"
    assert version.run_id == classification.run.info.run_id
    assert version.description == "e2e classifier"
    assert version.tags[names.TAG_RUN_ID] == classification.run.info.run_id
    assert version.tags[pc.TAG_DATASET_DIGEST] == classification.run.data.tags[pc.TAG_DATASET_DIGEST]
    assert version.tags[pc.TAG_TRAININGJOB_UID] == classification.result.uid
    assert version.tags["team"] == "ml"
    assert classification.run.data.tags[names.TAG_MODEL_URI] == f"models:/{model}/1"
    with pytest.raises(Exception, match="alias"):
        mlflow_client.get_model_version_by_alias(model, "champion")  # never set silently

    loaded = mlflow.pyfunc.load_model(f"models:/{model}/1")
    inputs = loaded.metadata.get_input_schema().input_names()
    assert inputs == ["x1", "x2", "x3", "color"]
    assert loaded.metadata.get_output_schema() is not None
    frame = classification_frame(n=60, seed=99)
    predictions = np.asarray(loaded.predict(frame[["x1", "x2", "x3", "color"]]))
    assert set(predictions.tolist()) <= {"yes", "no"}
    assert float(np.mean(predictions == frame["label"].to_numpy())) > 0.7


def test_registry_wrapper_reads_the_job(classification: Trained, mlflow_server: str) -> None:
    registry = Registry(mlflow_server)
    view = registry.observe_training_job(classification.result.uid, experiments=[classification.model])
    assert view is not None
    assert view.run_id == classification.run.info.run_id
    assert (view.epoch, view.total_epochs) == (EPOCHS, EPOCHS)
    assert view.model_version == 1 and view.model_uri == f"models:/{classification.model}/1"
    assert view.dataset_digest == classification.run.data.tags[pc.TAG_DATASET_DIGEST]
    assert view.gate is not None and view.gate.passed
    assert "val_loss" in view.metrics and names.METRIC_EPOCH not in view.metrics
    progress = view.progress()
    assert progress is not None and progress.summary == f"{EPOCHS}/{EPOCHS}"
    # every experiment searched when none is named
    assert registry.latest_training_run(classification.result.uid) is not None
    assert registry.training_runs("no-such-uid") == []

    model = classification.model
    profile = registry.reference_profile(model, 1)
    assert profile.feature_names == ["x1", "x2", "x3", "color"]
    assert profile.dataset_digest == view.dataset_digest
    assert (
        registry.run_metrics(view.run_id)["test_accuracy"] == classification.run.data.metrics["test_accuracy"]
    )
    assert registry.resolve_alias(model, "challenger") == 1
    version = registry.get_version(model, 1)
    assert (
        version.run_id == classification.run.info.run_id
        and version.trainingjob_uid == classification.result.uid
    )
    assert [v.version for v in registry.trainingjob_versions(model, classification.result.uid)] == [1]
    moved = registry.set_alias(model, "staging", 1)
    assert "staging" in moved.aliases
    assert registry.aliases(model) == {"challenger": 1, "staging": 1}
    registry.delete_alias(model, "staging")
    registry.delete_alias(model, "staging")  # idempotent
    with pytest.raises(ModelNotFoundError):
        registry.resolve_alias(model, "staging")
    with pytest.raises(ModelNotFoundError):
        registry.get_version(model, 42)
    with pytest.raises(ModelNotFoundError):
        registry.get_version("no-such-model", 1)
    with pytest.raises(ModelNotFoundError):
        registry.reference_profile(model, 42)


def test_regression_over_http_with_early_stopping(
    trainer: TrainerRunner, datasets: Datasets, mlflow_client: Any
) -> None:
    model = unique("reg")
    spec = builtin_spec(
        model,
        datasets.regression_url,
        "y",
        task="regression",
        epochs=30,
        hidden=[32],
        builtin={"earlyStopping": {"metric": "val_rmse", "patience": 2, "minDelta": 0.5}},
    )
    result = trainer.run(spec)
    assert result.returncode == 0, result.explain()
    version = mlflow_client.get_model_version(model, "1")
    run = mlflow_client.get_run(version.run_id)
    assert run.data.tags[pc.TAG_DATASET_DIGEST] == sha256_of(datasets.regression_csv)
    metrics = run.data.metrics
    assert {"val_rmse", "val_mae", "val_r2", "test_rmse", "test_r2", "best_epoch"} <= set(metrics)
    epochs_run = len(mlflow_client.get_metric_history(run.info.run_id, "loss"))
    assert epochs_run < 30, "early stopping never stopped"
    assert metrics["best_epoch"] <= epochs_run
    assert metrics["test_r2"] > 0.8

    loaded = mlflow.pyfunc.load_model(f"models:/{model}/1")
    frame = pd.read_csv(datasets.regression_csv).head(20)
    predictions = np.asarray(loaded.predict(frame[["x1", "x2", "cat"]]), dtype=float)
    assert predictions.shape == (20,)
    assert np.sqrt(np.mean((predictions - frame["y"].to_numpy()) ** 2)) < 2.0


def test_same_seed_same_metrics_and_must_beat_champion(
    trainer: TrainerRunner, datasets: Datasets, mlflow_client: Any, mlflow_server: str
) -> None:
    """Iris twice with one seed: identical histories. The second run must beat champion (v1) by 0: ties pass;
    a third must beat it by 0.5: it cannot, exits 5, and nothing is registered."""
    model = unique("iris")
    spec = builtin_spec(model, str(datasets.iris_csv), "species", epochs=4, test=0.3)
    first = trainer.run(spec)
    assert first.returncode == 0, first.explain()
    registry = Registry(mlflow_server)
    registry.set_alias(model, "champion", 1)

    rule = {"alias": "champion", "metric": "test_accuracy", "margin": 0.0}
    second = trainer.run({**spec, "gate": {"mustBeat": rule}})
    assert second.returncode == 0, second.explain()
    run1 = mlflow_client.get_run(mlflow_client.get_model_version(model, "1").run_id)
    run2 = mlflow_client.get_run(mlflow_client.get_model_version(model, "2").run_id)
    for key in ("loss", "val_loss", "val_accuracy"):
        h1 = [(m.step, m.value) for m in mlflow_client.get_metric_history(run1.info.run_id, key)]
        h2 = [(m.step, m.value) for m in mlflow_client.get_metric_history(run2.info.run_id, key)]
        assert sorted(h1) == sorted(h2), key
    assert run1.data.metrics["test_accuracy"] == run2.data.metrics["test_accuracy"]
    assert run1.data.tags[pc.TAG_DATASET_DIGEST] == run2.data.tags[pc.TAG_DATASET_DIGEST]
    gate = json.loads(run2.data.tags[names.TAG_GATE_DETAIL])
    assert gate["passed"] and gate["incumbentVersion"] == 1
    assert "beats champion v1" in gate["message"]
    assert registry.resolve_alias(model, "champion") == 1  # not moved: the spec asked for no alias

    third = trainer.run({**spec, "gate": {"mustBeat": {**rule, "margin": 0.5}}})
    assert third.returncode == pc.ExitCode.GATE_FAILED, third.explain()
    assert third.termination_message is not None
    assert third.termination_message.startswith("GateFailed: test_accuracy ")
    assert "does not beat champion v1" in third.termination_message
    assert "by margin 0.5" in third.termination_message
    assert [v.version for v in registry.versions(model)] == [2, 1]
    failed = registry.latest_training_run(third.uid, experiments=[model])
    assert failed is not None and failed.status == "FAILED"
    assert failed.gate_outcome == "failed" and failed.failure_reason == "GateFailed"
    assert registry.resolve_alias(model, "champion") == 1
