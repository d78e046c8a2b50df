"""ModelDeployment builders and status derivation, by exact equality."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mlops_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from mlops_operator.controllers.modeldeployment.status import Resolution, observe, rollout_complete
from mlops_operator.machinery.transitions import Transition
from mlops_operator.resources.common import Owner, PodDefaults
from mlops_operator.resources.modeldeployment import (
    ResolvedVersions,
    autoscaler,
    deployment,
    desired_children,
    replica_split,
    service,
)

OWNER = Owner(kind="ModelDeployment", name="iris", namespace="prod", uid="md-uid")
DEFAULTS = PodDefaults(runtime_image="runtime:1.0", mlflow_tracking_uri="http://mlflow:5000")
BASE_LABELS = {
    "app.kubernetes.io/managed-by": "mlops-operator",
    "app.kubernetes.io/part-of": "mlops-operator",
    "app.kubernetes.io/component": "model-server",
    "mlops.dev/modeldeployment": "iris",
}
OWNER_REFERENCES = [
    {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": "iris",
        "uid": "md-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
]
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def make_spec(**overrides: Any) -> ModelDeploymentSpec:
    body: dict[str, Any] = {"model": {"name": "iris", "alias": "champion"}}
    body.update(overrides)
    return ModelDeploymentSpec.model_validate(body)


def test_primary_deployment_pins_the_version_with_probes_and_restricted_security() -> None:
    spec = make_spec(
        replicas={"min": 2}, resources={"cpu": "500m", "memory": "1Gi"}, logging={"sampleRate": 0.1}
    )
    manifest = deployment(OWNER, spec, 7, "primary", 2, DEFAULTS)
    probe = {"periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}
    assert manifest == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "iris",
            "namespace": "prod",
            "labels": {**BASE_LABELS, "mlops.dev/role": "primary", "mlops.dev/model-version": "7"},
            "ownerReferences": OWNER_REFERENCES,
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"mlops.dev/modeldeployment": "iris", "mlops.dev/role": "primary"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {
                    "labels": {
                        **BASE_LABELS,
                        "mlops.dev/role": "primary",
                        "mlops.dev/serving": "true",
                        "mlops.dev/model-version": "7",
                    },
                    "annotations": {"mlops.dev/model-uri": "models:/iris/7"},
                },
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "server",
                            "image": "runtime:1.0",
                            "command": ["mlops-serve"],
                            "env": [
                                {"name": "MLOPS_MODEL_NAME", "value": "iris"},
                                {"name": "MLOPS_MODEL_VERSION", "value": "7"},
                                {"name": "MLOPS_MODEL_URI", "value": "models:/iris/7"},
                                {"name": "MLOPS_MODELDEPLOYMENT_NAME", "value": "iris"},
                                {"name": "MLOPS_SERVING_ROLE", "value": "primary"},
                                {"name": "MLOPS_SERVER_PORT", "value": "8080"},
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "PYTHONUNBUFFERED", "value": "1"},
                                {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},
                                {"name": "MLOPS_INFERENCE_LOG", "value": "/var/log/mlops/iris-primary.jsonl"},
                                {"name": "MLOPS_LOG_SAMPLE_RATE", "value": "0.1"},
                            ],
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"cpu": "500m", "memory": "1Gi"},
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", "port": "http"},
                                **probe,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/v2/health/live", "port": "http"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 2,
                                "failureThreshold": 6,
                            },
                            "startupProbe": {
                                "httpGet": {"path": "/v2/health/live", "port": "http"},
                                "periodSeconds": 5,
                                "timeoutSeconds": 2,
                                "failureThreshold": 60,
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "scratch", "mountPath": "/tmp"},
                                {"name": "inference-log", "mountPath": "/var/log/mlops"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "scratch", "emptyDir": {}},
                        {"name": "inference-log", "emptyDir": {}},
                    ],
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
    }


def test_services_select_what_serves_and_each_role() -> None:
    spec = make_spec(serviceType="LoadBalancer")
    assert service(OWNER, spec)["spec"] == {
        "selector": {"mlops.dev/modeldeployment": "iris", "mlops.dev/serving": "true"},
        "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}],
        "type": "LoadBalancer",
    }
    challenger = service(OWNER, spec, "challenger")
    assert challenger["metadata"]["name"] == "iris-challenger"
    assert challenger["spec"]["selector"] == {
        "mlops.dev/modeldeployment": "iris",
        "mlops.dev/role": "challenger",
    }
    assert challenger["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize(
    ("replicas", "percent", "expected"),
    [
        (1, 10, (1, 1)),
        (10, 10, (9, 1)),
        (4, 50, (2, 2)),
        (10, 0, (10, 0)),
        (3, 100, (0, 3)),
        (20, 25, (15, 5)),
    ],
)
def test_canary_replica_split_follows_the_traffic_percent(
    replicas: int, percent: int, expected: tuple[int, int]
) -> None:
    spec = make_spec(
        replicas={"min": replicas}, challenger={"alias": "challenger", "trafficPercent": percent}
    )
    assert replica_split(spec) == expected


def test_canary_children_and_the_autoscaled_primary_leaves_replicas_to_the_hpa() -> None:
    spec = make_spec(
        replicas={"min": 2, "max": 6},
        autoscaling={"targetRequestsPerSecond": 250},
        challenger={"alias": "challenger", "trafficPercent": 20},
    )
    children = desired_children(OWNER, spec, ResolvedVersions(primary=3, challenger=4), DEFAULTS)
    kinds = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert kinds == [
        ("Service", "iris"),
        ("Service", "iris-primary"),
        ("Deployment", "iris"),
        ("HorizontalPodAutoscaler", "iris"),
        ("Service", "iris-challenger"),
        ("Deployment", "iris-challenger"),
    ]
    primary, canary = children[2], children[5]
    assert "replicas" not in primary["spec"]
    assert canary["spec"]["replicas"] == 1
    assert canary["spec"]["template"]["metadata"]["labels"]["mlops.dev/serving"] == "true"
    assert canary["spec"]["template"]["metadata"]["annotations"] == {"mlops.dev/model-uri": "models:/iris/4"}
    assert autoscaler(OWNER, spec)["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"},
        "minReplicas": 2,
        "maxReplicas": 6,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "mlops_inference_requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "250"},
                },
            }
        ],
    }


def test_cpu_autoscaling_defaults_to_80_percent() -> None:
    spec = make_spec(replicas={"min": 1, "max": 3})
    assert autoscaler(OWNER, spec)["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
        }
    ]


def test_shadow_challenger_is_not_served_and_the_primary_mirrors_to_it() -> None:
    spec = make_spec(challenger={"version": 9, "mode": "shadow", "trafficPercent": 30})
    children = desired_children(OWNER, spec, ResolvedVersions(primary=8, challenger=9), DEFAULTS)
    primary = next(c for c in children if c["kind"] == "Deployment" and c["metadata"]["name"] == "iris")
    shadow = next(
        c for c in children if c["metadata"]["name"] == "iris-challenger" and c["kind"] == "Deployment"
    )
    assert shadow["spec"]["template"]["metadata"]["labels"]["mlops.dev/serving"] == "false"
    env = {e["name"]: e.get("value") for e in primary["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLOPS_SHADOW_URL"] == "http://iris-challenger:8080"
    assert env["MLOPS_SHADOW_PERCENT"] == "30"
    assert primary["spec"]["replicas"] == 1


def deployment_status(
    replicas: int, available: int, generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": available,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [{"type": "Available", "status": "True" if available else "False"}],
        },
    }


def test_status_when_serving_then_the_alias_moves() -> None:
    spec = make_spec()
    resolved = Resolution(3, "Resolved", "alias champion of iris points to version 3")
    first = observe(
        spec,
        1,
        ModelDeploymentStatus(),
        resolved,
        None,
        (3, None),
        {"primary": deployment_status(1, 1)},
        "http://iris.prod.svc:8080",
        "models:/iris/3",
        NOW,
    )
    status = first.status
    assert (status.resolved_version, status.model_uri, status.ready_replicas) == (3, "models:/iris/3", 1)
    assert {c.type: c.status for c in status.conditions} == {
        "Valid": "True",
        "ModelResolved": "True",
        "Available": "True",
        "Progressing": "False",
        "Ready": "True",
    }
    assert status.rollout is not None and status.rollout.revision == 1
    assert status.rollout.history[0].reason == "Initial"
    assert first.transitions == [Transition("Normal", "Initial", "revision 1: model version 3")]

    moved = Resolution(4, "Resolved", "alias champion of iris points to version 4")
    rolling = deployment_status(1, 0, generation=2, observed=2)
    second = observe(
        spec,
        1,
        status,
        moved,
        None,
        (4, None),
        {"primary": rolling},
        "http://iris.prod.svc:8080",
        "models:/iris/4",
        NOW,
    )
    assert second.status.rollout is not None
    assert [(r.revision, r.version, r.reason) for r in second.status.rollout.history] == [
        (2, 4, "AliasMoved"),
        (1, 3, "Initial"),
    ]
    conditions = {c.type: (c.status, c.reason) for c in second.status.conditions}
    assert conditions["Progressing"] == ("True", "RollingOut")
    assert Transition("Normal", "AliasMoved", "revision 2: model version 4") in second.transitions


def test_a_new_deployment_warns_only_when_its_rollout_stalls() -> None:
    """Replicas not available yet at the first look are the rollout the Initial event reports; a
    Deployment past its progress deadline is a Warning."""
    spec = make_spec()
    resolved = Resolution(3, "Resolved", "alias champion of iris points to version 3")

    def look(previous: ModelDeploymentStatus, deployment: dict[str, Any]) -> Any:
        return observe(
            spec, 1, previous, resolved, None, (3, None), {"primary": deployment}, "u", "models:/iris/3", NOW
        )

    starting = look(ModelDeploymentStatus(), deployment_status(1, 0))
    assert starting.transitions == [Transition("Normal", "Initial", "revision 1: model version 3")]
    stalled = deployment_status(1, 0)
    stalled["status"]["conditions"].append(
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "iris-5d9" has timed out progressing.',
        }
    )
    stuck = look(starting.status, stalled)
    assert stuck.transitions == [
        Transition("Warning", "ProgressDeadlineExceeded", 'ReplicaSet "iris-5d9" has timed out progressing.')
    ]
    serving = look(stuck.status, deployment_status(1, 1))
    assert [t.reason for t in serving.transitions] == ["MinimumReplicasAvailable"]


def test_registry_outage_keeps_serving_the_last_version_and_says_so() -> None:
    spec = make_spec()
    ok = observe(
        spec,
        1,
        ModelDeploymentStatus(),
        Resolution(3, "Resolved", "ok"),
        None,
        (3, None),
        {"primary": deployment_status(2, 2)},
        "u",
        "models:/iris/3",
        NOW,
    )
    down = Resolution(None, "RegistryUnavailable", "MLflow at http://mlflow:5000 is unreachable")
    result = observe(
        spec,
        1,
        ok.status,
        down,
        None,
        (3, None),
        {"primary": deployment_status(2, 2)},
        "u",
        "models:/iris/3",
        NOW,
    )
    conditions = {c.type: (c.status, c.reason) for c in result.status.conditions}
    assert conditions["ModelResolved"] == ("False", "RegistryUnavailable")
    assert conditions["Ready"] == ("True", "ServingLastKnownVersion")
    assert result.status.resolved_version == 3
    assert (
        Transition("Warning", "RegistryUnavailable", "MLflow at http://mlflow:5000 is unreachable")
        in result.transitions
    )


def test_unresolvable_alias_without_anything_served() -> None:
    missing = Resolution(None, "AliasNotFound", "registered model iris has no alias champion")
    result = observe(make_spec(), 1, ModelDeploymentStatus(), missing, None, (None, None), {}, "u", None, NOW)
    conditions = {c.type: (c.status, c.reason) for c in result.status.conditions}
    assert conditions["Ready"] == ("False", "AliasNotFound")
    assert conditions["Available"] == ("False", "NoDeployment")
    assert result.status.url is None and result.status.rollout is None


def test_rollout_complete_needs_every_replica_updated_and_available() -> None:
    assert rollout_complete(deployment_status(2, 2))
    assert not rollout_complete(deployment_status(2, 1))
    assert not rollout_complete(deployment_status(2, 2, generation=3, observed=2))
    assert not rollout_complete(None)
