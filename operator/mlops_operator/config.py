"""Operator-wide settings, read once from the environment (the Helm chart renders them from values).

- MLOPS_RUNTIME_IMAGE: image of training/serving pods when a spec names none
  (default ghcr.io/mlops-operator/runtime:<version>).
- MLOPS_MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_URI): MLflow server when a spec names none.
- MLOPS_PROGRESS_INTERVAL_SECONDS: how often unfinished TrainingJobs are re-observed (default 10).
- MLOPS_RESOLVE_INTERVAL_SECONDS: how often ModelDeployments re-resolve their MLflow alias (default 30).
- MLOPS_DRIFT_SCRAPE_INTERVAL_SECONDS: how often DriftPolicies scrape their model servers (default 15;
  evaluations still happen every spec.intervalSeconds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mlops_operator import __version__

DEFAULT_RUNTIME_IMAGE_REPOSITORY = "ghcr.io/mlops-operator/runtime"


@dataclass(frozen=True)
class OperatorConfig:
    runtime_image: str
    mlflow_tracking_uri: str | None
    progress_interval_seconds: float
    resolve_interval_seconds: float = 30.0
    drift_scrape_interval_seconds: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        version = __version__.split("+", 1)[0]
        return cls(
            runtime_image=env.get("MLOPS_RUNTIME_IMAGE") or f"{DEFAULT_RUNTIME_IMAGE_REPOSITORY}:{version}",
            mlflow_tracking_uri=env.get("MLOPS_MLFLOW_TRACKING_URI")
            or env.get("MLFLOW_TRACKING_URI")
            or None,
            progress_interval_seconds=float(env.get("MLOPS_PROGRESS_INTERVAL_SECONDS", "10")),
            resolve_interval_seconds=float(env.get("MLOPS_RESOLVE_INTERVAL_SECONDS", "30")),
            drift_scrape_interval_seconds=float(env.get("MLOPS_DRIFT_SCRAPE_INTERVAL_SECONDS", "15")),
        )
