"""Pieces every builder shares: child names, the ``mlops.dev/`` labels, owner references and the
Pod Security ``restricted`` security contexts. Pure functions of their arguments; no I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mlops_operator.api.v1alpha1 import API_VERSION, LABEL_PREFIX
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.common import MlflowConnection, is_dns1035_label

#: Kubernetes' limit for names that become label values or hostnames (Jobs, Services, pods' hostnames).
MAX_DNS_LABEL: Final = 63

LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
MANAGED_BY: Final = "mlops-operator"

#: Annotation on pods naming their owning custom resource exactly (labels may be shortened).
OWNER_NAME_ANNOTATION: Final = f"{LABEL_PREFIX}owner-name"

#: UID/GID the runtime image's non-root user has.
RUNTIME_UID: Final = 1000


@dataclass(frozen=True)
class PodDefaults:
    """Operator-wide settings a spec falls back to: the runtime image and the MLflow server."""

    runtime_image: str
    mlflow_tracking_uri: str | None = None


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns a child: what an ownerReference and the labels need."""

    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        metadata = body["metadata"]
        return cls(
            kind=body["kind"], name=metadata["name"], namespace=metadata["namespace"], uid=metadata["uid"]
        )

    @property
    def label_key(self) -> str:
        """``mlops.dev/trainingjob`` etc.: the label naming the owner on every child."""
        return owner_label_key(self.kind)

    @property
    def label_value(self) -> str:
        return child_name(self.name)

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def owner_label_key(kind: str) -> str:
    """The label naming an owner of ``kind`` on every child (``mlops.dev/trainingjob`` ...)."""
    return f"{LABEL_PREFIX}{kind.lower()}"


def child_name(owner_name: str, suffix: str = "", limit: int = MAX_DNS_LABEL) -> str:
    """A deterministic child name within ``limit`` characters: ``<owner>[-<suffix>]``, with the owner's
    name shortened and made unique by a hash when it is too long."""
    tail = f"-{suffix}" if suffix else ""
    name = f"{owner_name}{tail}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(owner_name.encode()).hexdigest()[:8]
    keep = limit - len(tail) - len(digest) - 1
    return f"{owner_name[:keep].rstrip('-.')}-{digest}{tail}"


def label_child_name(owner_name: str, suffix: str = "", limit: int = MAX_DNS_LABEL) -> str:
    """:func:`child_name` that is also a DNS-1035 label (what Services, pod hostnames and the kinds whose
    names must be labels need) for any owner name, a DNS-1123 subdomain such as ``drift.v2`` or ``9lives``:
    a name that is not one already gets its dots turned into ``-``, an ``x`` in front of a leading digit,
    and the hash of the original name, so two owners never share a child."""
    name = child_name(owner_name, suffix, limit)
    if is_dns1035_label(name):
        return name
    tail = f"-{suffix}" if suffix else ""
    digest = hashlib.sha256(owner_name.encode()).hexdigest()[:8]
    base = re.sub(r"[^a-z0-9-]+", "-", owner_name.lower())
    if not base[:1].isalpha():
        base = f"x{base}"
    keep = limit - len(tail) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{tail}"


def labels(owner: Owner, component: str) -> dict[str, str]:
    """Labels of every child: who manages it, which custom resource it belongs to, what it is.
    The owner label's value is the owner's name (shortened with a hash past 63 characters: label values
    are limited); the exact name is in the ``mlops.dev/owner-name`` annotation of pods."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "mlops-operator",
        LABEL_COMPONENT: component,
        owner.label_key: owner.label_value,
    }


def child_metadata(
    owner: Owner, name: str, component: str, extra_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**labels(owner, component), **(extra_labels or {})},
        "ownerReferences": [owner.owner_reference()],
    }


def restricted_pod_security_context() -> dict[str, Any]:
    """Pod-level settings the Pod Security ``restricted`` profile requires."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security_context() -> dict[str, Any]:
    """Container-level settings the Pod Security ``restricted`` profile requires (plus a read-only root)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def mlflow_env(
    connection: MlflowConnection | None, default_tracking_uri: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, envFrom) of a container that talks to MLflow: the tracking URI (the spec's, else the
    operator's) and the credentials Secret, key by key when keys are listed, else whole."""
    tracking_uri = (connection.tracking_uri if connection else None) or default_tracking_uri
    env: list[dict[str, Any]] = []
    env_from: list[dict[str, Any]] = []
    if tracking_uri:
        env.append({"name": pc.ENV_MLFLOW_TRACKING_URI, "value": tracking_uri})
    secret = connection.secret_ref if connection else None
    if secret and secret.keys:
        env.extend(
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}}
            for key in secret.keys
        )
    elif secret:
        env_from.append({"secretRef": {"name": secret.name}})
    return env, env_from
