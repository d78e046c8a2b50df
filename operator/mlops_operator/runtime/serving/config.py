"""The model server's configuration: the pod contract's environment plus a few tuning knobs of its own.

Everything comes from the environment (the controller sets it); ``--host``/``--port`` override the listen
address for local use. Invalid values raise :class:`~mlops_operator.runtime.errors.ConfigError` (exit 2).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from mlops_operator.api.v1alpha1.pod_contract import (
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_SERVER_PORT,
    ENV_INFERENCE_LOG,
    ENV_LOG_SAMPLE_RATE,
    ENV_MAX_BATCH_DELAY_MS,
    ENV_MAX_BATCH_SIZE,
    ENV_MAX_INFLIGHT,
    ENV_MLFLOW_TRACKING_URI,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
    ENV_MODELDEPLOYMENT_NAME,
    ENV_POD_NAME,
    ENV_SERVER_HOST,
    ENV_SERVER_PORT,
    ENV_SERVING_ROLE,
    ENV_SHADOW_PERCENT,
    ENV_SHADOW_URL,
)
from mlops_operator.runtime.errors import ConfigError

# --- the server's own knobs (not set by the controller; defaults suit a pod) -------------------------------
#: Largest accepted request body in bytes (413 beyond).
ENV_MAX_BODY_BYTES: Final = "MLOPS_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
#: Default of MLOPS_MAX_INFLIGHT; 0 disables the limit.
DEFAULT_MAX_INFLIGHT: Final = 64
#: Micro-batching (pod contract MLOPS_MAX_BATCH_SIZE, rows per model call; 0 or 1: off, the default) and
#: how long a request waits for others (MLOPS_MAX_BATCH_DELAY_MS).
#: ``auto`` (default): predict on the event loop when the model is fast, else in a worker thread;
#: ``inline`` or ``thread`` force one.
ENV_PREDICT_MODE: Final = "MLOPS_PREDICT_MODE"
#: Requests whose estimated prediction time is below this many milliseconds run on the event loop (auto).
ENV_INLINE_BUDGET_MS: Final = "MLOPS_INLINE_BUDGET_MS"
DEFAULT_INLINE_BUDGET_MS: Final = 2.0
#: ``auto`` (default): a verified fast path for torch models when one applies; ``generic``: always
#: ``pyfunc.predict`` on a DataFrame.
ENV_PREDICT_PATH: Final = "MLOPS_PREDICT_PATH"
#: ``full`` (default): request metrics + prediction and feature histograms; ``basic``: request metrics only;
#: ``off``: no /metrics at all (benchmarks).
ENV_SERVER_METRICS: Final = "MLOPS_SERVER_METRICS"
#: Seconds to finish in-flight requests after SIGTERM.
ENV_SHUTDOWN_TIMEOUT: Final = "MLOPS_SHUTDOWN_TIMEOUT"
DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 20.0
#: torch intra-op threads (1 suits small models: no thread hand-off per request).
ENV_TORCH_THREADS: Final = "MLOPS_TORCH_THREADS"
#: Sampled records held in memory for the log writer; beyond it records are dropped (and counted).
ENV_LOG_QUEUE: Final = "MLOPS_INFERENCE_LOG_QUEUE"
DEFAULT_LOG_QUEUE: Final = 10_000
#: Seconds between flushes of the inference log.
ENV_LOG_FLUSH: Final = "MLOPS_INFERENCE_LOG_FLUSH_SECONDS"
DEFAULT_LOG_FLUSH_S: Final = 1.0

#: Shadow traffic (set by the controller on primary pods when the challenger runs in shadow mode).

PredictMode = Literal["auto", "inline", "thread"]
PredictPath = Literal["auto", "generic"]
MetricsLevel = Literal["full", "basic", "off"]
ROLES: Final = ("primary", "challenger", "shadow")

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")


@dataclass(frozen=True)
class ServerConfig:
    model_name: str
    model_version: str
    model_uri: str
    tracking_uri: str | None = None
    deployment: str = ""
    role: str = "primary"
    pod: str = ""
    host: str = "0.0.0.0"  # noqa: S104 - a pod listens on all its interfaces
    port: int = DEFAULT_SERVER_PORT
    inference_log: str | None = None
    sample_rate: float = 0.0
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    predict_mode: PredictMode = "auto"
    inline_budget_s: float = DEFAULT_INLINE_BUDGET_MS / 1000
    predict_path: PredictPath = "auto"
    metrics: MetricsLevel = "full"
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    torch_threads: int = 1
    log_queue: int = DEFAULT_LOG_QUEUE
    log_flush_s: float = DEFAULT_LOG_FLUSH_S
    shadow_url: str | None = None
    shadow_percent: float = 0.0
    max_batch_size: int = 0
    max_batch_delay_s: float = DEFAULT_MAX_BATCH_DELAY_MS / 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str], argv: Sequence[str] | None = None) -> ServerConfig:
        args = _parse_args(argv or [])
        uri = env.get(ENV_MODEL_URI, "").strip()
        name = env.get(ENV_MODEL_NAME, "").strip()
        version = env.get(ENV_MODEL_VERSION, "").strip()
        if uri:
            match = _MODEL_URI.match(uri)
            if not match:
                raise ConfigError(
                    f"{ENV_MODEL_URI}={uri!r} is not a pinned registry URI "
                    "(expected models:/<name>/<version>)"
                )
            if name and name != match["name"]:
                raise ConfigError(f"{ENV_MODEL_NAME}={name!r} does not match {ENV_MODEL_URI}={uri!r}")
            if version and version != match["version"]:
                raise ConfigError(f"{ENV_MODEL_VERSION}={version!r} does not match {ENV_MODEL_URI}={uri!r}")
            name, version = match["name"], match["version"]
        elif name and version:
            if not version.isdigit():
                raise ConfigError(f"{ENV_MODEL_VERSION}={version!r} is not a version number")
            uri = f"models:/{name}/{version}"
        else:
            raise ConfigError(
                f"set {ENV_MODEL_URI} (models:/<name>/<version>) or {ENV_MODEL_NAME} and {ENV_MODEL_VERSION}"
            )
        role = env.get(ENV_SERVING_ROLE, "").strip() or "primary"
        if role not in ROLES:
            raise ConfigError(f"{ENV_SERVING_ROLE}={role!r} is not one of {', '.join(ROLES)}")
        port = (
            args.port if args.port is not None else _int(env, ENV_SERVER_PORT, DEFAULT_SERVER_PORT, 1, 65535)
        )
        return cls(
            model_name=name,
            model_version=version,
            model_uri=uri,
            tracking_uri=env.get(ENV_MLFLOW_TRACKING_URI) or None,
            deployment=env.get(ENV_MODELDEPLOYMENT_NAME, "").strip(),
            role=role,
            pod=env.get(ENV_POD_NAME, "").strip() or env.get("HOSTNAME", "").strip(),
            host=args.host or env.get(ENV_SERVER_HOST, "").strip() or "0.0.0.0",  # noqa: S104
            port=port,
            inference_log=env.get(ENV_INFERENCE_LOG, "").strip() or None,
            sample_rate=_float(
                env, ENV_LOG_SAMPLE_RATE, 1.0 if env.get(ENV_INFERENCE_LOG) else 0.0, 0.0, 1.0
            ),
            max_inflight=_int(env, ENV_MAX_INFLIGHT, DEFAULT_MAX_INFLIGHT, 0, 1_000_000),
            max_body_bytes=_int(env, ENV_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, 1, 1 << 31),
            predict_mode=_choice(env, ENV_PREDICT_MODE, ("auto", "inline", "thread")),  # type: ignore[arg-type]
            inline_budget_s=_float(env, ENV_INLINE_BUDGET_MS, DEFAULT_INLINE_BUDGET_MS, 0.0, 60_000.0) / 1000,
            predict_path=_choice(env, ENV_PREDICT_PATH, ("auto", "generic")),  # type: ignore[arg-type]
            metrics=_choice(env, ENV_SERVER_METRICS, ("full", "basic", "off")),  # type: ignore[arg-type]
            shutdown_timeout_s=_float(env, ENV_SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT_S, 0.0, 3600.0),
            torch_threads=_int(env, ENV_TORCH_THREADS, 1, 1, 1024),
            log_queue=_int(env, ENV_LOG_QUEUE, DEFAULT_LOG_QUEUE, 1, 10_000_000),
            log_flush_s=_float(env, ENV_LOG_FLUSH, DEFAULT_LOG_FLUSH_S, 0.01, 3600.0),
            shadow_url=env.get(ENV_SHADOW_URL, "").strip() or None,
            shadow_percent=_float(env, ENV_SHADOW_PERCENT, 0.0, 0.0, 100.0),
            max_batch_size=_int(env, ENV_MAX_BATCH_SIZE, 0, 0, 1_000_000),
            max_batch_delay_s=_float(env, ENV_MAX_BATCH_DELAY_MS, DEFAULT_MAX_BATCH_DELAY_MS, 0.0, 60_000.0)
            / 1000,
        )


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlops-serve",
        description="Model server of mlops-operator: serves models:/<name>/<version> from MLflow "
        "(configured by environment, see mlops_operator.api.v1alpha1.pod_contract).",
    )
    parser.add_argument("--host", default=None, help="listen address (default 0.0.0.0)")
    parser.add_argument(
        "--port", type=int, default=None, help=f"listen port (default ${ENV_SERVER_PORT} or 8080)"
    )
    args = parser.parse_args(list(argv))
    if args.port is not None and not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is out of range")
    return args


def _int(env: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{key}={value} is out of range [{low}, {high}]")
    return value


def _float(env: Mapping[str, str], key: str, default: float, low: float, high: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{key}={raw} is out of range [{low:g}, {high:g}]")
    return value


def _choice(env: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    raw = env.get(key, "").strip().lower() or choices[0]
    if raw not in choices:
        raise ConfigError(f"{key}={raw!r} is not one of {', '.join(choices)}")
    return raw
