"""What the operator needs to know about its kubeconfig before anything imports kopf: whether logging in
needs a credential plugin (``exec``, or an ``auth-provider`` without a stored token), which only the
official kubernetes client can run. Reads the files named by ``KUBECONFIG`` (or ``~/.kube/config``) with
PyYAML; talks to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

#: Where a pod's service-account token is mounted: present means "in a cluster", no kubeconfig needed.
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _paths() -> list[Path]:
    listed = os.environ.get("KUBECONFIG")
    if listed:
        return [Path(path).expanduser() for path in listed.split(os.pathsep) if path.strip()]
    default = Path("~/.kube/config").expanduser()
    return [default] if default.exists() else []


def _named(items: Any, key: str) -> dict[str, Mapping[str, Any]]:
    if not isinstance(items, list):
        return {}
    return {
        str(item["name"]): item.get(key) or {}
        for item in items
        if isinstance(item, Mapping) and "name" in item
    }


def current_user() -> Mapping[str, Any]:
    """The ``user`` entry of the current context (merged over the kubeconfig files, the first one of a
    name winning, as kubectl does); empty when there is none or a file cannot be read."""
    current: str | None = None
    contexts: dict[str, Mapping[str, Any]] = {}
    users: dict[str, Mapping[str, Any]] = {}
    for path in _paths():
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return {}
        if not isinstance(document, Mapping):
            continue
        current = current or document.get("current-context")
        contexts = {**_named(document.get("contexts"), "context"), **contexts}
        users = {**_named(document.get("users"), "user"), **users}
    context = contexts.get(current or "") or {}
    return users.get(str(context.get("user", ""))) or {}


def needs_credential_plugin() -> bool:
    """Whether logging in runs a credential plugin: never in a pod (its service-account token is used);
    out of a cluster, when the current user has ``exec`` or an ``auth-provider`` with no access token."""
    if SERVICE_ACCOUNT_TOKEN.exists():
        return False
    user = current_user()
    provider = user.get("auth-provider")
    provider_token = isinstance(provider, Mapping) and (provider.get("config") or {}).get("access-token")
    return "exec" in user or (provider is not None and not provider_token)
