"""Checkpoints of the built-in trainer: model + optimizer + epoch + RNG state + early-stopping state + metric
history, one file per epoch (``checkpoint-epoch-000012.pt``) in a local directory (a mounted PVC or emptyDir)
or an fsspec URL (s3://, gs://). The latest one whose fingerprint matches the job is resumed."""

from __future__ import annotations

import io
import os
import random
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

CHECKPOINT_FORMAT: Final = 1
_NAME_RE: Final = re.compile(r"^checkpoint-epoch-(\d{6,})\.pt$")


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint-epoch-{epoch:06d}.pt"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointStore:
    """Reads and writes one job's checkpoints under ``location`` (a directory path or an fsspec URL)."""

    def __init__(self, location: str, *, keep: int = 2) -> None:
        self.location = location.rstrip("/")
        self.keep = keep
        self._remote = bool(urllib.parse.urlsplit(location).scheme) and not location.startswith("file://")
        if location.startswith("file://"):
            self.location = location[len("file://") :].rstrip("/")

    def _fs(self) -> Any:
        import fsspec  # type: ignore[import-untyped]

        fs, _ = fsspec.core.url_to_fs(self.location)
        return fs

    def _path(self, name: str) -> str:
        return f"{self.location}/{name}"

    def epochs(self) -> list[int]:
        """Epochs that have a checkpoint, newest first."""
        if self._remote:
            fs = self._fs()
            names = (
                [Path(p).name for p in fs.ls(self.location, detail=False)] if fs.exists(self.location) else []
            )
        else:
            directory = Path(self.location)
            names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
        found = [int(m.group(1)) for n in names if (m := _NAME_RE.match(n))]
        return sorted(found, reverse=True)

    def save(self, epoch: int, payload: dict[str, Any]) -> str:
        """Write the checkpoint of ``epoch`` atomically (temp file + rename locally); prune old ones."""
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "epoch": epoch, **payload}, buffer)
        data = buffer.getvalue()
        target = self._path(checkpoint_name(epoch))
        if self._remote:
            fs = self._fs()
            fs.makedirs(self.location, exist_ok=True)
            with fs.open(target, "wb") as f:
                f.write(data)
        else:
            Path(self.location).mkdir(parents=True, exist_ok=True)
            tmp = Path(f"{target}.tmp-{os.getpid()}")
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(target)
        self._prune()
        return target

    def _prune(self) -> None:
        for epoch in self.epochs()[self.keep :]:
            path = self._path(checkpoint_name(epoch))
            try:
                if self._remote:
                    self._fs().rm(path)
                else:
                    Path(path).unlink(missing_ok=True)
            except OSError as error:
                print(f"warning: could not remove old checkpoint {path}: {error}", file=sys.stderr)

    def clear(self) -> None:
        """Remove every checkpoint (they belong to another configuration of this job)."""
        for epoch in self.epochs():
            path = self._path(checkpoint_name(epoch))
            if self._remote:
                self._fs().rm(path)
            else:
                Path(path).unlink(missing_ok=True)

    def load(self, epoch: int) -> dict[str, Any]:
        path = self._path(checkpoint_name(epoch))
        if self._remote:
            with self._fs().open(path, "rb") as f:
                data = f.read()
        else:
            data = Path(path).read_bytes()
        # our own file (written by this trainer for this job) with numpy/python RNG state: not weights-only
        loaded: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        return loaded

    def latest(self, fingerprint: str) -> dict[str, Any] | None:
        """The newest readable checkpoint written for ``fingerprint`` (None: start from scratch)."""
        for epoch in self.epochs():
            try:
                payload = self.load(epoch)
            except Exception as error:
                print(f"warning: skipping unreadable checkpoint of epoch {epoch}: {error}", file=sys.stderr)
                continue
            if payload.get("format") != CHECKPOINT_FORMAT or payload.get("fingerprint") != fingerprint:
                print(
                    f"warning: checkpoint of epoch {epoch} in {self.location} belongs to another "
                    "configuration; ignoring it",
                    file=sys.stderr,
                )
                continue
            return payload
        return None
