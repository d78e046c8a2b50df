"""Pure parts of mlops_operator.mlflow_registry: reading a run's tags/params/metrics, error mapping,
the registry cache. (Against a real server: tests/e2e/test_trainer_*.py.)"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from mlops_operator.api.v1alpha1 import mlflow_contract as names
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.mlflow_registry import (
    ModelNotFoundError,
    Registry,
    RegistryError,
    RegistryUnavailableError,
    RunInfo,
    TrainingRunView,
    registry_for,
)
from mlops_operator.mlflow_registry import client as registry_client


def _run(**tags: str) -> RunInfo:
    return RunInfo(
        run_id="r1",
        experiment_id="1",
        status="RUNNING",
        start_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        end_time=None,
        tags=tags,
        params={names.PARAM_TOTAL_EPOCHS: "20", "lr": "0.01"},
        metrics={names.METRIC_EPOCH: 7.0, "val_loss": 0.25, "loss": 0.3},
    )


def test_run_info_reads_what_the_trainer_writes() -> None:
    gate = {"passed": False, "message": "test_accuracy 0.8 does not meet >= 0.9", "results": []}
    run = _run(
        **{
            pc.TAG_ATTEMPT: "job-0-abc",
            pc.TAG_TRAININGJOB_UID: "u1",
            pc.TAG_DATASET_DIGEST: "sha256:ff",
            pc.TAG_GATE_RESULT: "failed",
            names.TAG_GATE_DETAIL: json.dumps(gate),
            pc.TAG_FAILURE_REASON: "GateFailed",
            names.TAG_FAILURE_MESSAGE: "test_accuracy 0.8 does not meet >= 0.9",
            names.TAG_MODEL_VERSION: "4",
            names.TAG_MODEL_URI: "models:/m/4",
            names.TAG_RESUMED_FROM_EPOCH: "3",
        }
    )
    assert run.attempt == "job-0-abc" and run.trainingjob_uid == "u1" and run.dataset_digest == "sha256:ff"
    assert (run.epoch, run.total_epochs) == (7, 20)
    assert run.progress_metrics == {"val_loss": 0.25, "loss": 0.3}
    assert run.model_version == 4 and run.model_uri == "models:/m/4"
    assert run.gate is not None and not run.gate.passed and run.gate_outcome == "failed"
    assert run.failure_reason == "GateFailed" and run.resumed_from_epoch == 3
    assert not run.finished


def test_run_info_tolerates_missing_or_bad_values() -> None:
    run = RunInfo("r", "1", "FINISHED", None, None, tags={names.TAG_GATE_DETAIL: "{not json"}, params={})
    assert run.gate is None and run.epoch is None and run.total_epochs is None and run.model_version is None
    assert run.finished


def test_progress_summary() -> None:
    view = TrainingRunView(
        run_id="r",
        epoch=3,
        total_epochs=10,
        metrics={"val_loss": 0.5, "odd": float("nan")},
        dataset_digest=None,
        model_version=None,
        model_uri=None,
        gate=None,
        update_time=None,
        status="RUNNING",
        attempt=None,
        failure_reason=None,
        failure_message=None,
    )
    progress = view.progress()
    assert progress is not None and progress.summary == "3/10" and progress.metrics == {"val_loss": 0.5}


def test_registry_for_needs_a_uri_and_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pc.ENV_MLFLOW_TRACKING_URI, raising=False)
    with pytest.raises(RegistryUnavailableError, match="no MLflow tracking URI"):
        registry_for(None)
    a = registry_for("http://mlflow.example:5000")
    assert a is registry_for("http://mlflow.example:5000")
    monkeypatch.setenv(pc.ENV_MLFLOW_TRACKING_URI, "http://from-env:5000")
    assert registry_for(None).tracking_uri == "http://from-env:5000"


class FakeMlflowError(Exception):
    def __init__(self, code: str, text: str = "") -> None:
        super().__init__(text or code)
        self.error_code = code


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FakeMlflowError("INTERNAL_ERROR", "Max retries exceeded"), RegistryUnavailableError),
        (FakeMlflowError("UNAUTHENTICATED"), RegistryUnavailableError),
        (FakeMlflowError("RESOURCE_DOES_NOT_EXIST"), ModelNotFoundError),
        (
            FakeMlflowError("INVALID_PARAMETER_VALUE", "Registered model alias champion not found."),
            ModelNotFoundError,
        ),
        (FakeMlflowError("INVALID_PARAMETER_VALUE", "bad name"), RegistryError),
        (ConnectionRefusedError(), RegistryUnavailableError),
    ],
)
def test_errors_map_to_three_types(
    error: Exception, expected: type[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry("http://127.0.0.1:9")  # the client opens nothing until a call
    monkeypatch.setattr(registry, "check", lambda: None)

    def fail() -> Any:
        raise error

    with pytest.raises(expected) as caught:
        registry._call("resolve alias champion of model m", fail)
    assert type(caught.value) is expected
    assert "resolve alias champion of model m" in str(caught.value) or expected is RegistryUnavailableError


def test_filter_values_with_quotes_are_refused() -> None:
    assert registry_client._quote("abc") == "'abc'"
    with pytest.raises(RegistryError, match="quote"):
        registry_client._quote("a'b")
