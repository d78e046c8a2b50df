"""The ModelDeployment controller against the real control plane and a real MLflow registry: alias resolution,
children and their owners, HPA, rollouts when the alias moves, rollback, canary, pruning, registry failures.

Model versions are registered with placeholder sources: the controller only resolves versions (kwok runs no
server); real serving is covered by the e2e tier.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.kube import Kube, wait_until

GROUP, VERSION, PLURAL = "mlops.dev", "v1alpha1", "modeldeployments"
pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def registered_model(mlflow_server: str) -> Iterator[tuple[Any, str]]:
    """A registered model with versions 1, 2 and 3 and alias champion -> 1."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    name = f"md-model-{secrets.token_hex(3)}"
    client.create_registered_model(name)
    for index in range(3):
        client.create_model_version(name, source=f"s3://placeholder-bucket/{name}/{index + 1}")
    client.set_registered_model_alias(name, "champion", "1")
    yield client, name
    client.delete_registered_model(name)


def modeldeployment(name: str, model_name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"name": model_name, "alias": "champion"}}
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def create(kube: Kube, namespace: str, manifest: dict[str, Any]) -> None:
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)


def status_of(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    obj = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return dict(obj.get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def served_version(kube: Kube, namespace: str, deployment: str) -> str | None:
    try:
        obj = kube.apps.read_namespaced_deployment(deployment, namespace)
    except Exception:
        return None
    env = {e.name: e.value for e in obj.spec.template.spec.containers[0].env}
    return env.get("MLOPS_MODEL_VERSION")


def wait_status(
    kube: Kube, namespace: str, name: str, predicate: Any, what: str, timeout: float = 60
) -> dict[str, Any]:
    return wait_until(
        lambda: (s := status_of(kube, namespace, name)) and predicate(s) and s,
        timeout=timeout,
        message=lambda: f"{what}; status now {json.dumps(status_of(kube, namespace, name))}",
    )


def ready(status: dict[str, Any]) -> bool:
    return condition(status, "Ready").get("status") == "True"


def test_alias_is_resolved_and_children_are_created_owned_and_ready(
    kube: Kube, namespace: str, registered_model: tuple[Any, str]
) -> None:
    _, model = registered_model
    create(kube, namespace, modeldeployment("iris", model, replicas={"min": 2, "max": 4}))
    status = wait_status(
        kube, namespace, "iris", lambda s: ready(s) and s.get("readyReplicas") == 2, "Ready with 2 replicas"
    )
    assert status["resolvedVersion"] == 1
    assert status["modelUri"] == f"models:/{model}/1"
    assert status["url"] == f"http://iris.{namespace}.svc:8080"
    assert condition(status, "ModelResolved")["reason"] == "Resolved"
    assert condition(status, "Available")["status"] == "True"
    assert status["rollout"]["revision"] == 1

    deployment = kube.apps.read_namespaced_deployment("iris", namespace)
    assert deployment.metadata.owner_references[0].kind == "ModelDeployment"
    container = deployment.spec.template.spec.containers[0]
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert deployment.spec.template.spec.security_context.run_as_non_root is True
    hpa = kube.kubectl("get", "hpa", "iris", "-n", namespace, "-o", "json")
    hpa_spec = json.loads(hpa.stdout)["spec"]
    assert (hpa_spec["minReplicas"], hpa_spec["maxReplicas"]) == (2, 4)
    services = {s.metadata.name for s in kube.core.list_namespaced_service(namespace).items}
    assert services == {"iris", "iris-primary"}
    row = kube.kubectl("get", "md", "iris", "-n", namespace).stdout.splitlines()[1].split()
    assert row[:5] == ["iris", model, "1", "True", "2"]


def test_moving_the_alias_rolls_out_the_new_version_and_rollback_returns(
    kube: Kube, namespace: str, registered_model: tuple[Any, str]
) -> None:
    client, model = registered_model
    create(kube, namespace, modeldeployment("follow", model))
    wait_status(kube, namespace, "follow", ready, "Ready")

    client.set_registered_model_alias(model, "champion", "2")
    status = wait_status(
        kube, namespace, "follow", lambda s: s.get("resolvedVersion") == 2 and ready(s), "version 2 served"
    )
    assert served_version(kube, namespace, "follow") == "2"
    history = [(r["revision"], r["version"], r["reason"]) for r in status["rollout"]["history"]]
    assert history == [(2, 2, "AliasMoved"), (1, 1, "Initial")]
    wait_until(
        lambda: all(
            p.metadata.labels.get("mlops.dev/model-version") == "2"
            for p in kube.core.list_namespaced_pod(
                namespace, label_selector="mlops.dev/modeldeployment=follow"
            ).items
        ),
        message="every pod on version 2",
    )

    kube.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "follow",
        {"metadata": {"annotations": {"mlops.dev/rollback-to-version": "1"}}},
    )
    status = wait_status(
        kube, namespace, "follow", lambda s: s.get("resolvedVersion") == 1, "rolled back to 1"
    )
    assert status["rollout"]["history"][0]["reason"] == "Rollback"
    assert served_version(kube, namespace, "follow") == "1"

    kube.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "follow",
        {"metadata": {"annotations": {"mlops.dev/rollback-to-version": None}}},
    )
    wait_status(kube, namespace, "follow", lambda s: s.get("resolvedVersion") == 2, "back on the alias")
    reasons = [e.reason for e in kube.events_for(namespace, "follow")]
    assert {"AliasMoved", "Rollback"} <= set(reasons)


