"""Errors of the runtime programs, each bound to an exit code of the pod contract, and the one-line
termination message Kubernetes shows in the pod's status (and the operator copies into status.failure)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Final

from mlops_operator.api.v1alpha1.pod_contract import (
    DEFAULT_TERMINATION_LOG,
    ENV_TERMINATION_LOG,
    REASON_BY_EXIT_CODE,
    ExitCode,
)

#: Kubernetes keeps at most 4096 bytes of a termination message.
MAX_TERMINATION_MESSAGE_BYTES: Final = 4096

#: The exit code of each termination reason (the inverse of REASON_BY_EXIT_CODE).
EXIT_CODE_BY_REASON: Final = {reason: code for code, reason in REASON_BY_EXIT_CODE.items()}


class TrainerError(Exception):
    """A failure with a known exit code; ``message`` is what the user reads (one line, no traceback)."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def reason(self) -> str:
        return REASON_BY_EXIT_CODE[self.exit_code]


class ConfigError(TrainerError):
    """The spec or the environment is invalid: retrying cannot help."""

    exit_code = ExitCode.CONFIG_ERROR


class DataError(TrainerError):
    """The dataset cannot be read or is unusable (missing target, NaN, wrong types)."""

    exit_code = ExitCode.DATA_ERROR


class MlflowUnavailableError(TrainerError):
    """The MLflow tracking server / model registry cannot be reached or refuses the request."""

    exit_code = ExitCode.MLFLOW_UNAVAILABLE


class GateFailedError(TrainerError):
    """The model did not meet the gate; nothing was registered."""

    exit_code = ExitCode.GATE_FAILED


class UserCodeError(TrainerError):
    """The user's command or script failed (or produced nothing to register)."""

    exit_code = ExitCode.USER_CODE_FAILED


class TerminatedError(TrainerError):
    """SIGTERM (pod deleted, preempted, past its deadline): the run is ended KILLED; retried by the Job."""


_termination = threading.Event()
_termination_signal: list[str] = []


def request_termination(signal_name: str) -> None:
    """Called from the SIGTERM handler: training stops at the next batch boundary."""
    _termination_signal[:] = [signal_name]
    _termination.set()


def check_terminated() -> None:
    """Raise TerminatedError once termination was requested."""
    if _termination.is_set():
        name = _termination_signal[0] if _termination_signal else "SIGTERM"
        raise TerminatedError(f"terminated by {name} (pod deleted, preempted or past activeDeadlineSeconds)")


def single_line(text: str) -> str:
    """``text`` on one line: whitespace runs (newlines included) become single spaces."""
    return " ".join(text.split())


def termination_message(code: ExitCode, message: str) -> str:
    """``<Reason>: <message>`` on one line, at most MAX_TERMINATION_MESSAGE_BYTES bytes of UTF-8."""
    line = (
        f"{REASON_BY_EXIT_CODE.get(code, REASON_BY_EXIT_CODE[ExitCode.UNEXPECTED])}: {single_line(message)}"
    )
    encoded = line.encode("utf-8")
    if len(encoded) <= MAX_TERMINATION_MESSAGE_BYTES:
        return line
    cut = encoded[: MAX_TERMINATION_MESSAGE_BYTES - 3].decode("utf-8", "ignore")
    return cut + "..."


def parse_termination_message(line: str) -> tuple[ExitCode, str] | None:
    """The exit code and message of a termination message written by :func:`termination_message`."""
    reason, sep, message = line.strip().partition(": ")
    if not sep or reason not in EXIT_CODE_BY_REASON:
        return None
    return EXIT_CODE_BY_REASON[reason], message


def termination_log_path(env: dict[str, str] | None = None) -> str:
    source = os.environ if env is None else env
    return source.get(ENV_TERMINATION_LOG) or DEFAULT_TERMINATION_LOG


def write_termination_message(code: ExitCode, message: str, path: str | None = None) -> str:
    """Write the termination message (replacing what is there) and echo it to stderr; returns the line.

    Outside a pod the default ``/dev/termination-log`` may not be writable: then only stderr gets it.
    """
    line = termination_message(code, message)
    target = path or termination_log_path()
    with contextlib.suppress(OSError):
        Path(target).write_text(line, encoding="utf-8")
    print(line, file=sys.stderr, flush=True)
    return line
