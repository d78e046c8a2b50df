"""The trainer's side of MLflow (rank 0 only): health probe, one run per attempt, params/metrics/dataset/
profile/model logging, and registration. Every client error is turned into a :class:`TrainerError`:
unreachable server -> MlflowUnavailableError, refused credentials -> ConfigError."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import mlflow
import pandas as pd  # type: ignore[import-untyped]
from mlflow import MlflowClient
from mlflow.entities import Metric

from mlops_operator.api.v1alpha1.mlflow_contract import MODEL_ARTIFACT_NAME, TAG_FAILURE_MESSAGE
from mlops_operator.mlflow_registry.errors import classify

from .errors import ConfigError, MlflowUnavailableError, TrainerError, single_line

T = TypeVar("T")
MAX_PARAM_VALUE: Final = 6000
MAX_TAG_VALUE: Final = 8000
#: MLflow's dataset digest column holds 36 characters: the input gets the first 32 hex digits.
DATASET_INPUT_DIGEST_LEN: Final = 32


def probe(tracking_uri: str, timeout_s: float) -> None:
    """Wait (up to ``timeout_s``) for an http(s) tracking server to answer ``/health``."""
    scheme = urllib.parse.urlsplit(tracking_uri).scheme.lower()
    if scheme not in ("http", "https"):
        return
    url = tracking_uri.rstrip("/") + "/health"
    deadline = time.monotonic() + max(timeout_s, 0.0)
    delay = 0.5
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=max(1.0, min(5.0, remaining))) as response:  # noqa: S310
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except (OSError, ValueError) as error:
            last = single_line(str(getattr(error, "reason", error)))
        if time.monotonic() + delay > deadline:
            raise MlflowUnavailableError(
                f"MLflow tracking server {tracking_uri} is not reachable ({last}) after {timeout_s:g}s"
            )
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def call(what: str, fn: Callable[[], T]) -> T:
    """Run an MLflow client call, translating its errors."""
    try:
        return fn()
    except TrainerError:
        raise
    except Exception as error:
        kind = classify(error)
        text = single_line(str(error))[:500]
        if kind == "unavailable":
            raise MlflowUnavailableError(f"{what} failed: {text}") from error
        if kind == "auth":
            raise ConfigError(f"MLflow refused the credentials while trying to {what}: {text}") from error
        raise


def _none_if_missing(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except Exception as error:
        if classify(error) in ("not_found", "client"):
            return None
        raise


def param_value(value: Any) -> str:
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value)
        if isinstance(value, list | dict)
        else str(value)
    )
    return text[:MAX_PARAM_VALUE]


class Tracker:
    """One attempt's MLflow run (fluent API: the run is this process's active run)."""

    def __init__(self, tracking_uri: str, experiment: str, *, connect_timeout_s: float = 60.0) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.connect_timeout_s = connect_timeout_s
        # bounded retries: a server that stays down fails the attempt (exit 4, retried by the Job) in about
        # a minute instead of MLflow's default of several minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id: str | None = None
        self.run_id: str | None = None

    # --- connection, run -----------------------------------------------------------------------------
    def connect(self) -> None:
        probe(self.tracking_uri, self.connect_timeout_s)
        experiment = call(f"use experiment {self.experiment!r}", lambda: self._experiment())
        self.experiment_id = str(experiment.experiment_id)

    def _experiment(self) -> Any:
        try:
            return mlflow.set_experiment(self.experiment)
        except Exception as error:
            if classify(error) == "client":  # created concurrently by another attempt: read it
                found = self.client.get_experiment_by_name(self.experiment)
                if found is not None:
                    mlflow.set_experiment(experiment_id=found.experiment_id)
                    return found
            raise

    def start_run(self, run_name: str, tags: Mapping[str, str]) -> str:
        run = call(
            "start an MLflow run",
            lambda: mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=dict(tags)),
        )
        self.run_id = str(run.info.run_id)
        return self.run_id

    def supersede(self, tag: str, value: str, note: str) -> list[str]:
        """End every other RUNNING run of this experiment with ``tag`` = ``value`` as KILLED (earlier attempts
        that died without ending their run); returns their ids."""
        if self.experiment_id is None or "'" in value:
            return []
        exp = self.experiment_id
        flt = f"tags.`{tag}` = '{value}' and attributes.status = 'RUNNING'"
        runs = call("search earlier attempts", lambda: self.client.search_runs([exp], filter_string=flt))
        ended = []
        for run in runs:
            run_id = str(run.info.run_id)
            if run_id == self.run_id:
                continue
            self._kill(run_id, note)
            ended.append(run_id)
        return ended

    def _kill(self, run_id: str, note: str) -> None:
        call("tag an earlier attempt's run", lambda: self.client.set_tag(run_id, TAG_FAILURE_MESSAGE, note))
        call("end an earlier attempt's run", lambda: self.client.set_terminated(run_id, status="KILLED"))

    def end_run(self, status: str) -> None:
        if self.run_id is None:
            return
        run_id = self.run_id
        if mlflow.active_run() is not None:
            call("end the MLflow run", lambda: mlflow.end_run(status=status))
        else:
            call("end the MLflow run", lambda: self.client.set_terminated(run_id, status=status))

    # --- logging -------------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        values = {k: param_value(v) for k, v in params.items()}
        call("log params", lambda: mlflow.log_params(values))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        call("log metrics", lambda: mlflow.log_metrics(values, step=step))

    def log_history(self, history: Iterable[Mapping[str, float]]) -> None:
        """Metrics of earlier epochs (resume), each with step = its epoch."""
        assert self.run_id is not None
        run_id = self.run_id
        now = int(time.time() * 1000)
        batch = [
            Metric(key=k, value=float(v), timestamp=now, step=int(entry["epoch"]))
            for entry in history
            for k, v in entry.items()
        ]
        for start in range(0, len(batch), 1000):
            self._log_batch(run_id, batch[start : start + 1000])

    def _log_batch(self, run_id: str, metrics: list[Any]) -> None:
        call("log metric history", lambda: self.client.log_batch(run_id, metrics=metrics))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        values = {k: str(v)[:MAX_TAG_VALUE] for k, v in tags.items()}
        call("set run tags", lambda: mlflow.set_tags(values))

    def log_dataset(self, frame: pd.DataFrame, *, uri: str, digest: str, name: str, target: str) -> None:
        """The dataset as an MLflow dataset input (context training) with its digest."""
        short = digest.removeprefix("sha256:")[:DATASET_INPUT_DIGEST_LEN]
        from mlflow.data.pandas_dataset import from_pandas

        try:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": local paths, harmless
                warnings.simplefilter("ignore", UserWarning)
                dataset = from_pandas(frame, source=uri, targets=target, name=name, digest=short)
        except Exception:  # a scheme MLflow has no dataset source for (pvc://): record the URI as is
            from mlflow.data.http_dataset_source import HTTPDatasetSource

            source = HTTPDatasetSource(url=uri)  # type: ignore[no-untyped-call]
            dataset = from_pandas(frame, source=source, targets=target, name=name, digest=short)
        call("log the dataset input", lambda: mlflow.log_input(dataset, context="training"))

    def log_text(self, text: str, artifact_file: str) -> None:
        call(f"log artifact {artifact_file}", lambda: mlflow.log_text(text, artifact_file))

    def log_pyfunc(
        self, python_model: Any, example: pd.DataFrame, predictions: Any, pip_requirements: list[str]
    ) -> str:
        """Log the model with its signature and input example; returns its model URI."""
        from mlflow.models import infer_signature

        signature = infer_signature(example, predictions)
        info = call(
            "log the model",
            lambda: mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT_NAME,
                python_model=python_model,
                signature=signature,
                input_example=example.head(5),
                pip_requirements=pip_requirements,
            ),
        )
        return str(info.model_uri)

    # --- registry ------------------------------------------------------------------------------------
    def versions_with_tag(self, name: str, key: str, value: str) -> list[Any]:
        if "'" in value or "'" in name:
            raise ConfigError(f"cannot search MLflow for a value with a quote: {value!r}")
        flt = f"name = '{name}' and tags.`{key}` = '{value}'"
        found = call(
            "search model versions", lambda: _none_if_missing(lambda: self.client.search_model_versions(flt))
        )
        return list(found or [])

    def version_by_alias(self, name: str, alias: str) -> Any | None:
        """The version holding ``alias`` (None when the model or the alias does not exist)."""
        return call(
            f"resolve alias {alias} of {name}",
            lambda: _none_if_missing(lambda: self.client.get_model_version_by_alias(name, alias)),
        )

    def load_pyfunc(self, model_uri: str) -> Any:
        return call(f"load model {model_uri}", lambda: mlflow.pyfunc.load_model(model_uri))

    def register(self, model_uri: str, name: str, tags: Mapping[str, str], description: str | None) -> str:
        version = call(
            f"register {name}",
            lambda: mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()}),
        )
        number = str(version.version)
        if description:
            call(
                "describe the model version",
                lambda: self.client.update_model_version(name, number, description=description),
            )
        return number

    def set_alias(self, name: str, alias: str, version: str) -> None:
        call(f"set alias {alias}", lambda: self.client.set_registered_model_alias(name, alias, version))

    def delete_version(self, name: str, version: str) -> None:
        try:
            self.client.delete_model_version(name, version)
        except Exception as error:
            print(f"warning: could not delete model version {name}/{version}: {error}", file=sys.stderr)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        run = call("read the run", lambda: self.client.get_run(run_id))
        return {str(k): float(v) for k, v in run.data.metrics.items()}

    def logged_model_uri(self, run_id: str) -> str | None:
        """The model the run logged (MLflow 3 logged model, preferring one named ``model``, else the
        ``model`` artifact directory of MLflow 2 style logging)."""
        exp = [self.experiment_id] if self.experiment_id else None
        models = call(
            "search logged models",
            lambda: mlflow.search_logged_models(
                experiment_ids=exp, filter_string=f"source_run_id = '{run_id}'", output_format="list"
            ),
        )
        if models:
            named = [lm for lm in models if lm.name == MODEL_ARTIFACT_NAME]
            chosen = (named or sorted(models, key=lambda lm: lm.creation_timestamp, reverse=True))[0]
            return str(chosen.model_uri)
        artifacts = call("list artifacts", lambda: self.client.list_artifacts(run_id, MODEL_ARTIFACT_NAME))
        if any(a.path.endswith("MLmodel") for a in artifacts):
            return f"runs:/{run_id}/{MODEL_ARTIFACT_NAME}"
        return None
