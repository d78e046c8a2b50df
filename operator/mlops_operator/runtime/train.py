"""``mlops-train``: the program of a TrainingJob's pods (also ``python -m mlops_operator.runtime.train``).

Configured only through the environment of the pod contract (``api.v1alpha1.pod_contract``). One attempt:

1. rank 0 opens an MLflow run for this attempt (tags link it to the TrainingJob) and logs the parameters;
   every process reads the dataset (sha256 of its exact bytes), checks it and splits it deterministically;
2. rank 0 logs the dataset as an MLflow input, its digest as a tag, and the reference profile;
3. built-in trainer: every process trains its shard (DDP, gloo/nccl), checkpointing and resuming; rank 0 logs
   per-epoch metrics. User code: the command/script runs as a child inside the same MLflow run;
4. rank 0 logs the model, evaluates the gate on held-out rows (and against the alias to beat), and only
   if it passes registers a new version of ``model.name`` and sets the requested alias.

Exit codes and the one-line termination message follow ``ExitCode`` / ``REASON_BY_EXIT_CODE``.
Several processes without torchrun around us (``NNODES`` x ``NPROC_PER_NODE`` > 1): we start torchrun
ourselves and pass on the workers' exit code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, NoReturn

import pandas as pd  # type: ignore[import-untyped]

import mlops_operator
from mlops_operator.api.v1alpha1 import mlflow_contract as names
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.drift.profile import build_profile

from . import data as datamod
from .config import TrainerConfig, check_early_stopping
from .errors import (
    ConfigError,
    GateFailedError,
    MlflowUnavailableError,
    TerminatedError,
    TrainerError,
    UserCodeError,
    check_terminated,
    parse_termination_message,
    request_termination,
    single_line,
    termination_log_path,
    write_termination_message,
)
from .gate import Comparison, evaluate_gate, metric_split
from .metrics import PREDICTION_METRICS

if TYPE_CHECKING:
    from mlops_operator.api.v1alpha1.trainingjob import GateResult

    from .distributed import DistContext
    from .tracking import Tracker

#: agree() code meaning "this job already registered its version: nothing to do".
_DONE: Final = 255


class AlreadyDoneError(Exception):
    """An earlier attempt of this TrainingJob already registered its model version."""


class PeerFailedError(TrainerError):
    """Another training process failed; this one stops with the same exit code."""

    def __init__(self, code: int) -> None:
        super().__init__("another training process failed (see the log of rank 0)")
        try:
            self.exit_code = pc.ExitCode(code)
        except ValueError:
            self.exit_code = pc.ExitCode.UNEXPECTED


@dataclass
class LoadedData:
    fetched: datamod.FetchedFile
    frame: pd.DataFrame
    schema: datamod.TableSchema
    split: datamod.SplitIndices


def _params(cfg: TrainerConfig) -> dict[str, Any]:
    """Run parameters: trainer settings, dataset settings, the hyperparameters and total_epochs."""
    spec = cfg.spec
    ds = spec.dataset
    params: dict[str, Any] = {
        "model.name": spec.model.name,
        "dataset.uri": ds.uri,
        "dataset.format": ds.resolved_format(),
        "dataset.target": ds.target,
        "dataset.features": json.dumps(ds.features) if ds.features else "all",
        "split.validation": ds.split.validation,
        "split.test": ds.split.test,
        "split.seed": ds.split.seed,
        "world_size": spec.resources.world_size,
    }
    b = spec.trainer.builtin
    if b is not None:
        settings: dict[str, Any] = {
            "task": b.task,
            "hidden": json.dumps(list(b.hidden)),
            "epochs": b.epochs,
            "batch_size": b.batch_size,
            "lr": b.lr,
            "optimizer": b.optimizer,
            "weight_decay": b.weight_decay,
            "dropout": b.dropout,
            "seed": b.seed,
            names.PARAM_TOTAL_EPOCHS: b.epochs,
        }
        if b.early_stopping is not None:
            es = b.early_stopping
            settings.update(
                {
                    "early_stopping.metric": es.metric,
                    "early_stopping.direction": es.direction,
                    "early_stopping.patience": es.patience,
                    "early_stopping.min_delta": es.min_delta,
                }
            )
        params.update(settings)
    else:
        trainer = spec.trainer
        params["trainer.kind"] = "command" if trainer.command else "script"
        if trainer.command:
            params["trainer.command"] = json.dumps(list(trainer.command) + list(trainer.args or []))
    for key, value in cfg.hyperparameters.items():
        if key in params and str(params[key]) != str(value):
            raise ConfigError(
                f"trainer.hyperparameters.{key}={value!r} conflicts with the trainer setting "
                f"{key}={params[key]!r}; set it in one place"
            )
        params[key] = value
    return params


def _fingerprint(cfg: TrainerConfig, digest: str) -> str:
    """What a checkpoint must match to be resumed: the data's bytes and everything that shapes training."""
    spec = cfg.spec
    doc = {
        "format": 1,
        "digest": digest,
        "dataset": spec.dataset.to_dict(),
        "trainer": spec.trainer.to_dict(),
        "model": spec.model.name,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class Attempt:
    """One attempt (one pod / one process of it) of a TrainingJob."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self.tracker: Tracker | None = None
        self.run_id: str | None = None
        self.dist: DistContext | None = None

    # --- entry ---------------------------------------------------------------------------------------
    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            if self.cfg.spec.trainer.builtin is not None:
                self._builtin()
            else:
                self._user_code()
            return 0
        except AlreadyDoneError as done:
            print(str(done), file=sys.stderr)
            return 0
        except TrainerError as error:
            self._fail(error)
            return int(error.exit_code)
        except Exception as error:
            traceback.print_exc()
            failure = TrainerError(f"unexpected {type(error).__name__}: {single_line(str(error))}")
            self._fail(failure)
            return int(failure.exit_code)
        finally:
            if self.dist is not None:
                self.dist.close()

    def _fail(self, error: TrainerError) -> None:
        """Record the failure on the run (unless MLflow is what failed) and in the termination log."""
        if (
            self.tracker is not None
            and self.run_id is not None
            and not isinstance(error, MlflowUnavailableError)
        ):
            try:
                self.tracker.set_tags(
                    {
                        pc.TAG_FAILURE_REASON: error.reason,
                        names.TAG_FAILURE_MESSAGE: single_line(error.message),
                    }
                )
                self.tracker.end_run("KILLED" if isinstance(error, TerminatedError) else "FAILED")
            except Exception as tag_error:
                print(f"warning: could not record the failure in MLflow: {tag_error}", file=sys.stderr)
        if self.cfg.dist.writes_termination_log:
            write_termination_message(error.exit_code, error.message, self.cfg.termination_log)

    # --- shared steps --------------------------------------------------------------------------------
    def _open_run(self) -> Tracker:
        """Connect, stop if this job already registered its version, start the attempt's run."""
        from .tracking import Tracker

        cfg = self.cfg
        tracker = Tracker(cfg.tracking_uri, cfg.experiment, connect_timeout_s=cfg.mlflow_connect_timeout)
        tracker.connect()
        self.tracker = tracker
        if cfg.uid:
            self._check_already_registered(tracker)
        tags = {**lineage_tags(cfg), names.TAG_WORLD_SIZE: str(cfg.spec.resources.world_size)}
        if cfg.image:
            tags[pc.TAG_IMAGE] = cfg.image
        params = _params(cfg)
        self.run_id = tracker.start_run(cfg.attempt, tags)
        print(
            f"MLflow run {self.run_id} in experiment {cfg.experiment!r} at {cfg.tracking_uri}",
            file=sys.stderr,
        )
        if cfg.uid:
            note = f"ended without finishing its run; superseded by attempt {cfg.attempt} (run {self.run_id})"
            tracker.supersede(pc.TAG_TRAININGJOB_UID, cfg.uid, note)
        tracker.log_params(params)
        return tracker

    def _check_already_registered(self, tracker: Tracker) -> None:
        spec = self.cfg.spec
        versions = tracker.versions_with_tag(spec.model.name, pc.TAG_TRAININGJOB_UID, self.cfg.uid)
        if not versions:
            return
        version = max(versions, key=lambda v: int(v.version))
        alias = spec.registration.alias if spec.registration else None
        if alias:
            holder = tracker.version_by_alias(spec.model.name, alias)
            if holder is None or int(holder.version) < int(version.version):
                tracker.set_alias(spec.model.name, alias, str(version.version))
        raise AlreadyDoneError(
            f"TrainingJob {self.cfg.namespace}/{self.cfg.job_name} already registered "
            f"{spec.model.name} version {version.version} (run {version.run_id}): nothing to do"
        )

    def _load_data(self, *, check_types: bool) -> LoadedData:
        cfg = self.cfg
        ds = cfg.spec.dataset
        fetched = datamod.fetch(ds.uri, cfg.scratch_dir)
        frame = datamod.read_table(fetched.path, ds.resolved_format(), ds.uri)
        task = cfg.spec.trainer.builtin.task if (check_types and cfg.spec.trainer.builtin) else None
        schema = datamod.check_table(frame, ds, task)
        split = datamod.split_indices(len(frame), ds.split)
        return LoadedData(fetched=fetched, frame=frame, schema=schema, split=split)

    def _log_dataset(self, tracker: Tracker, loaded: LoadedData) -> None:
        cfg = self.cfg
        schema = loaded.schema
        used = loaded.frame[[*schema.features, schema.target]]
        tracker.log_dataset(
            used,
            uri=cfg.spec.dataset.uri,
            digest=loaded.fetched.digest,
            name=datamod.dataset_name(cfg.spec.dataset.uri),
            target=schema.target,
        )
        tracker.set_tags({pc.TAG_DATASET_DIGEST: loaded.fetched.digest})
        train_rows = loaded.frame.iloc[loaded.split.train]
        task = cfg.spec.trainer.builtin.task if cfg.spec.trainer.builtin else None
        profile = build_profile(
            {c: train_rows[c].to_numpy() for c in [*schema.features, schema.target]},
            features=schema.features,
            types=schema.kinds or None,
            target=schema.target,
            target_type=None if task is None else ("categorical" if task == "classification" else "numeric"),
            dataset_digest=loaded.fetched.digest,
        )
        tracker.log_text(profile.to_json(), pc.PROFILE_ARTIFACT)

    def _check_must_beat(self) -> None:
        gate = self.cfg.spec.gate
        if gate is None or gate.must_beat is None:
            return
        split = self.cfg.spec.dataset.split
        part, base = metric_split(gate.must_beat.metric, has_test=split.test > 0)
        if base not in PREDICTION_METRICS:
            raise ConfigError(
                f"gate.mustBeat.metric {gate.must_beat.metric!r} cannot be computed from predictions; "
                f"use one of {sorted(PREDICTION_METRICS)} (optionally with a test_ or val_ prefix)"
            )
        if (split.test if part == "test" else split.validation) <= 0:
            raise ConfigError(
                f"gate.mustBeat.metric {gate.must_beat.metric!r} is scored on the {part} rows, but "
                f"dataset.split.{part} is 0"
            )

    def _comparison(
        self, tracker: Tracker, candidate: Any, rows: dict[str, pd.DataFrame], labels: dict[str, Any]
    ) -> Comparison | None:
        """Score the candidate and the version holding mustBeat.alias on the same held-out rows."""
        gate = self.cfg.spec.gate
        if gate is None or gate.must_beat is None:
            return None
        rule = gate.must_beat
        part, base = metric_split(rule.metric, has_test=self.cfg.spec.dataset.split.test > 0)
        score = PREDICTION_METRICS[base]
        x, y = rows[part], labels[part]
        new_value = score(y, _predict(candidate, x))
        holder = tracker.version_by_alias(self.cfg.spec.model.name, rule.alias)
        if holder is None:
            return Comparison(rule, None, new_value, None)
        uri = f"models:/{self.cfg.spec.model.name}/{holder.version}"
        try:
            incumbent = tracker.load_pyfunc(uri)
            incumbent_value = score(y, _predict(incumbent, x))
        except MlflowUnavailableError:
            raise
        except Exception as error:
            raise GateFailedError(
                f"cannot score {rule.alias} {uri} on the {part} rows for gate.mustBeat: "
                f"{single_line(str(error))[:300]}"
            ) from error
        return Comparison(rule, int(holder.version), new_value, incumbent_value)

    def _gate_and_register(
        self,
        tracker: Tracker,
        model_uri: str,
        final_metrics: dict[str, float],
        comparison: Comparison | None,
        digest: str,
    ) -> None:
        spec = self.cfg.spec
        result = evaluate_gate(
            spec.gate, final_metrics, has_test=spec.dataset.split.test > 0, comparison=comparison
        )
        self._record_gate(tracker, result)
        if not result.passed:
            raise GateFailedError(f"{result.message}; {spec.model.name} was not registered")
        version = self._register(tracker, model_uri, digest, result)
        uri = f"models:/{spec.model.name}/{version}"
        tracker.set_tags(
            {
                names.TAG_MODEL_NAME: spec.model.name,
                names.TAG_MODEL_VERSION: version,
                names.TAG_MODEL_URI: uri,
            }
        )
        tracker.end_run("FINISHED")
        print(f"registered {uri} ({result.message})", file=sys.stderr)

    def _record_gate(self, tracker: Tracker, result: GateResult) -> None:
        outcome = (
            names.GATE_SKIPPED
            if self.cfg.spec.gate is None
            else names.GATE_PASSED
            if result.passed
            else names.GATE_FAILED
        )
        detail = result.to_dict()
        text = json.dumps(detail, sort_keys=True, allow_nan=False)
        if len(text) > 8000:
            detail["message"] = detail.get("message", "")[
                : max(0, 8000 - (len(text) - len(detail.get("message", ""))) - 3)
            ]
            text = json.dumps(detail, sort_keys=True, allow_nan=False)
        tracker.set_tags({pc.TAG_GATE_RESULT: outcome, names.TAG_GATE_DETAIL: text})

    def _register(self, tracker: Tracker, model_uri: str, digest: str, gate: GateResult) -> str:
        cfg = self.cfg
        spec = cfg.spec
        assert self.run_id is not None
        tags: dict[str, str] = {}
        tags.update(spec.model.tags or {})
        if spec.registration and spec.registration.tags:
            tags.update(spec.registration.tags)
        tags.update(
            {
                **lineage_tags(cfg),
                names.TAG_RUN_ID: self.run_id,
                pc.TAG_DATASET_DIGEST: digest,
                pc.TAG_GATE_RESULT: names.GATE_SKIPPED if spec.gate is None else names.GATE_PASSED,
            }
        )
        version = tracker.register(model_uri, spec.model.name, tags, spec.model.description)
        alias = spec.registration.alias if spec.registration else None
        if alias:
            try:
                tracker.set_alias(spec.model.name, alias, version)
            except TrainerError:
                tracker.delete_version(spec.model.name, version)  # nothing half-registered
                raise
        return version

    # --- built-in trainer ----------------------------------------------------------------------------
    def _builtin(self) -> None:
        cfg = self.cfg
        b = cfg.spec.trainer.builtin
        assert b is not None
        # a process group exists only under torchrun; a single process joins none (and imports torch only
        # once its configuration and data have been checked: bad input fails fast)
        group = cfg.dist.under_torchrun and cfg.dist.world_size > 1
        if group:
            from .distributed import DistContext

            self.dist = DistContext.start(cfg.dist)
        dist = self.dist

        # phase 1: MLflow run (rank 0), data (every process); all stop together on an error
        local, error = 0, None
        loaded: LoadedData | None = None
        try:
            self._check_must_beat()
            if cfg.dist.is_main:
                self._open_run()
            loaded = self._load_data(check_types=True)
            check_early_stopping(b, loaded.split.validation.size > 0, b.task)
            if cfg.dist.is_main and self.tracker is not None:
                self._log_dataset(self.tracker, loaded)
        except AlreadyDoneError:
            local = _DONE
        except TrainerError as failure:
            local, error = int(failure.exit_code), failure
        agreed = dist.agree(local) if dist is not None else local
        if error is not None:
            raise error
        if agreed == _DONE:
            raise AlreadyDoneError("this TrainingJob already registered its model version: nothing to do")
        if agreed:
            raise PeerFailedError(agreed)
        assert loaded is not None
        from . import builtin
        from .distributed import DistContext
        from .tabular_model import TabularPyfuncModel

        if dist is None:
            dist = self.dist = DistContext.start(cfg.dist)
        if dist.is_main and self.tracker is not None:
            self.tracker.set_tags({names.TAG_DEVICE: dist.device.type})
        prepared = builtin.Prepared.build(loaded.frame, loaded.schema, loaded.split, b.task)

        # phase 2: training
        tracker = self.tracker
        store = None
        if cfg.checkpointing and cfg.checkpoint_dir:
            from .checkpoint import CheckpointStore

            store = CheckpointStore(cfg.checkpoint_dir)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if tracker is not None:
                tracker.log_metrics(metrics, step=epoch)
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != names.METRIC_EPOCH)
            print(f"epoch {epoch}/{b.epochs} {shown}", file=sys.stderr, flush=True)

        def on_resume(epoch: int, history: list[dict[str, float]], previous_run: str | None) -> None:
            if tracker is not None:
                tracker.log_history(history)
                tags = {names.TAG_RESUMED_FROM_EPOCH: str(epoch)}
                if previous_run:
                    tags[names.TAG_RESUMED_FROM_RUN] = previous_run
                tracker.set_tags(tags)

        outcome = builtin.train(
            b,
            prepared,
            dist,
            store=store,
            checkpoint_every=cfg.checkpoint_every,
            fingerprint=_fingerprint(cfg, loaded.fetched.digest),
            run_id=self.run_id,
            on_epoch=on_epoch,
            on_resume=on_resume,
            fault_exit_after_epoch=cfg.fault_exit_after_epoch,
        )
        if not dist.is_main or tracker is None:
            return

        # phase 3 (rank 0): final metrics, model, gate, registration
        check_terminated()
        net = outcome.net.cpu()
        final = builtin.evaluate(net, prepared, "validation")
        test = builtin.evaluate(net, prepared, "test")
        final.update(test)
        final["best_epoch"] = float(outcome.best_epoch)
        tracker.log_metrics({**test, "best_epoch": float(outcome.best_epoch)}, step=outcome.epochs_run)
        pyfunc = TabularPyfuncModel.from_module(net, prepared.preprocessor, outcome.architecture)
        example = prepared.raw["train"].head(5)
        model_uri = tracker.log_pyfunc(pyfunc, example, _predict(pyfunc, example), _pip_requirements())
        comparison = self._comparison(
            tracker,
            pyfunc,
            {"validation": prepared.raw["validation"], "test": prepared.raw["test"]},
            {"validation": prepared.labels["validation"], "test": prepared.labels["test"]},
        )
        self._gate_and_register(tracker, model_uri, final, comparison, loaded.fetched.digest)

    # --- user code -----------------------------------------------------------------------------------
    def _user_code(self) -> None:
        from . import user_code

        cfg = self.cfg
        spec = cfg.spec
        is_main = cfg.dist.is_main
        extra: dict[str, str] = {
            names.ENV_HYPERPARAMETERS: json.dumps(cfg.hyperparameters, sort_keys=True),
            names.ENV_MODEL_NAME: spec.model.name,
            pc.ENV_MLFLOW_TRACKING_URI: cfg.tracking_uri,
            pc.ENV_MLFLOW_EXPERIMENT_NAME: cfg.experiment,
            names.ENV_DATASET_URI: spec.dataset.uri,
            names.ENV_DATASET_FORMAT: spec.dataset.resolved_format(),
            names.ENV_DATASET_TARGET: spec.dataset.target,
        }
        if cfg.checkpoint_dir:
            extra[pc.ENV_CHECKPOINT_DIR] = cfg.checkpoint_dir
        tracker = self._open_run() if is_main else None
        loaded = self._load_data(check_types=False)
        extra[names.ENV_DATASET_PATH] = str(loaded.fetched.path)
        extra[names.ENV_DATASET_DIGEST] = loaded.fetched.digest
        extra[names.ENV_DATASET_FEATURES] = json.dumps(loaded.schema.features)
        if tracker is not None:
            assert self.run_id is not None and tracker.experiment_id is not None
            self._log_dataset(tracker, loaded)
            extra["MLFLOW_RUN_ID"] = self.run_id
            extra["MLFLOW_EXPERIMENT_ID"] = tracker.experiment_id
        cmd = user_code.command_line(spec.trainer, cfg.dist, str(Path(cfg.scratch_dir) / "user-code"))
        print(f"running {cmd}", file=sys.stderr, flush=True)
        user_code.run(cmd, user_code.child_env(os.environ, extra))
        if tracker is None or self.run_id is None:
            return

        model_uri = tracker.logged_model_uri(self.run_id)
        if model_uri is None:
            raise UserCodeError(
                f"the user code finished but logged no model to MLflow run {self.run_id}: log one, e.g. "
                f"mlflow.sklearn.log_model(model, name='{names.MODEL_ARTIFACT_NAME}')"
            )
        metrics = tracker.run_metrics(self.run_id)
        comparison = None
        if spec.gate is not None and spec.gate.must_beat is not None:
            self._check_must_beat()
            candidate = tracker.load_pyfunc(model_uri)
            frame, schema, split = loaded.frame, loaded.schema, loaded.split
            rows = {
                p: frame.iloc[split.of(p)][schema.features].reset_index(drop=True)
                for p in ("validation", "test")
            }
            labels = {p: frame.iloc[split.of(p)][schema.target].to_numpy() for p in ("validation", "test")}
            comparison = self._comparison(tracker, candidate, rows, labels)
        self._gate_and_register(tracker, model_uri, metrics, comparison, loaded.fetched.digest)


