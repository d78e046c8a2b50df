"""What a ModelDeployment's status should say, from the versions resolved in MLflow and what its Deployments
report. Pure: the controller gathers the inputs and patches the result when it differs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mlops_operator.api.v1alpha1.common import READY, VALID, Condition, set_condition, utcnow
from mlops_operator.api.v1alpha1.modeldeployment import (
    MAX_ROLLOUT_HISTORY,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Rollout,
    RolloutRevision,
    TrafficSplit,
)
from mlops_operator.machinery.transitions import Transition, condition_changed
from mlops_operator.resources.modeldeployment import (
    ClusterApis,
    ResolvedVersions,
    effective_traffic,
    routes_by_gateway,
    scales_with_keda,
)

MODEL_RESOLVED: Final = "ModelResolved"
CHALLENGER_RESOLVED: Final = "ChallengerResolved"
AVAILABLE: Final = "Available"
PROGRESSING: Final = "Progressing"
#: With spec.gateway: whether an HTTPRoute carries the traffic.
TRAFFIC_ROUTED: Final = "TrafficRouted"
#: With autoscaling.scaleToZero: whether a KEDA ScaledObject scales the deployment.
SCALE_TO_ZERO: Final = "ScaleToZero"
#: Conditions whose changes become Events.
EVENT_CONDITIONS: Final = (MODEL_RESOLVED, CHALLENGER_RESOLVED, AVAILABLE, TRAFFIC_ROUTED, SCALE_TO_ZERO)


@dataclass(frozen=True)
class Resolution:
    """Outcome of resolving one model reference: a version, or why there is none (reason + message)."""

    version: int | None
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.version is not None and self.reason in ("Resolved", "Pinned", "Rollback")


@dataclass
class Observation:
    status: ModelDeploymentStatus
    transitions: list[Transition]


def _deployment_condition(deployment: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any]:
    for condition in (deployment or {}).get("status", {}).get("conditions") or ():
        if condition.get("type") == type_:
            return condition  # type: ignore[no-any-return]
    return {}


def rollout_complete(deployment: Mapping[str, Any] | None) -> bool:
    """Like ``kubectl rollout status``: the controller saw the latest spec and every replica is updated and
    available, with no old replica left."""
    if deployment is None:
        return False
    status = deployment.get("status", {})
    if status.get("observedGeneration", 0) < deployment.get("metadata", {}).get("generation", 0):
        return False
    desired = int(deployment.get("spec", {}).get("replicas", 1))
    counts = (status.get("updatedReplicas", 0), status.get("replicas", 0), status.get("availableReplicas", 0))
    return all(int(count) == desired for count in counts)


def observe(
    spec: ModelDeploymentSpec,
    generation: int | None,
    previous: ModelDeploymentStatus,
    primary: Resolution,
    challenger: Resolution | None,
    served: tuple[int | None, int | None],
    deployments: Mapping[str, Mapping[str, Any] | None],
    url: str,
    model_uri: str | None,
    now: dt.datetime | None = None,
    *,
    apis: ClusterApis | None = None,
    route: Mapping[str, Any] | None = None,
    scaler: Mapping[str, Any] | None = None,
) -> Observation:
    """``served``: the (primary, challenger) versions actually applied to the Deployments this time.
    ``deployments``: role -> Deployment as read back (None when absent). ``apis``: the optional APIs
    found served; ``route``/``scaler``: the HTTPRoute / ScaledObject as applied (None when not)."""
    apis = apis or ClusterApis()
    now = now or utcnow()
    conditions: list[Condition] = list(previous.conditions)
    transitions: list[Transition] = []

    def cond(type_: str, status: str, reason: str, message: str = "") -> None:
        nonlocal conditions
        old = next((c for c in conditions if c.type == type_), None)
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)  # type: ignore[arg-type]
        new = next(c for c in conditions if c.type == type_)
        # a new deployment's first look: resolved models are fine, and replicas that are not available yet
        # are the rollout the Initial event reports, not a warning (a rollout that stalls gets one:
        # ProgressDeadlineExceeded)
        first_and_expected = old is None and (status == "True" or type_ == AVAILABLE)
        if condition_changed(old, new) and type_ in EVENT_CONDITIONS and not first_and_expected:
            transitions.append(Transition.of(new, warning=status != "True"))

    cond(VALID, "True", "SpecValid", "spec passed validation")
    cond(MODEL_RESOLVED, "True" if primary.ok else "False", primary.reason, primary.message)
    if challenger is not None:
        cond(CHALLENGER_RESOLVED, "True" if challenger.ok else "False", challenger.reason, challenger.message)
    elif any(c.type == CHALLENGER_RESOLVED for c in conditions):
        conditions = [c for c in conditions if c.type != CHALLENGER_RESOLVED]

    main = deployments.get("primary")
    main_status = (main or {}).get("status", {})
    # Serving as long as one replica is: the Deployment's own Available condition means "all replicas"
    # (maxUnavailable is 0), so one killed pod would flip it, and with it Ready, though the others serve.
    available = main_status.get("availableReplicas", 0) > 0 or (
        spec.replicas.min == 0 and _deployment_condition(main, "Available").get("status") == "True"
    )
    if main is None:
        cond(AVAILABLE, "False", "NoDeployment", "no model version could be resolved to deploy")
    elif available:
        cond(
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            f"{main_status.get('availableReplicas', 0)} replica(s) available",
        )
    elif (stalled := _deployment_condition(main, "Progressing")).get("reason") == "ProgressDeadlineExceeded":
        cond(AVAILABLE, "False", "ProgressDeadlineExceeded", stalled.get("message") or "the rollout stalled")
    else:
        message = (
            _deployment_condition(main, "Available").get("message") or "waiting for replicas to become ready"
        )
        cond(AVAILABLE, "False", "ReplicasUnavailable", message)

    rolling = [role for role, d in deployments.items() if d is not None and not rollout_complete(d)]
    if rolling:
        cond(
            PROGRESSING,
            "True",
            "RollingOut",
            f"rolling out model version {served[0]} ({', '.join(sorted(rolling))})",
        )
    elif main is not None:
        cond(PROGRESSING, "False", "RolloutComplete", f"serving model version {served[0]}")

    if available and primary.version is not None and served[0] == primary.version:
        cond(READY, "True", "Serving", f"serving {model_uri}")
    elif not primary.ok and main is not None and available:
        cond(READY, "True", "ServingLastKnownVersion", f"serving {model_uri}; {primary.message}")
    else:
        reason = primary.reason if not primary.ok else "ReplicasUnavailable"
        cond(READY, "False", reason, primary.message if not primary.ok else "no replica is ready yet")

    if spec.gateway is not None:
        cond(TRAFFIC_ROUTED, *_traffic_routed(spec, apis, route))
    elif any(c.type == TRAFFIC_ROUTED for c in conditions):
        conditions = [c for c in conditions if c.type != TRAFFIC_ROUTED]
    if spec.autoscaling.scale_to_zero:
        cond(SCALE_TO_ZERO, *_scale_to_zero(spec, apis, scaler))
    elif any(c.type == SCALE_TO_ZERO for c in conditions):
        conditions = [c for c in conditions if c.type != SCALE_TO_ZERO]

    traffic = None
    if served[0] is not None:
        split = effective_traffic(spec, ResolvedVersions(served[0], served[1]), apis)
        if split is not None:
            traffic = TrafficSplit(
                method=split[0],
                route=route["metadata"]["name"] if route is not None else None,
                primary_percent=split[1],
                challenger_percent=split[2],
            )

    rollout = _rollout(previous.rollout, served, primary, spec, now)
    if rollout is not previous.rollout and rollout is not None and rollout.history:
        latest = rollout.history[0]
        challenger_text = f" (challenger {latest.challenger_version})" if latest.challenger_version else ""
        transitions.append(
            Transition(
                "Normal",
                latest.reason or "Rollout",
                f"revision {latest.revision}: model version {latest.version}{challenger_text}",
            )
        )

    replicas = sum((d or {}).get("status", {}).get("replicas", 0) for d in deployments.values())
    ready = sum((d or {}).get("status", {}).get("readyReplicas", 0) for d in deployments.values())
    status = ModelDeploymentStatus(
        conditions=conditions,
        observed_generation=generation,
        resolved_version=served[0],
        challenger_version=served[1],
        model_uri=model_uri,
        url=url if main is not None else None,
        replicas=replicas if main is not None else None,
        ready_replicas=ready if main is not None else None,
        rollout=rollout,
        traffic=traffic,
    )
    return Observation(status=status, transitions=transitions)


def _parent_conditions(obj: Mapping[str, Any] | None, type_: str) -> list[Mapping[str, Any]]:
    """``type_`` conditions the Gateways (controllers) reported on an HTTPRoute's status.parents."""
    found: list[Mapping[str, Any]] = []
    for parent in (obj or {}).get("status", {}).get("parents") or ():
        for condition in parent.get("conditions") or ():
            if condition.get("type") == type_:
                found.append({**condition, "gateway": (parent.get("parentRef") or {}).get("name", "")})
    return found


