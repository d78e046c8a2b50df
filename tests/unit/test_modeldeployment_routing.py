"""Gateway API routing, KEDA scale-to-zero and micro-batching settings of a ModelDeployment: the builders by
exact equality, the choice between them and their fallbacks, the status they produce, and the discovery
cache that decides whether the optional APIs are there."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from mlops_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from mlops_operator.controllers.modeldeployment.status import Resolution, observe
from mlops_operator.kube.discovery import Discovery
from mlops_operator.resources.common import Owner, PodDefaults
from mlops_operator.resources.modeldeployment import (
    ClusterApis,
    ResolvedVersions,
    desired_children,
    effective_traffic,
    replica_split,
    route,
    url,
)
from mlops_operator.resources.scaledobject import default_query, pod_regex, scaled_object

OWNER = Owner(kind="ModelDeployment", name="iris", namespace="prod", uid="md-uid")
DEFAULTS = PodDefaults(runtime_image="runtime:1.0", mlflow_tracking_uri="http://mlflow:5000")
METADATA = {
    "name": "iris",
    "namespace": "prod",
    "labels": {
        "app.kubernetes.io/managed-by": "mlops-operator",
        "app.kubernetes.io/part-of": "mlops-operator",
        "app.kubernetes.io/component": "model-server",
        "mlops.dev/modeldeployment": "iris",
    },
    "ownerReferences": [
        {
            "apiVersion": "mlops.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": "iris",
            "uid": "md-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ],
}
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
GATEWAY = {
    "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
    "hostnames": ["iris.models.example.com"],
    "scheme": "https",
}
CANARY = {"alias": "challenger", "trafficPercent": 10}
KEDA = {"prometheusAddress": "http://prometheus.monitoring:9090"}
BOTH = ClusterApis(gateway_api=True, keda=True)
NEITHER = ClusterApis()


def make_spec(**overrides: Any) -> ModelDeploymentSpec:
    body: dict[str, Any] = {"model": {"name": "iris", "alias": "champion"}}
    body.update(overrides)
    return ModelDeploymentSpec.model_validate(body)


def kinds(children: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in children]


# --- HTTPRoute ------------------------------------------------------------------------------------


def test_route_weights_primary_and_canary_services_exactly() -> None:
    spec = make_spec(gateway=GATEWAY, challenger=CANARY)
    assert route(OWNER, spec, ResolvedVersions(1, 3)) == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": METADATA,
        "spec": {
            "parentRefs": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "public",
                    "namespace": "gateways",
                    "sectionName": "https",
                }
            ],
            "hostnames": ["iris.models.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"group": "", "kind": "Service", "name": "iris-primary", "port": 8080, "weight": 90},
                        {
                            "group": "",
                            "kind": "Service",
                            "name": "iris-challenger",
                            "port": 8080,
                            "weight": 10,
                        },
                    ],
                }
            ],
        },
    }


def test_route_without_canary_sends_everything_to_the_primary() -> None:
    for spec, versions in (
        (make_spec(gateway={"parentRefs": [{"name": "gw", "port": 80}]}), ResolvedVersions(1)),
        # a shadow challenger is mirrored by the primary, not routed
        (
            make_spec(
                gateway={"parentRefs": [{"name": "gw", "port": 80}]}, challenger={**CANARY, "mode": "shadow"}
            ),
            ResolvedVersions(1, 3),
        ),
        # the challenger is not resolved yet: nothing to route to
        (
            make_spec(gateway={"parentRefs": [{"name": "gw", "port": 80}]}, challenger=CANARY),
            ResolvedVersions(1),
        ),
    ):
        assert route(OWNER, spec, versions)["spec"] == {
            "parentRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "port": 80}
            ],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"group": "", "kind": "Service", "name": "iris-primary", "port": 8080, "weight": 100}
                    ],
                }
            ],
        }


def test_route_only_when_asked_and_gateway_api_is_served() -> None:
    versions = ResolvedVersions(1, 3)
    with_gateway = make_spec(gateway=GATEWAY, challenger=CANARY, replicas={"min": 1})
    assert kinds(desired_children(OWNER, with_gateway, versions, DEFAULTS, BOTH)) == [
        ("Service", "iris"),
        ("Service", "iris-primary"),
        ("Deployment", "iris"),
        ("Service", "iris-challenger"),
        ("Deployment", "iris-challenger"),
        ("HTTPRoute", "iris"),
    ]
    # Gateway API absent: the same spec falls back to the replica ratio, no route
    fallback = kinds(desired_children(OWNER, with_gateway, versions, DEFAULTS, NEITHER))
    assert ("HTTPRoute", "iris") not in fallback and len(fallback) == 5
    # served but not asked for: nothing changes for specs without a gateway
    plain = make_spec(challenger=CANARY)
    assert desired_children(OWNER, plain, versions, DEFAULTS, BOTH) == desired_children(
        OWNER, plain, versions, DEFAULTS, NEITHER
    )


@pytest.mark.parametrize(
    ("minimum", "percent", "ratio", "weighted"),
    [
        (1, 10, (1, 1), (1, 1)),  # one replica each; the route makes it 90/10, not 50/50
        (4, 25, (3, 1), (3, 1)),
        (10, 10, (9, 1), (9, 1)),
        (2, 90, (1, 9), (1, 2)),  # the ratio needs a pool of 10 pods; weights need one canary more
        (3, 100, (0, 3), (0, 3)),
        (3, 0, (3, 0), (3, 0)),
    ],
)
def test_weighted_canary_sizes_pods_for_load_not_for_the_ratio(
    minimum: int, percent: int, ratio: tuple[int, int], weighted: tuple[int, int]
) -> None:
    spec = make_spec(replicas={"min": minimum}, challenger={**CANARY, "trafficPercent": percent})
    assert replica_split(spec) == ratio
    assert replica_split(spec, weighted=True) == weighted


def test_url_is_the_gateway_hostname_when_routed() -> None:
    spec = make_spec(gateway=GATEWAY)
    assert url(OWNER, spec, BOTH) == "https://iris.models.example.com"
    assert url(OWNER, spec, NEITHER) == "http://iris.prod.svc:8080"
    wildcard = make_spec(gateway={**GATEWAY, "hostnames": ["*.example.com", "iris.example.com"]})
    assert url(OWNER, wildcard, BOTH) == "https://iris.example.com"
    only_wildcard = make_spec(gateway={**GATEWAY, "hostnames": ["*.example.com"]})
    assert url(OWNER, only_wildcard, BOTH) == "http://iris.prod.svc:8080"


@pytest.mark.parametrize(
    ("gateway", "error"),
    [
        ({"parentRefs": []}, "parentRefs"),
        ({"parentRefs": [{"name": "gw"}], "hostnames": ["Iris.Example.com"]}, "hostnames.0"),
        ({"parentRefs": [{"name": "gw", "namespace": "Bad_NS"}]}, "namespace"),
        ({"parentRefs": [{"name": "gw", "port": 0}]}, "port"),
        ({"parentRefs": [{"name": "gw"}], "scheme": "grpc"}, "scheme"),
    ],
)
def test_invalid_gateway_is_refused(gateway: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        make_spec(gateway=gateway)


# --- KEDA ScaledObject ----------------------------------------------------------------------------


def test_scaled_object_scales_the_primary_from_zero_on_its_request_rate() -> None:
    spec = make_spec(
        replicas={"min": 0, "max": 5},
        autoscaling={"scaleToZero": True, "idleSeconds": 120, "targetRequestsPerSecond": 25.5, "keda": KEDA},
    )
    assert scaled_object(OWNER, "iris", "model-server", spec) == {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": METADATA,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"},
            "minReplicaCount": 0,
            "maxReplicaCount": 5,
            "cooldownPeriod": 120,
            "pollingInterval": 15,
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "requests-per-second",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": "http://prometheus.monitoring:9090",
                        "query": 'sum(rate(mlops_inference_requests_total{namespace="prod",'
                        'pod=~"iris-[a-z0-9]+-[a-z0-9]+",endpoint=~"/v2/models/.+/infer|/invocations"}[1m]))',
                        "threshold": "25.5",
                        "activationThreshold": "0",
                    },
                }
            ],
        },
    }


def test_scaled_object_with_a_custom_query_and_cpu_trigger() -> None:
    keda = {**KEDA, "query": "sum(rate(envoy_requests_total[1m]))", "activationRequestsPerSecond": 0.5}
    spec = make_spec(
        replicas={"min": 0, "max": 3},
        autoscaling={
            "scaleToZero": True,
            "targetCPUUtilization": 60,
            "keda": {**keda, "pollingIntervalSeconds": 5},
        },
    )
    body = scaled_object(OWNER, "iris", "model-server", spec)["spec"]
    assert body["pollingInterval"] == 5
    assert body["triggers"] == [
        {
            "type": "prometheus",
            "name": "requests-per-second",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": "http://prometheus.monitoring:9090",
                "query": "sum(rate(envoy_requests_total[1m]))",
                "threshold": "10",
                "activationThreshold": "0.5",
            },
        },
        {"type": "cpu", "name": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}},
    ]


def test_pod_regex_excludes_the_challenger_and_handles_long_names() -> None:
    assert pod_regex("iris") == "iris-[a-z0-9]+-[a-z0-9]+"
    assert pod_regex("iris.v2") == "iris\\\\.v2-[a-z0-9]+-[a-z0-9]+"
    long = "a" * 60
    assert pod_regex(long) == "a" * 58 + ".*"
    assert default_query("ns", "m").startswith('sum(rate(mlops_inference_requests_total{namespace="ns"')


def test_keda_replaces_the_hpa_only_when_served() -> None:
    spec = make_spec(replicas={"min": 0, "max": 4}, autoscaling={"scaleToZero": True, "keda": KEDA})
    with_keda = desired_children(OWNER, spec, ResolvedVersions(1), DEFAULTS, BOTH)
    assert kinds(with_keda) == [
        ("Service", "iris"),
        ("Service", "iris-primary"),
        ("Deployment", "iris"),
        ("ScaledObject", "iris"),
    ]
    assert "replicas" not in with_keda[2]["spec"]  # KEDA's HPA owns spec.replicas
    without = desired_children(OWNER, spec, ResolvedVersions(1), DEFAULTS, NEITHER)
    assert kinds(without)[3] == ("HorizontalPodAutoscaler", "iris")
    assert (without[3]["spec"]["minReplicas"], without[3]["spec"]["maxReplicas"]) == (1, 4)


def test_scale_to_zero_needs_keda_settings() -> None:
    with pytest.raises(ValidationError, match=r"autoscaling\.scaleToZero needs autoscaling\.keda"):
        make_spec(replicas={"min": 0}, autoscaling={"scaleToZero": True})
    with pytest.raises(ValidationError, match="prometheusAddress"):
        make_spec(
            replicas={"min": 0}, autoscaling={"scaleToZero": True, "keda": {"prometheusAddress": "p:9"}}
        )


# --- micro-batching --------------------------------------------------------------------------------


def test_batching_settings_reach_the_server_environment() -> None:
    spec = make_spec(server={"batching": {"maxBatchSize": 64, "maxLatencyMs": 3}})
    children = desired_children(OWNER, spec, ResolvedVersions(1), DEFAULTS)
    env = {e["name"]: e["value"] for e in children[2]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["MLOPS_MAX_BATCH_SIZE"], env["MLOPS_MAX_BATCH_DELAY_MS"]) == ("64", "3")
    unbatched = desired_children(OWNER, make_spec(), ResolvedVersions(1), DEFAULTS)
    env = {e["name"] for e in unbatched[2]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not env & {"MLOPS_MAX_BATCH_SIZE", "MLOPS_MAX_BATCH_DELAY_MS"}
    assert make_spec(server={"batching": {}}).server.batching.max_batch_size == 32  # type: ignore[union-attr]


# --- status ---------------------------------------------------------------------------------------


def available(replicas: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }


def observe_with(spec: ModelDeploymentSpec, apis: ClusterApis, **kwargs: Any) -> ModelDeploymentStatus:
    challenger = Resolution(3, "Resolved", "ok") if spec.challenger else None
    return observe(
        spec,
        1,
        ModelDeploymentStatus(),
        Resolution(1, "Resolved", "ok"),
        challenger,
        (1, 3 if spec.challenger else None),
        {"primary": available(), **({"challenger": available()} if spec.challenger else {})},
        url(OWNER, spec, apis),
        "models:/iris/1",
        NOW,
        apis=apis,
        **kwargs,
    ).status


def conditions(status: ModelDeploymentStatus) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in status.conditions}


def test_status_shows_the_route_its_weights_and_the_gateway_url() -> None:
    spec = make_spec(gateway=GATEWAY, challenger=CANARY)
    applied = route(OWNER, spec, ResolvedVersions(1, 3))
    status = observe_with(spec, BOTH, route=applied)
    assert status.to_dict()["traffic"] == {
        "method": "HTTPRoute",
        "route": "iris",
        "primaryPercent": 90,
        "challengerPercent": 10,
    }
    assert status.url == "https://iris.models.example.com"
    assert conditions(status)["TrafficRouted"] == (
        "True",
        "RouteApplied",
        "HTTPRoute iris is applied; no Gateway has reported on it yet",
    )
    accepted = {
        **applied,
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "public"},
                    "controllerName": "example.com/gateway",
                    "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
                }
            ]
        },
    }
    assert conditions(observe_with(spec, BOTH, route=accepted))["TrafficRouted"][:2] == (
        "True",
        "RouteAccepted",
    )
    refused = {
        **applied,
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "public"},
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "False",
                            "reason": "NotAllowedByListeners",
                            "message": "no",
                        }
                    ],
                }
            ]
        },
    }
    assert conditions(observe_with(spec, BOTH, route=refused))["TrafficRouted"] == (
        "False",
        "RouteNotAccepted",
        "Gateway public did not accept HTTPRoute iris: NotAllowedByListeners no",
    )


def test_status_without_gateway_api_falls_back_to_the_replica_ratio_and_says_so() -> None:
    spec = make_spec(gateway=GATEWAY, challenger=CANARY, replicas={"min": 4})
    status = observe_with(spec, NEITHER)
    state, reason, message = conditions(status)["TrafficRouted"]
    assert (state, reason) == ("False", "GatewayAPIUnavailable")
    assert "install the Gateway API CRDs" in message
    assert status.to_dict()["traffic"] == {
        "method": "ReplicaRatio",
        "primaryPercent": 75,
        "challengerPercent": 25,
    }
    assert status.url == "http://iris.prod.svc:8080"
    assert conditions(status)["Ready"][0] == "True"  # serving by replica ratio is still serving


def test_traffic_split_per_method() -> None:
    shadow = make_spec(challenger={**CANARY, "mode": "shadow", "trafficPercent": 30})
    assert effective_traffic(shadow, ResolvedVersions(1, 3), NEITHER) == ("Mirror", 100, 30)
    assert effective_traffic(make_spec(), ResolvedVersions(1), NEITHER) is None
    assert effective_traffic(make_spec(gateway=GATEWAY), ResolvedVersions(1), BOTH) == ("HTTPRoute", 100, 0)
    no_traffic = observe_with(make_spec(), NEITHER)
    assert no_traffic.traffic is None
    assert "TrafficRouted" not in conditions(no_traffic) and "ScaleToZero" not in conditions(no_traffic)


def test_scale_to_zero_condition() -> None:
    spec = make_spec(replicas={"min": 0, "max": 3}, autoscaling={"scaleToZero": True, "keda": KEDA})
    absent = conditions(observe_with(spec, NEITHER))["ScaleToZero"]
    assert absent[:2] == ("False", "KEDAUnavailable") and "at least one replica" in absent[2]
    applied = scaled_object(OWNER, "iris", "model-server", spec)
    assert conditions(observe_with(spec, BOTH, scaler=applied))["ScaleToZero"][:2] == (
        "True",
        "ScaledObjectApplied",
    )
    ready = {**applied, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert conditions(observe_with(spec, BOTH, scaler=ready))["ScaleToZero"] == (
        "True",
        "ScaledObjectReady",
        "KEDA scales iris between 0 and 3",
    )
    broken = {
        **applied,
        "status": {"conditions": [{"type": "Ready", "status": "False", "message": "bad query"}]},
    }
    assert conditions(observe_with(spec, BOTH, scaler=broken))["ScaleToZero"] == (
        "False",
        "ScaledObjectNotReady",
        "KEDA reports ScaledObject iris not ready: bad query",
    )


def test_conditions_go_away_with_the_opt_in() -> None:
    spec = make_spec(gateway=GATEWAY, replicas={"min": 0}, autoscaling={"scaleToZero": True, "keda": KEDA})
    before = observe_with(spec, NEITHER)
    assert {"TrafficRouted", "ScaleToZero"} <= set(conditions(before))
    after = observe(
        make_spec(),
        2,
        before,
        Resolution(1, "Resolved", "ok"),
        None,
        (1, None),
        {"primary": available()},
        "u",
        "models:/iris/1",
        NOW,
    ).status
    assert not {"TrafficRouted", "ScaleToZero"} & set(conditions(after))


# --- discovery ------------------------------------------------------------------------------------


def test_discovery_caches_for_the_ttl_then_sees_new_crds() -> None:
    calls: list[str] = []
    served: dict[str, frozenset[str] | None] = {"gateway.networking.k8s.io/v1": None}
    clock = [0.0]

    def fetch(group_version: str) -> frozenset[str] | None:
        calls.append(group_version)
        return served[group_version]

    discovery = Discovery(fetch=fetch, ttl=30.0, clock=lambda: clock[0])
    assert discovery.served("gateway.networking.k8s.io/v1", "HTTPRoute") is False
    served["gateway.networking.k8s.io/v1"] = frozenset({"HTTPRoute", "Gateway"})
    clock[0] = 29.0
    assert discovery.served("gateway.networking.k8s.io/v1", "HTTPRoute") is False  # cached
    assert len(calls) == 1
    clock[0] = 30.0
    assert discovery.served("gateway.networking.k8s.io/v1", "HTTPRoute") is True
    assert len(calls) == 2
    discovery.forget("gateway.networking.k8s.io/v1")
    served["gateway.networking.k8s.io/v1"] = frozenset()
    assert discovery.served("gateway.networking.k8s.io/v1", "HTTPRoute") is False
    assert len(calls) == 3


def test_discovery_errors_count_as_absent_and_are_not_cached() -> None:
    attempts = [0]

    def fetch(group_version: str) -> frozenset[str] | None:
        attempts[0] += 1
        if attempts[0] == 1:
            raise ConnectionError("apiserver restarting")
        return frozenset({"ScaledObject"})

    discovery = Discovery(fetch=fetch, ttl=60.0, clock=lambda: 0.0)
    assert discovery.served("keda.sh/v1alpha1", "ScaledObject") is False
    assert discovery.served("keda.sh/v1alpha1", "ScaledObject") is True
