"""Exact canary weights through a Gateway API HTTPRoute and scale-to-zero through a KEDA ScaledObject,
against the real control plane with the upstream CRDs (vendored in tests/fixtures/thirdparty-crds).

The CRDs are cluster-wide and the session cluster is shared: both features are opt-in by spec, so other
tests' ModelDeployments never get these children. The tests run an operator of their own in an
``isolated-`` namespace with a one-second discovery TTL, and start by removing the CRDs, so the "absent"
case is real and installing them later is seen without a restart.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_modeldeployment_controller import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    create,
    modeldeployment,
    ready,
    status_of,
    wait_status,
)
from tests.support.kube import Kube, wait_until
from tests.support.operator import OperatorProcess

CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "thirdparty-crds"
CRD_NAMES = ("httproutes.gateway.networking.k8s.io", "scaledobjects.keda.sh")
GATEWAY = {
    "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "http"}],
    "hostnames": ["iris.models.example.com"],
}
KEDA = {"prometheusAddress": "http://prometheus.monitoring.svc:9090"}


def install_crds(kube: Kube) -> None:
    kube.kubectl("apply", "--server-side", "--field-manager=mlops-tests", "-f", str(CRDS))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))


def remove_crds(kube: Kube) -> None:
    kube.kubectl("delete", "crd", *CRD_NAMES, "--ignore-not-found", "--wait=true", "--timeout=60s")


@pytest.fixture
def registered_model(mlflow_server: str) -> Iterator[str]:
    """champion -> 1, challenger -> 2."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    name = f"gw-model-{secrets.token_hex(3)}"
    client.create_registered_model(name)
    for index in range(2):
        client.create_model_version(name, source=f"s3://placeholder-bucket/{name}/{index + 1}")
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    yield name
    client.delete_registered_model(name)


@pytest.fixture
def own_operator(cluster: Any, isolated_namespace: str, mlflow_server: str, tmp_path: Path) -> Iterator[str]:
    """An operator watching only ``isolated_namespace``, re-discovering optional APIs every second."""
    env = {"MLOPS_MLFLOW_TRACKING_URI": mlflow_server, "MLOPS_DISCOVERY_TTL_SECONDS": "1"}
    process = OperatorProcess(cluster, [isolated_namespace], tmp_path / "operator.log", env).start()
    yield isolated_namespace
    process.stop()


def custom(
    kube: Kube, namespace: str, group: str, version: str, plural: str, name: str
) -> dict[str, Any] | None:
    try:
        return dict(kube.custom.get_namespaced_custom_object(group, version, namespace, plural, name))
    except Exception as error:
        if getattr(error, "status", None) == 404:
            return None
        raise


