"""The operator's settings: every ``MLOPS_*`` variable of the operator process, read once by the runner from
the environment (the Helm chart renders them from values) and handed to the objects that need them.

- MLOPS_RUNTIME_IMAGE (``runtime_image``): image of training/serving pods when a spec names none
  (default ghcr.io/mlops-operator/runtime:<version>).
- MLOPS_MLFLOW_TRACKING_URI or MLFLOW_TRACKING_URI (``mlflow_tracking_uri``): MLflow when a spec names none.
- MLOPS_PROGRESS_INTERVAL_SECONDS: how often unfinished TrainingJobs are re-observed (default 10).
- MLOPS_RESOLVE_INTERVAL_SECONDS: how often ModelDeployments re-resolve their MLflow alias (default 30).
- MLOPS_DRIFT_SCRAPE_INTERVAL_SECONDS: how often DriftPolicies scrape their model servers (default 15;
  evaluations still happen every spec.intervalSeconds).
- MLOPS_DISCOVERY_TTL_SECONDS: how long an API discovery answer is kept (default 60).
- MLOPS_PEERING_PRIORITY: this replica's peering priority (default random: one replica acts).
- MLOPS_PEERING_LIFETIME: seconds a silent peer counts as alive (default 60).
- MLOPS_WATCH_SERVER_TIMEOUT / MLOPS_WATCH_CLIENT_TIMEOUT: watch timeouts, server-side and the client's
  guard against a stalled watch (default 300 / 330 seconds).
- MLOPS_WORKER_LIMIT: kopf workers, one per object with pending events (default 1000).
- MLOPS_WORKER_THREADS: threads that run reconciles (default 24).
- MLOPS_MALLOC_ARENAS: glibc malloc arenas, unless MALLOC_ARENA_MAX is set (default 2).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlops_operator import __version__
from mlops_operator.api.v1alpha1 import default_runtime_image


def _random_priority() -> int:
    # kopf pauses every peer of equal priority: a random priority makes exactly one replica act (the highest)
    return random.randint(1, 2**30)


@dataclass(frozen=True)
class OperatorConfig:
    runtime_image: str
    mlflow_tracking_uri: str | None
    progress_interval_seconds: float = 10.0
    resolve_interval_seconds: float = 30.0
    drift_scrape_interval_seconds: float = 15.0
    discovery_ttl_seconds: float = 60.0
    peering_priority: int = field(default_factory=_random_priority)
    peering_lifetime_seconds: int = 60
    watch_server_timeout_seconds: int = 300
    watch_client_timeout_seconds: float = 330.0
    worker_limit: int = 1000
    worker_threads: int = 24
    malloc_arenas: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env

        def number(name: str, default: float) -> float:
            value = env.get(name) or ""
            try:
                return float(value) if value else default
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a number") from None

        priority = env.get("MLOPS_PEERING_PRIORITY")
        return cls(
            runtime_image=env.get("MLOPS_RUNTIME_IMAGE") or default_runtime_image(__version__),
            mlflow_tracking_uri=env.get("MLOPS_MLFLOW_TRACKING_URI")
            or env.get("MLFLOW_TRACKING_URI")
            or None,
            progress_interval_seconds=number("MLOPS_PROGRESS_INTERVAL_SECONDS", 10),
            resolve_interval_seconds=number("MLOPS_RESOLVE_INTERVAL_SECONDS", 30),
            drift_scrape_interval_seconds=number("MLOPS_DRIFT_SCRAPE_INTERVAL_SECONDS", 15),
            discovery_ttl_seconds=max(0.0, number("MLOPS_DISCOVERY_TTL_SECONDS", 60)),
            peering_priority=int(priority) if priority else _random_priority(),
            peering_lifetime_seconds=int(number("MLOPS_PEERING_LIFETIME", 60)),
            # the apiserver refuses a fractional timeoutSeconds
            watch_server_timeout_seconds=int(number("MLOPS_WATCH_SERVER_TIMEOUT", 300)),
            watch_client_timeout_seconds=number("MLOPS_WATCH_CLIENT_TIMEOUT", 330),
            worker_limit=int(number("MLOPS_WORKER_LIMIT", 1000)),
            worker_threads=int(number("MLOPS_WORKER_THREADS", 24)),
            malloc_arenas=int(number("MLOPS_MALLOC_ARENAS", 2)),
        )
