"""The built-in trainer's training loop: a tabular MLP with DistributedDataParallel + DistributedSampler
(one process or many), per-epoch metrics, early stopping, and checkpoint/resume."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]
import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from mlops_operator.api.v1alpha1.trainingjob import BuiltinTrainer

from . import metrics as m
from .checkpoint import CheckpointStore, restore_rng_state, rng_state
from .data import SplitIndices, TableSchema
from .distributed import DistContext
from .errors import check_terminated
from .tabular_model import Architecture, Preprocessor, Task, forward_numpy

Part = Literal["train", "validation", "test"]
PREFIX: dict[Part, str] = {"train": "train_", "validation": "val_", "test": "test_"}
#: Exit code of the fault-injection hook (what a SIGKILLed container reports).
FAULT_EXIT_CODE = 137


@dataclass
class Prepared:
    """The dataset split, preprocessed: raw frames (for the pyfunc and the profile) and model tensors."""

    schema: TableSchema
    split: SplitIndices
    preprocessor: Preprocessor
    raw: dict[Part, pd.DataFrame]
    labels: dict[Part, npt.NDArray[Any]]
    x: dict[Part, npt.NDArray[np.float32]]
    y: dict[Part, npt.NDArray[Any]]

    @classmethod
    def build(cls, frame: pd.DataFrame, schema: TableSchema, split: SplitIndices, task: Task) -> Prepared:
        parts: dict[Part, npt.NDArray[np.int64]] = {
            "train": split.train,
            "validation": split.validation,
            "test": split.test,
        }
        train = frame.iloc[split.train]
        pre = Preprocessor.fit(train, schema, task, frame[schema.target])
        raw: dict[Part, pd.DataFrame] = {}
        labels: dict[Part, npt.NDArray[Any]] = {}
        x: dict[Part, npt.NDArray[np.float32]] = {}
        y: dict[Part, npt.NDArray[Any]] = {}
        for part, idx in parts.items():
            rows = frame.iloc[idx]
            raw[part] = rows[schema.features].reset_index(drop=True)
            labels[part] = rows[schema.target].to_numpy()
            x[part] = pre.transform(rows)
            y[part] = pre.encode_target(rows[schema.target])
        return cls(schema=schema, split=split, preprocessor=pre, raw=raw, labels=labels, x=x, y=y)

    def has(self, part: Part) -> bool:
        return len(self.x[part]) > 0


def evaluate(net: nn.Module, data: Prepared, part: Part) -> dict[str, float]:
    """``<prefix>loss`` and the task's metrics on one part of the data (empty dict for an empty part)."""
    if not data.has(part):
        return {}
    pre = data.preprocessor
    out = forward_numpy(net, data.x[part])
    prefix = PREFIX[part]
    logits = torch.from_numpy(out)
    if pre.task == "classification":
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(data.y[part])).item()
        scores = m.classification_metrics(data.labels[part], pre.decode(out))
    else:
        loss = nn.functional.mse_loss(logits.reshape(-1), torch.from_numpy(data.y[part])).item()
        scores = m.regression_metrics(data.labels[part], pre.decode(out))
    return {f"{prefix}loss": float(loss), **{f"{prefix}{k}": v for k, v in scores.items()}}


@dataclass
class EarlyStoppingState:
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def update(self, value: float, epoch: int, direction: str, min_delta: float, net: nn.Module) -> None:
        improved = (
            self.best is None
            or (direction == "minimize" and value < self.best - min_delta)
            or (direction == "maximize" and value > self.best + min_delta)
        )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            self.bad_epochs += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "best_state": self.best_state,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EarlyStoppingState:
        return cls(**data)


@dataclass
class TrainOutcome:
    net: nn.Module
    architecture: Architecture
    history: list[dict[str, float]]
    #: Epoch whose weights the model has (the best one under early stopping, else the last).
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed_from_epoch: int | None = None
    resumed_from_run: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