def httproute(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return custom(kube, namespace, "gateway.networking.k8s.io", "v1", "httproutes", name)


def scaledobject(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return custom(kube, namespace, "keda.sh", "v1alpha1", "scaledobjects", name)


def hpa(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    result = kube.kubectl("get", "hpa", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def weights(route: dict[str, Any] | None) -> dict[str, int]:
    if route is None:
        return {}
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}


def patch(kube: Kube, namespace: str, name: str, spec: dict[str, Any]) -> None:
    kube.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})


def test_absent_crds_are_conditions_with_fallbacks_and_installing_them_is_picked_up(
    kube: Kube, own_operator: str, registered_model: str
) -> None:
    namespace = own_operator
    remove_crds(kube)
    create(
        kube,
        namespace,
        modeldeployment(
            "opted-in",
            registered_model,
            replicas={"min": 0, "max": 3},
            autoscaling={"scaleToZero": True, "keda": KEDA},
            challenger={"alias": "challenger", "trafficPercent": 10},
            gateway=GATEWAY,
        ),
    )
    status = wait_status(
        kube,
        namespace,
        "opted-in",
        lambda s: ready(s) and condition(s, "TrafficRouted") and condition(s, "ScaleToZero"),
        "Ready with TrafficRouted and ScaleToZero conditions",
    )
    routed, scaling = condition(status, "TrafficRouted"), condition(status, "ScaleToZero")
    assert (routed["status"], routed["reason"]) == ("False", "GatewayAPIUnavailable"), routed
    assert (scaling["status"], scaling["reason"]) == ("False", "KEDAUnavailable"), scaling
    assert status["traffic"] == {"method": "ReplicaRatio", "primaryPercent": 50, "challengerPercent": 50}
    assert status["url"] == f"http://opted-in.{namespace}.svc:8080"
    fallback = hpa(kube, namespace, "opted-in")
    assert fallback is not None and fallback["spec"]["minReplicas"] == 1
    events = {e.reason for e in kube.events_for(namespace, "opted-in")}
    assert {"GatewayAPIUnavailable", "KEDAUnavailable"} <= events, events

    started = time.monotonic()
    install_crds(kube)
    status = wait_status(
        kube,
        namespace,
        "opted-in",
        lambda s: (
            condition(s, "TrafficRouted").get("status") == "True"
            and condition(s, "ScaleToZero").get("status") == "True"
        ),
        "routed and scaled by KEDA after the CRDs were installed",
        timeout=30,
    )
    print(f"CRDs picked up {time.monotonic() - started:.1f}s after installing them")
    assert status["traffic"] == {
        "method": "HTTPRoute",
        "route": "opted-in",
        "primaryPercent": 90,
        "challengerPercent": 10,
    }
    assert status["url"] == "http://iris.models.example.com"
    assert weights(httproute(kube, namespace, "opted-in")) == {
        "opted-in-primary": 90,
        "opted-in-challenger": 10,
    }
    assert scaledobject(kube, namespace, "opted-in") is not None
    wait_until(lambda: hpa(kube, namespace, "opted-in") is None, message="our HPA removed once KEDA scales")


def test_route_weights_follow_the_traffic_percent_and_the_route_goes_with_the_gateway(
    kube: Kube, own_operator: str, registered_model: str
) -> None:
    namespace = own_operator
    install_crds(kube)
    create(
        kube,
        namespace,
        modeldeployment(
            "canary",
            registered_model,
            challenger={"alias": "challenger", "trafficPercent": 10},
            gateway=GATEWAY,
        ),
    )
    wait_until(
        lambda: (
            weights(httproute(kube, namespace, "canary")) == {"canary-primary": 90, "canary-challenger": 10}
        ),
        message=lambda: f"route 90/10; status {status_of(kube, namespace, 'canary')}",
    )
    route = httproute(kube, namespace, "canary")
    assert route is not None
    assert route["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert route["metadata"]["managedFields"][0]["manager"] == "mlops-operator"
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "gateways",
            "sectionName": "http",
        }
    ]
    assert route["spec"]["hostnames"] == ["iris.models.example.com"]
    # one replica each: by replica ratio that would be 50/50, the route keeps it 90/10
    assert kube.apps.read_namespaced_deployment("canary", namespace).spec.replicas == 1
    assert kube.apps.read_namespaced_deployment("canary-challenger", namespace).spec.replicas == 1
    status = wait_status(kube, namespace, "canary", ready, "Ready")
    assert condition(status, "TrafficRouted")["reason"] == "RouteApplied"

    patch(kube, namespace, "canary", {"challenger": {"trafficPercent": 30}})
    wait_until(
        lambda: (
            weights(httproute(kube, namespace, "canary")) == {"canary-primary": 70, "canary-challenger": 30}
        ),
        message=lambda: f"route 70/30, got {weights(httproute(kube, namespace, 'canary'))}",
    )
    wait_status(
        kube,
        namespace,
        "canary",
        lambda s: (s.get("traffic") or {}).get("challengerPercent") == 30,
        "status 70/30",
    )

    patch(kube, namespace, "canary", {"challenger": None})
    wait_until(
        lambda: weights(httproute(kube, namespace, "canary")) == {"canary-primary": 100},
        message=lambda: f"route 100 to the primary, got {weights(httproute(kube, namespace, 'canary'))}",
    )

    patch(kube, namespace, "canary", {"gateway": None})
    wait_until(lambda: httproute(kube, namespace, "canary") is None, message="route pruned with the gateway")
    status = wait_status(
        kube, namespace, "canary", lambda s: not condition(s, "TrafficRouted"), "TrafficRouted condition gone"
    )
    assert status["url"] == f"http://canary.{namespace}.svc:8080"
    assert "traffic" not in status


def test_scale_to_zero_replaces_the_hpa_with_a_scaledobject_and_back(
    kube: Kube, own_operator: str, registered_model: str
) -> None:
    namespace = own_operator
    install_crds(kube)
    create(
        kube,
        namespace,
        modeldeployment(
            "elastic",
            registered_model,
            replicas={"min": 0, "max": 4},
            autoscaling={"scaleToZero": True, "idleSeconds": 60, "keda": KEDA},
        ),
    )
    wait_until(lambda: scaledobject(kube, namespace, "elastic") is not None, message="ScaledObject created")
    scaled = scaledobject(kube, namespace, "elastic")
    assert scaled is not None
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "elastic",
    }
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 4)
    assert scaled["spec"]["cooldownPeriod"] == 60
    assert scaled["spec"]["triggers"][0]["metadata"]["serverAddress"] == KEDA["prometheusAddress"]
    assert f'namespace="{namespace}"' in scaled["spec"]["triggers"][0]["metadata"]["query"]
    assert hpa(kube, namespace, "elastic") is None
    status = wait_status(kube, namespace, "elastic", lambda s: condition(s, "ScaleToZero"), "ScaleToZero")
    assert condition(status, "ScaleToZero")["reason"] == "ScaledObjectApplied"

    patch(
        kube,
        namespace,
        "elastic",
        {"replicas": {"min": 1, "max": 4}, "autoscaling": {"scaleToZero": False, "keda": None}},
    )
    wait_until(lambda: hpa(kube, namespace, "elastic") is not None, message="HPA restored")
    wait_until(lambda: scaledobject(kube, namespace, "elastic") is None, message="ScaledObject pruned")
    restored = hpa(kube, namespace, "elastic")
    assert restored is not None
    assert (restored["spec"]["minReplicas"], restored["spec"]["maxReplicas"]) == (1, 4)
    wait_status(kube, namespace, "elastic", lambda s: not condition(s, "ScaleToZero"), "ScaleToZero gone")
