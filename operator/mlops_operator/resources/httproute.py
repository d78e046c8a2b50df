"""A Gateway API ``HTTPRoute`` (``gateway.networking.k8s.io/v1``) in front of a ModelDeployment's Services:
exact traffic weights between the primary and the canary challenger, as Knative and KServe users know them
(a weighted ``backendRefs`` list), instead of a share of pods behind one Service.

Pure: the caller decides whether Gateway API is installed and which Services exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from mlops_operator.api.v1alpha1.modeldeployment import GatewayRouting
from mlops_operator.resources.common import Owner, child_metadata

API_VERSION: Final = "gateway.networking.k8s.io/v1"
KIND: Final = "HTTPRoute"


@dataclass(frozen=True)
class Backend:
    """A Service the route sends ``weight`` of 100 requests to."""

    service: str
    port: int
    weight: int


def parent_refs(gateway: GatewayRouting) -> list[dict[str, Any]]:
    refs = []
    for parent in gateway.parent_refs:
        ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": parent.name}
        if parent.namespace is not None:
            ref["namespace"] = parent.namespace
        if parent.section_name is not None:
            ref["sectionName"] = parent.section_name
        if parent.port is not None:
            ref["port"] = parent.port
        refs.append(ref)
    return refs


def httproute(
    owner: Owner, name: str, component: str, gateway: GatewayRouting, backends: Sequence[Backend]
) -> dict[str, Any]:
    """One rule matching every path (``PathPrefix /``) with weighted backendRefs to the Services."""
    spec: dict[str, Any] = {"parentRefs": parent_refs(gateway)}
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    spec["rules"] = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                {"group": "", "kind": "Service", "name": b.service, "port": b.port, "weight": b.weight}
                for b in backends
            ],
        }
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": child_metadata(owner, name, component),
        "spec": spec,
    }
