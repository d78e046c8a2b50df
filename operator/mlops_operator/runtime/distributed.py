"""Process group of a data-parallel run (torchrun): gloo on CPU, nccl on CUDA; no-ops for one process."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as tdist

from .config import DistEnv


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @classmethod
    def start(cls, env: DistEnv, *, timeout_s: float = 1800.0) -> DistContext:
        """Join the process group when torchrun started several processes; pick the device."""
        # deterministic cuBLAS (torch.use_deterministic_algorithms) needs this before the first CUDA call
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        cuda = torch.cuda.is_available()
        device = (
            torch.device(f"cuda:{env.local_rank % torch.cuda.device_count()}")
            if cuda
            else torch.device("cpu")
        )
        if cuda:
            torch.cuda.set_device(device)
        else:
            # share the cores between the processes of this node instead of oversubscribing them
            cores = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            )
            torch.set_num_threads(max(1, cores // max(1, env.local_world_size)))
        if not env.under_torchrun or env.world_size <= 1:
            return cls(rank=0, world_size=1, local_rank=0, device=device, backend=None)
        backend = "nccl" if cuda else "gloo"
        tdist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        return cls(
            rank=tdist.get_rank(),
            world_size=tdist.get_world_size(),
            local_rank=env.local_rank,
            device=device,
            backend=backend,
        )

    def agree(self, code: int) -> int:
        """The largest of every process's ``code`` (0 = fine): lets all processes stop together."""
        if not self.distributed:
            return code
        t = torch.tensor([code], dtype=torch.int64, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return int(t.item())

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the processes."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return [float(v) for v in t.cpu().tolist()]

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every process."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        tdist.broadcast(t, src=0)
        return bool(t.item())

    def barrier(self) -> None:
        if self.distributed:
            tdist.barrier()

    def close(self) -> None:
        if self.distributed and tdist.is_initialized():
            try:
                tdist.destroy_process_group()
            except Exception as error:  # leaving anyway
                print(f"warning: destroying the process group failed: {error}", file=sys.stderr)
