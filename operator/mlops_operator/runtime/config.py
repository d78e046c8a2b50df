"""The trainer's configuration, read from the environment the operator gives a training pod (and nothing
else): the TrainingJob spec as JSON, the job's identity, MLflow, checkpoints and torchrun's rendezvous."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import mlflow_contract as names
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.trainingjob import BuiltinTrainer, TrainingJobSpec

from . import metrics as m
from .errors import ConfigError, single_line


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a (possibly) distributed run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    nnodes: int = 1
    nproc_per_node: int = 1
    master_addr: str = "localhost"
    master_port: int = pc.DEFAULT_MASTER_PORT
    #: Started by torchrun (RANK/LOCAL_RANK set): a worker of a process group.
    under_torchrun: bool = False

    @property
    def is_main(self) -> bool:
        """Global rank 0: the only process that talks to MLflow."""
        return self.rank == 0 if self.under_torchrun else self.node_rank == 0

    @property
    def writes_termination_log(self) -> bool:
        """One process per pod writes the pod's termination message."""
        return self.local_rank == 0

    @property
    def needs_launcher(self) -> bool:
        """More than one process should train but torchrun has not started us: we start torchrun."""
        return not self.under_torchrun and self.nnodes * self.nproc_per_node > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DistEnv:
        under = "RANK" in env and "LOCAL_RANK" in env
        nnodes = _int(env, pc.ENV_NNODES, 1)
        nproc = _int(env, pc.ENV_NPROC_PER_NODE, 1)
        if under:
            return cls(
                rank=_int(env, "RANK", 0),
                world_size=_int(env, "WORLD_SIZE", 1),
                local_rank=_int(env, "LOCAL_RANK", 0),
                local_world_size=_int(env, "LOCAL_WORLD_SIZE", 1),
                node_rank=_int(env, "GROUP_RANK", _int(env, pc.ENV_NODE_RANK, 0)),
                nnodes=nnodes,
                nproc_per_node=nproc,
                master_addr=env.get(pc.ENV_MASTER_ADDR, "localhost"),
                master_port=_int(env, pc.ENV_MASTER_PORT, pc.DEFAULT_MASTER_PORT),
                under_torchrun=True,
            )
        return cls(
            node_rank=_int(env, pc.ENV_NODE_RANK, 0),
            nnodes=nnodes,
            nproc_per_node=nproc,
            master_addr=env.get(pc.ENV_MASTER_ADDR, "localhost"),
            master_port=_int(env, pc.ENV_MASTER_PORT, pc.DEFAULT_MASTER_PORT),
        )


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {key}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {key}={raw!r} is not a number") from None


@dataclass(frozen=True)
class TrainerConfig:
    spec: TrainingJobSpec
    job_name: str
    namespace: str
    uid: str
    #: The attempt (pod name): one MLflow run per attempt.
    attempt: str
    image: str | None
    termination_log: str
    tracking_uri: str
    experiment: str
    #: This job's checkpoint directory (a local path or an fsspec URL): ``<MLOPS_CHECKPOINT_DIR or the
    #: spec's runPolicy.checkpoint.uri>/<uid>``; handed to user code as MLOPS_CHECKPOINT_DIR.
    checkpoint_dir: str | None
    #: The built-in trainer checkpoints (and resumes) only when the spec asks for it (runPolicy.checkpoint):
    #: the default directory is an emptyDir that a retried pod does not get back.
    checkpointing: bool
    checkpoint_every: int
    dist: DistEnv
    mlflow_connect_timeout: float
    fault_exit_after_epoch: int | None
    #: Directory for downloaded data and scripts.
    scratch_dir: str

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.spec.trainer.hyperparameters or {})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainerConfig:
        env = os.environ if env is None else env
        raw = env.get(pc.ENV_TRAININGJOB_SPEC)
        if not raw:
            raise ConfigError(f"{pc.ENV_TRAININGJOB_SPEC} is not set: the trainer needs the TrainingJob spec")
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise ConfigError(f"{pc.ENV_TRAININGJOB_SPEC} is not JSON: {error}") from None
        try:
            spec = TrainingJobSpec.model_validate(data)
        except ValidationError as error:
            raise ConfigError(f"invalid TrainingJob spec: {describe_validation_error(error)}") from None

        tracking_uri = env.get(pc.ENV_MLFLOW_TRACKING_URI) or (
            spec.mlflow.tracking_uri if spec.mlflow else None
        )
        if not tracking_uri:
            raise ConfigError(
                f"no MLflow tracking server: set spec.mlflow.trackingUri or {pc.ENV_MLFLOW_TRACKING_URI}"
            )
        experiment = env.get(pc.ENV_MLFLOW_EXPERIMENT_NAME) or spec.experiment_name
        uid = env.get(pc.ENV_TRAININGJOB_UID, "")

        checkpoint = spec.run_policy.checkpoint
        base = env.get(pc.ENV_CHECKPOINT_DIR) or (pc.local_path(checkpoint.uri) if checkpoint else None)
        checkpoint_dir = f"{base.rstrip('/')}/{uid or 'default'}" if base else None
        fault = env.get(names.ENV_FAULT_EXIT_AFTER_EPOCH, "").strip()
        return cls(
            spec=spec,
            job_name=env.get(pc.ENV_TRAININGJOB_NAME, ""),
            namespace=env.get(pc.ENV_TRAININGJOB_NAMESPACE, ""),
            uid=uid,
            attempt=env.get(pc.ENV_POD_NAME) or socket.gethostname(),
            image=env.get(pc.ENV_IMAGE) or spec.image,
            termination_log=env.get(pc.ENV_TERMINATION_LOG) or pc.DEFAULT_TERMINATION_LOG,
            tracking_uri=tracking_uri,
            experiment=experiment,
            checkpoint_dir=checkpoint_dir,
            checkpointing=checkpoint is not None and checkpoint_dir is not None,
            checkpoint_every=checkpoint.every_epochs if checkpoint else 1,
            dist=DistEnv.from_env(env),
            mlflow_connect_timeout=_float(env, names.ENV_MLFLOW_CONNECT_TIMEOUT, 60.0),
            fault_exit_after_epoch=_int(env, names.ENV_FAULT_EXIT_AFTER_EPOCH, 0) if fault else None,
            scratch_dir=env.get("TMPDIR") or pc.SCRATCH_DIR,
        )


def describe_validation_error(error: ValidationError) -> str:
    """pydantic errors as one line: ``field.path: message; ...``."""
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item.get("loc", ()))
        msg = str(item.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return single_line("; ".join(parts))


def check_early_stopping(cfg: BuiltinTrainer, has_validation: bool, task: str) -> None:
    """earlyStopping must watch a validation metric the built-in trainer logs, and need validation rows."""
    es = cfg.early_stopping
    if es is None:
        return
    if not es.metric.startswith("val_"):
        raise ConfigError(
            f"trainer.builtin.earlyStopping.metric {es.metric!r} must be a validation metric (val_...)"
        )
    if not has_validation:
        raise ConfigError(
            "trainer.builtin.earlyStopping needs validation rows: set dataset.split.validation > 0"
        )
    known = [
        "val_loss",
        *(
            f"val_{k}"
            for k in (m.CLASSIFICATION_METRICS if task == "classification" else m.REGRESSION_METRICS)
        ),
    ]
    if es.metric not in known:
        raise ConfigError(
            f"trainer.builtin.earlyStopping.metric {es.metric!r} is not logged for {task}; use one of {known}"
        )
