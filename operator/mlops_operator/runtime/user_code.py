"""Run the user's command or script as a child process, under the attempt's MLflow run: the child gets
MLFLOW_RUN_ID (and the tracking URI / experiment), so an unmodified script calling ``mlflow.start_run()``
or ``mlflow.log_*`` logs into that same run."""

from __future__ import annotations

import collections
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_operator.api.v1alpha1.trainingjob import TrainerSpec

from .config import DistEnv
from .errors import UserCodeError, check_terminated, request_termination

#: Lines of the child's stderr kept for the failure message.
_TAIL = 20


@dataclass(frozen=True)
class CommandLine:
    argv: list[str]
    #: How the failure message names it: the user's command, or "trainer.script".
    display: str

    def __str__(self) -> str:
        return shlex.join(self.argv)


def torchrun_argv(dist: DistEnv, target: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run`` with this pod's rendezvous, running ``target``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={dist.nnodes}",
        f"--nproc-per-node={dist.nproc_per_node}",
        f"--node-rank={dist.node_rank}",
        f"--master-addr={dist.master_addr}",
        f"--master-port={dist.master_port}",
        *target,
    ]


def command_line(trainer: TrainerSpec, dist: DistEnv, scratch_dir: str) -> CommandLine:
    """The user's command + args, or the inline script written to a file and run with python (with torchrun
    when several processes train)."""
    args = list(trainer.args or [])
    if trainer.command:
        return CommandLine([*trainer.command, *args], f"command {shlex.join(trainer.command)[:200]!r}")
    if trainer.script is None:
        raise UserCodeError("trainer has neither command nor script")
    directory = Path(scratch_dir)
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "mlops_user_script.py"
    script.write_text(trainer.script, encoding="utf-8")
    if dist.nnodes * dist.nproc_per_node > 1:
        return CommandLine(torchrun_argv(dist, [str(script), *args]), "trainer.script (under torchrun)")
    return CommandLine([sys.executable, str(script), *args], "trainer.script")


def run(cmd: CommandLine, env: Mapping[str, str]) -> None:
    """Run the child with stdout passed through and stderr teed (its tail goes into the failure message);
    SIGTERM is forwarded. Raises UserCodeError on a non-zero exit."""
    try:
        child = subprocess.Popen(cmd.argv, env=dict(env), stderr=subprocess.PIPE, text=True, errors="replace")
    except OSError as error:
        raise UserCodeError(f"cannot start {cmd.display}: {error.strerror or error}") from error
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL)

    def pump() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum: int, frame: object) -> None:
        request_termination(signal.Signals(signum).name)
        child.send_signal(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, forward)
    try:
        code = child.wait()
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
        reader.join(timeout=5)
    if code == 0:
        return
    check_terminated()  # the child stopped because the pod is being terminated
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    detail = f": {last}" if last else ""
    raise UserCodeError(f"{cmd.display} {how}{detail}")


def child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(extra)
    return env