def _traffic_routed(
    spec: ModelDeploymentSpec, apis: ClusterApis, route: Mapping[str, Any] | None
) -> tuple[str, str, str]:
    if not routes_by_gateway(spec, apis):
        return (
            "False",
            "GatewayAPIUnavailable",
            "spec.gateway is set but the cluster does not serve gateway.networking.k8s.io/v1 HTTPRoute "
            "(install the Gateway API CRDs); the canary's share follows its replica count instead",
        )
    if route is None:
        return "False", "RoutePending", "the HTTPRoute is not applied yet"
    name = route["metadata"]["name"]
    accepted = _parent_conditions(route, "Accepted")
    refused = [c for c in accepted if c.get("status") == "False"]
    if refused:
        first = refused[0]
        return (
            "False",
            "RouteNotAccepted",
            f"Gateway {first['gateway']} did not accept HTTPRoute {name}: "
            f"{first.get('reason', '')} {first.get('message', '')}".strip(),
        )
    if accepted:
        gateways = ", ".join(sorted({c["gateway"] for c in accepted}))
        return "True", "RouteAccepted", f"HTTPRoute {name} is accepted by Gateway {gateways}"
    return "True", "RouteApplied", f"HTTPRoute {name} is applied; no Gateway has reported on it yet"


def _scale_to_zero(
    spec: ModelDeploymentSpec, apis: ClusterApis, scaler: Mapping[str, Any] | None
) -> tuple[str, str, str]:
    if not scales_with_keda(spec, apis):
        return (
            "False",
            "KEDAUnavailable",
            "autoscaling.scaleToZero is set but the cluster does not serve keda.sh/v1alpha1 ScaledObject "
            "(install KEDA); a HorizontalPodAutoscaler keeps at least one replica instead",
        )
    if scaler is None:
        return "False", "ScaledObjectPending", "the ScaledObject is not applied yet"
    name = scaler["metadata"]["name"]
    ready = next(
        (c for c in scaler.get("status", {}).get("conditions") or () if c.get("type") == "Ready"), None
    )
    if ready is not None and ready.get("status") == "False":
        return (
            "False",
            "ScaledObjectNotReady",
            f"KEDA reports ScaledObject {name} not ready: {ready.get('message') or ready.get('reason')}",
        )
    if ready is not None and ready.get("status") == "True":
        return "True", "ScaledObjectReady", f"KEDA scales {name} between 0 and {spec.replicas.effective_max}"
    return "True", "ScaledObjectApplied", f"ScaledObject {name} is applied; KEDA has not reported on it yet"


def _rollout(
    previous: Rollout | None,
    served: tuple[int | None, int | None],
    primary: Resolution,
    spec: ModelDeploymentSpec,
    now: dt.datetime,
) -> Rollout | None:
    version, challenger_version = served
    if version is None:
        return previous
    current = previous.history[0] if previous and previous.history else None
    if current is not None and (current.version, current.challenger_version) == (version, challenger_version):
        return previous
    if primary.reason == "Rollback":
        reason = "Rollback"
    elif current is None:
        reason = "Initial"
    elif current.version != version and spec.model.alias:
        reason = "AliasMoved"
    else:
        reason = "SpecChanged"
    revision = (previous.revision if previous else 0) + 1
    entry = RolloutRevision(
        revision=revision, version=version, challenger_version=challenger_version, time=now, reason=reason
    )
    history = [entry, *(previous.history if previous else [])][:MAX_ROLLOUT_HISTORY]
    return Rollout(revision=revision, history=history)