def test_canary_challenger_splits_replicas_and_removing_it_prunes(
    kube: Kube, namespace: str, registered_model: tuple[Any, str]
) -> None:
    client, model = registered_model
    client.set_registered_model_alias(model, "challenger", "3")
    create(
        kube,
        namespace,
        modeldeployment(
            "canary", model, replicas={"min": 4}, challenger={"alias": "challenger", "trafficPercent": 25}
        ),
    )
    status = wait_status(
        kube, namespace, "canary", lambda s: ready(s) and s.get("readyReplicas") == 4, "4 ready"
    )
    assert (status["resolvedVersion"], status["challengerVersion"]) == (1, 3)
    assert kube.apps.read_namespaced_deployment("canary", namespace).spec.replicas == 3
    assert kube.apps.read_namespaced_deployment("canary-challenger", namespace).spec.replicas == 1
    assert served_version(kube, namespace, "canary-challenger") == "3"

    def serving_endpoints() -> int:
        out = kube.kubectl(
            "get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=canary", "-o", "json"
        )
        return sum(len(s.get("endpoints") or []) for s in json.loads(out.stdout)["items"])

    wait_until(
        lambda: serving_endpoints() == 4,
        message=lambda: f"4 endpoints behind the main Service, got {serving_endpoints()}",
    )

    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "canary", {"spec": {"challenger": None}}
    )

    def challenger_children() -> list[str]:
        deployments = [d.metadata.name for d in kube.apps.list_namespaced_deployment(namespace).items]
        services = [s.metadata.name for s in kube.core.list_namespaced_service(namespace).items]
        return [n for n in deployments + services if n.endswith("-challenger")]

    wait_until(
        lambda: not challenger_children(), message=lambda: f"challenger pruned, left {challenger_children()}"
    )
    status = wait_status(
        kube, namespace, "canary", lambda s: "challengerVersion" not in s, "challenger gone from status"
    )
    assert kube.apps.read_namespaced_deployment("canary", namespace).spec.replicas == 4


def test_missing_alias_is_reported_and_picked_up_once_it_exists(
    kube: Kube, namespace: str, registered_model: tuple[Any, str]
) -> None:
    client, model = registered_model
    create(kube, namespace, modeldeployment("waiting", model, model={"name": model, "alias": "production"}))
    status = wait_status(
        kube,
        namespace,
        "waiting",
        lambda s: condition(s, "ModelResolved").get("status") == "False",
        "unresolved",
    )
    assert condition(status, "ModelResolved")["reason"] == "AliasNotFound"
    assert "production" in condition(status, "ModelResolved")["message"]
    assert condition(status, "Ready")["reason"] == "AliasNotFound"
    assert kube.apps.list_namespaced_deployment(namespace).items == []

    client.set_registered_model_alias(model, "production", "2")
    status = wait_status(kube, namespace, "waiting", lambda s: ready(s), "Ready after the alias appears")
    assert status["resolvedVersion"] == 2


def test_unreachable_registry_is_a_condition_not_a_crash(kube: Kube, namespace: str) -> None:
    manifest = modeldeployment("offline", "any-model", mlflow={"trackingUri": "http://127.0.0.1:9"})
    create(kube, namespace, manifest)
    status = wait_status(
        kube,
        namespace,
        "offline",
        lambda s: condition(s, "ModelResolved").get("status") == "False",
        "unresolved",
    )
    assert condition(status, "ModelResolved")["reason"] == "RegistryUnavailable"
    assert "127.0.0.1:9" in condition(status, "ModelResolved")["message"]


def test_deleting_the_modeldeployment_cleans_up(
    kube: Kube, namespace: str, registered_model: tuple[Any, str]
) -> None:
    _, model = registered_model
    create(kube, namespace, modeldeployment("temp", model, replicas={"min": 1, "max": 2}))
    wait_status(kube, namespace, "temp", ready, "Ready")
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "temp")

    def left() -> list[str]:
        deployments = [d.metadata.name for d in kube.apps.list_namespaced_deployment(namespace).items]
        services = [s.metadata.name for s in kube.core.list_namespaced_service(namespace).items]
        hpas = json.loads(kube.kubectl("get", "hpa", "-n", namespace, "-o", "json").stdout)["items"]
        return deployments + services + [h["metadata"]["name"] for h in hpas]

    wait_until(lambda: not left(), timeout=60, message=lambda: f"children collected, left {left()}")
