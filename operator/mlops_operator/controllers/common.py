"""What every controller shares: the operator's config, readable validation errors, Events for
transitions, and status patches sent only when the status changed."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mlops_operator.config import OperatorConfig
from mlops_operator.controllers import kube
from mlops_operator.resources.common import PodDefaults

#: resourceVersion of the latest state the operator knows per object uid: from its watch events and its own
#: status patches. A body older than that (a resync listing taken before a reconcile wrote the status) is
#: re-read before it is reconciled: a stale ``previous`` status would patch and announce again what was
#: already written.
_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


def note_version(obj: Mapping[str, Any]) -> None:
    metadata = obj.get("metadata") or {}
    uid, version = metadata.get("uid"), metadata.get("resourceVersion")
    if uid and version:
        with _versions_lock:
            _versions[uid] = version


def forget_version(uid: str) -> None:
    with _versions_lock:
        _versions.pop(uid, None)


def is_stale(body: Mapping[str, Any]) -> bool:
    """``body`` is not the latest state the operator knows of the object."""
    metadata = body.get("metadata") or {}
    with _versions_lock:
        known = _versions.get(metadata.get("uid") or "")
    return known is not None and known != metadata.get("resourceVersion")


#: Delay before kopf retries a reconcile that raised (an apiserver or MLflow hiccup past kube's retries).
RETRY_BACKOFF_SECONDS = 5

_config: OperatorConfig | None = None


def operator_config() -> OperatorConfig:
    global _config
    if _config is None:
        _config = OperatorConfig.from_env()
    return _config


def pod_defaults() -> PodDefaults:
    """What pods get when a spec leaves the image or MLflow out."""
    config = operator_config()
    return PodDefaults(runtime_image=config.runtime_image, mlflow_tracking_uri=config.mlflow_tracking_uri)


@dataclass(frozen=True)
class Transition:
    """Something that changed and deserves a Kubernetes Event on the object."""

    type: str  # Normal | Warning
    reason: str
    message: str


def describe_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    """``spec.dataset.target: Field required; spec.trainer: ...`` with the wire (camelCase) field paths."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in (prefix, *item["loc"]))
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def publish(
    body: Mapping[str, Any],
    previous: Mapping[str, Any],
    new: Mapping[str, Any],
    transitions: list[Transition],
) -> bool:
    """Patch the status subresource when ``new`` differs from ``previous`` (fields that disappeared are
    nulled: a merge patch keeps what it does not mention), then post an Event per transition.
    Returns whether a patch was sent."""
    changed = dict(new) != dict(previous)
    if changed:
        metadata = body["metadata"]
        patch = {**new, **{key: None for key in previous if key not in new}}
        written = kube.patch_status(
            body["apiVersion"], body["kind"], metadata["namespace"], metadata["name"], patch
        )
        note_version(written or {})
    for transition in transitions:
        kube.post_event(body, transition.type, transition.reason, transition.message)
    return changed