EpochCallback = Callable[[int, dict[str, float]], None]
ResumeCallback = Callable[[int, list[dict[str, float]], str | None], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _optimizer(params: Any, cfg: BuiltinTrainer) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(
    cfg: BuiltinTrainer,
    data: Prepared,
    dist: DistContext,
    *,
    store: CheckpointStore | None = None,
    checkpoint_every: int = 1,
    fingerprint: str = "",
    run_id: str | None = None,
    on_epoch: EpochCallback | None = None,
    on_resume: ResumeCallback | None = None,
    fault_exit_after_epoch: int | None = None,
) -> TrainOutcome:
    """Train on ``data`` (this process's shard of the training rows per epoch) and return the model."""
    seed_everything(cfg.seed)
    pre = data.preprocessor
    arch = Architecture(pre.input_dim, list(cfg.hidden), pre.output_dim, cfg.dropout)
    net = arch.build().to(dist.device)
    model: nn.Module = net
    if dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = DistributedDataParallel(net, device_ids=ids)
    optimizer = _optimizer(model.parameters(), cfg)
    loss_fn: nn.Module = nn.CrossEntropyLoss() if pre.task == "classification" else nn.MSELoss()

    y_train = torch.from_numpy(data.y["train"])
    dataset = TensorDataset(torch.from_numpy(data.x["train"]), y_train)
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=cfg.seed, drop_last=False
    )
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler)

    es_cfg = cfg.early_stopping
    es = EarlyStoppingState()
    history: list[dict[str, float]] = []
    start = 1
    stopped = False
    resumed_from: int | None = None
    resumed_run: str | None = None

    payload = _load_latest(store, fingerprint, dist)
    if payload is not None:
        net.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        restore_rng_state(payload["rng"])
        es = EarlyStoppingState.from_dict(payload["early_stopping"])
        history = list(payload["history"])
        stopped = bool(payload.get("stopped", False))
        resumed_from = int(payload["epoch"])
        resumed_run = payload.get("run_id")
        start = resumed_from + 1
        print(
            f"resuming from the checkpoint of epoch {resumed_from}: starting at epoch {start}",
            file=sys.stderr,
        )
        if on_resume is not None and dist.is_main:
            on_resume(resumed_from, history, resumed_run)

    epoch = start - 1
    for epoch in range(start, cfg.epochs + 1 if not stopped else start):
        sampler.set_epoch(epoch)
        model.train()
        total, count = 0.0, 0
        for xb, yb in loader:
            check_terminated()
            xb, yb = xb.to(dist.device), yb.to(dist.device)
            optimizer.zero_grad(set_to_none=True)
            out = model(xb)
            loss = loss_fn(out.reshape(-1) if pre.task == "regression" else out, yb)
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(xb)
            count += len(xb)
        total, count_f = dist.sum([total, float(count)])
        metrics: dict[str, float] = {"loss": total / max(count_f, 1.0)}
        metrics.update(evaluate(net, data, "validation"))
        metrics["epoch"] = float(epoch)
        history.append(metrics)
        if es_cfg is not None:
            es.update(metrics[es_cfg.metric], epoch, es_cfg.direction, es_cfg.min_delta, net)
            stopped = dist.broadcast_flag(es.bad_epochs >= es_cfg.patience)
        if on_epoch is not None and dist.is_main:
            on_epoch(epoch, metrics)
        if (
            store is not None
            and dist.is_main
            and (epoch % checkpoint_every == 0 or stopped or epoch == cfg.epochs)
        ):
            store.save(
                epoch,
                {
                    "fingerprint": fingerprint,
                    "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "rng": rng_state(),
                    "early_stopping": es.to_dict(),
                    "history": history,
                    "stopped": stopped,
                    "run_id": run_id,
                },
            )
        if fault_exit_after_epoch is not None and epoch == fault_exit_after_epoch:
            print(f"fault injection: exiting abruptly after epoch {epoch}", file=sys.stderr, flush=True)
            os._exit(FAULT_EXIT_CODE)
        if stopped:
            break
    epochs_run = epoch

    best_epoch = epochs_run
    if es_cfg is not None and es.best_state is not None:
        net.load_state_dict(es.best_state)
        best_epoch = es.best_epoch
    return TrainOutcome(
        net=net,
        architecture=arch,
        history=history,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        stopped_early=stopped and epochs_run < cfg.epochs,
        resumed_from_epoch=resumed_from,
        resumed_from_run=resumed_run,
    )


def _load_latest(store: CheckpointStore | None, fingerprint: str, dist: DistContext) -> dict[str, Any] | None:
    """Rank 0 reads the newest matching checkpoint and hands it to the other processes (their nodes may not
    see the same storage)."""
    payload: dict[str, Any] | None = None
    if store is not None and dist.is_main:
        payload = store.latest(fingerprint)
        if payload is None and store.epochs():
            store.clear()
    if dist.distributed:
        box: list[Any] = [payload]
        tdist.broadcast_object_list(box, src=0)
        payload = box[0]
    return payload
