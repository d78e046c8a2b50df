"""Typed access to MLflow for the controllers: TrainingJob runs and progress, model versions, aliases."""

from .client import (
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    ModelNotFoundError,
    Registry,
    RegistryError,
    RegistryUnavailableError,
    RunInfo,
    TrainingRunView,
    VersionInfo,
    registry_for,
)

__all__ = [
    "FAILED",
    "FINISHED",
    "KILLED",
    "RUNNING",
    "ModelNotFoundError",
    "Registry",
    "RegistryError",
    "RegistryUnavailableError",
    "RunInfo",
    "TrainingRunView",
    "VersionInfo",
    "registry_for",
]