def lineage_tags(cfg: TrainerConfig) -> dict[str, str]:
    """The lineage both the run and the model version it registers carry: the attempt, the code version,
    the dataset URI and the TrainingJob (uid, name, namespace) when known."""
    tags = {
        pc.TAG_ATTEMPT: cfg.attempt,
        pc.TAG_CODE_VERSION: mlops_operator.__version__,
        names.TAG_DATASET_URI: cfg.spec.dataset.uri,
    }
    if cfg.uid:
        tags[pc.TAG_TRAININGJOB_UID] = cfg.uid
    if cfg.job_name:
        tags[pc.TAG_TRAININGJOB_NAME] = cfg.job_name
    if cfg.namespace:
        tags[pc.TAG_TRAININGJOB_NAMESPACE] = cfg.namespace
    return tags


def _predict(model: Any, rows: pd.DataFrame) -> Any:
    """Predictions of a pyfunc (loaded, or our PythonModel instance)."""
    if hasattr(model, "metadata"):  # a loaded PyFuncModel
        return model.predict(rows)
    return model.predict(None, rows)


def _pip_requirements() -> list[str]:
    import cloudpickle  # type: ignore[import-untyped]
    import mlflow
    import numpy
    import torch

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+', 1)[0]}",
        f"pandas=={pd.__version__}",
        f"numpy=={numpy.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """First SIGTERM: stop at the next safe point (a batch boundary, the next step); a second one: now."""
    name = signal.Signals(signum).name
    try:
        check_terminated()
    finally:
        request_termination(name)


# --- launcher ------------------------------------------------------------------------------------------


def launch(cfg: TrainerConfig) -> int:
    """Start torchrun for this node's processes and exit with the workers' exit code (torchrun itself exits
    1 for any failure; the workers' termination message tells the real one)."""
    from .user_code import torchrun_argv

    argv = torchrun_argv(cfg.dist, ["-m", "mlops_operator.runtime.train"])
    log = Path(cfg.termination_log)
    try:
        child = subprocess.Popen(argv)
    except OSError as error:
        write_termination_message(
            pc.ExitCode.UNEXPECTED, f"cannot start torchrun: {error}", cfg.termination_log
        )
        return int(pc.ExitCode.UNEXPECTED)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    code = child.wait()
    if code == 0:
        return 0
    try:
        parsed = parse_termination_message(log.read_text(encoding="utf-8"))
    except OSError:
        parsed = None
    if parsed is not None:
        return int(parsed[0])
    write_termination_message(
        pc.ExitCode.UNEXPECTED,
        f"torchrun exited with code {code} (see the training processes' logs)",
        cfg.termination_log,
    )
    return int(pc.ExitCode.UNEXPECTED)


def run_attempt() -> int:
    """Read the configuration from the environment and run this process's part; returns the exit code."""
    try:
        cfg = TrainerConfig.from_env()
    except TrainerError as error:
        write_termination_message(error.exit_code, error.message, termination_log_path())
        return int(error.exit_code)
    if cfg.dist.needs_launcher and cfg.spec.trainer.builtin is not None:
        return launch(cfg)
    return Attempt(cfg).run()


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's module teardown (torch's alone costs 1-2 s per process): everything
    that matters (MLflow run, checkpoints, termination message) is written by now."""
    if "mlflow" in sys.modules:
        with contextlib.suppress(Exception):
            import mlflow

            mlflow.flush_async_logging()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mlops-train`` (and ``python -m mlops_operator.runtime.train``); configuration comes
    from the environment only. Does not return: the process exits with the attempt's exit code."""
    del argv
    exit_now(run_attempt())


__all__ = ["Attempt", "exit_now", "launch", "main", "run_attempt"]

if __name__ == "__main__":
    main()
