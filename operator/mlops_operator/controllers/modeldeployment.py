"""ModelDeployment controller: resolves the model alias (or pinned version) in the MLflow registry, applies
the model-server Deployment(s), Service(s) and HPA by server-side apply, prunes children no longer wanted,
and reports what is served.

Triggers (controllers/triggers.py): its own events when it is new, its spec changed or an annotation changed
(a nudge to re-resolve), a timer that re-resolves aliases (they move in MLflow, not in Kubernetes), and events
of the owned Deployments (coalesced). Children that already match are not applied again.
Rollback: the annotation ``mlops.dev/rollback-to-version: "<N>"`` serves version N until it is removed
(for GitOps, pin ``spec.model.version`` instead).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final

import kopf
from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import API_VERSION, GROUP, LABEL_PREFIX, VERSION
from mlops_operator.api.v1alpha1.common import VALID, set_condition
from mlops_operator.api.v1alpha1.modeldeployment import KIND, ModelDeploymentSpec, ModelDeploymentStatus
from mlops_operator.api.v1alpha1.pod_contract import ENV_MLFLOW_TRACKING_URI
from mlops_operator.config import OperatorConfig
from mlops_operator.controllers import discovery, kube, resync, triggers
from mlops_operator.controllers.apiserver import ApiError
from mlops_operator.controllers.common import (
    Transition,
    describe_validation_error,
    pod_defaults,
    publish,
)
from mlops_operator.controllers.modeldeployment_status import READY, Resolution, observe
from mlops_operator.controllers.settings import handler_executor
from mlops_operator.mlflow_registry import (
    ModelNotFoundError,
    Registry,
    RegistryUnavailableError,
    registry_for,
    rest,
)
from mlops_operator.mlflow_registry.rest import RestRegistryReader
from mlops_operator.resources.common import Owner
from mlops_operator.resources.modeldeployment import (
    CHALLENGER,
    PRIMARY,
    ClusterApis,
    ResolvedVersions,
    deployment_name,
    desired_children,
    model_uri,
    route_name,
    url,
)

PLURAL: Final = "modeldeployments"
OWNER_LABEL: Final = f"{GROUP}/modeldeployment"
ROLLBACK_ANNOTATION: Final = f"{LABEL_PREFIX}rollback-to-version"
#: Kinds a ModelDeployment may own, pruned when no longer desired.
CHILD_KINDS: Final = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
)
#: Kinds a ModelDeployment owns only when their CRDs are installed (and the spec opts in).
OPTIONAL_CHILD_KINDS: Final = (discovery.HTTPROUTE, discovery.SCALEDOBJECT)

logger = logging.getLogger(__name__)

#: (tracking_uri, model name, alias, version) -> Resolution; replaced in tests.
Resolver = Callable[[str | None, str, str | None, int | None], Resolution]


def resolve_in_registry(
    tracking_uri: str | None, name: str, alias: str | None, version: int | None
) -> Resolution:
    """Resolve an alias to a version, or check that a pinned version exists (over MLflow's REST API when it
    can: importing the mlflow package for two GETs costs ~100 MiB; see mlflow_registry.rest)."""
    try:
        uri = tracking_uri or os.environ.get(ENV_MLFLOW_TRACKING_URI)
        registry: RestRegistryReader | Registry = (
            rest.reader_for(uri) if uri and rest.supports(uri) else registry_for(tracking_uri)
        )
        if alias is not None:
            resolved = registry.resolve_alias(name, alias)
            return Resolution(resolved, "Resolved", f"alias {alias} of {name} points to version {resolved}")
        assert version is not None
        registry.get_version(name, version)
        return Resolution(version, "Pinned", f"version {version} of {name} is pinned")
    except ModelNotFoundError as error:
        return Resolution(None, "AliasNotFound" if alias else "VersionNotFound", str(error))
    except RegistryUnavailableError as error:
        return Resolution(None, "RegistryUnavailable", str(error))


resolver: Resolver = resolve_in_registry


def _trigger_key(body: Mapping[str, Any]) -> Hashable:
    """A spec change or any annotation change (a rollback request, or a nudge to re-resolve the alias now)
    calls for a reconcile; status patches do not. Annotations are remembered as a digest."""
    annotations = body["metadata"].get("annotations") or {}
    return (body["metadata"].get("generation"), hash(tuple(sorted(annotations.items()))))


TRIGGERS = triggers.ParentTriggers(_trigger_key)


# Coroutines, as the TrainingJob's: decided on kopf's event loop, a due reconcile takes a handler thread.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def modeldeployment_event_handler(body: kopf.Body, type: str | None, **_: Any) -> None:
    await triggers.on_parent_event(TRIGGERS, body, type, _serialized, handler_executor())


@kopf.on.event("apps/v1", "deployments", labels={OWNER_LABEL: kopf.PRESENT})
async def deployment_event_handler(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type is None:
        return  # the initial listing: parents are reconciled on their own listing and by the resync loop
    for reference in body.get("metadata", {}).get("ownerReferences") or ():
        if reference.get("kind") == KIND and reference.get("apiVersion") == API_VERSION:
            _after_child_events.schedule((body["metadata"]["namespace"], reference["name"]))


def _read(namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(API_VERSION, KIND, namespace, name)


def _primary_resolution(
    spec: ModelDeploymentSpec, annotations: Mapping[str, str], tracking_uri: str | None
) -> Resolution:
    rollback = annotations.get(ROLLBACK_ANNOTATION)
    if rollback:
        if not rollback.isdigit() or int(rollback) < 1:
            return Resolution(
                None,
                "InvalidRollback",
                f"annotation {ROLLBACK_ANNOTATION}={rollback!r} is not a version number",
            )
        checked = resolver(tracking_uri, spec.model.name, None, int(rollback))
        if not checked.ok:
            return checked
        return Resolution(
            int(rollback),
            "Rollback",
            f"rolled back to version {rollback} by annotation {ROLLBACK_ANNOTATION}",
        )
    return resolver(tracking_uri, spec.model.name, spec.model.alias, spec.model.version)


def reconcile(body: Mapping[str, Any]) -> ModelDeploymentStatus:
    owner = Owner.from_body(body)
    metadata = body["metadata"]
    generation = metadata.get("generation")
    previous = ModelDeploymentStatus.model_validate(body.get("status") or {})
    try:
        spec = ModelDeploymentSpec.model_validate(body["spec"])
    except ValidationError as error:
        message = describe_validation_error(error)
        conditions = set_condition(previous.conditions, VALID, "False", "InvalidSpec", message, generation)
        conditions = set_condition(conditions, READY, "False", "InvalidSpec", message, generation)
        status = previous.model_copy(update={"conditions": conditions, "observed_generation": generation})
        _publish(body, previous, status, [Transition("Warning", "InvalidSpec", message)])
        return status

    defaults = pod_defaults()
    tracking_uri = (spec.mlflow.tracking_uri if spec.mlflow else None) or defaults.mlflow_tracking_uri
    primary = _primary_resolution(spec, metadata.get("annotations") or {}, tracking_uri)
    challenger = (
        resolver(tracking_uri, spec.model.name, spec.challenger.alias, spec.challenger.version)
        if spec.challenger is not None
        else None
    )
    # Registry trouble never tears down what serves: keep the versions served before.
    served_primary = primary.version if primary.version is not None else previous.resolved_version
    served_challenger = None
    if challenger is not None:
        served_challenger = (
            challenger.version if challenger.version is not None else previous.challenger_version
        )

    apis = _cluster_apis(spec)
    desired: list[dict[str, Any]] = []
    deployments: dict[str, dict[str, Any] | None] = {}
    applied: dict[tuple[str, str], dict[str, Any]] = {}
    live = _live_children(owner)
    if served_primary is not None:
        versions = ResolvedVersions(primary=served_primary, challenger=served_challenger)
        desired = desired_children(owner, spec, versions, defaults, apis)
        # what is live already (unchanged: no write), else what server-side apply answers with
        applied = {
            (child["kind"], child["metadata"]["name"]): _apply(
                child, live.get((child["kind"], child["metadata"]["name"]))
            )
            for child in desired
        }
        deployments[PRIMARY] = applied.get(("Deployment", deployment_name(owner)))
        if served_challenger is not None:
            deployments[CHALLENGER] = applied.get(("Deployment", deployment_name(owner, CHALLENGER)))
    _prune(owner, desired, live)

    observation = observe(
        spec,
        generation,
        previous,
        primary,
        challenger,
        (served_primary, served_challenger),
        deployments,
        url(owner, spec, apis),
        model_uri(spec.model.name, served_primary) if served_primary is not None else None,
        apis=apis,
        route=applied.get(("HTTPRoute", route_name(owner))),
        scaler=applied.get(("ScaledObject", deployment_name(owner))),
    )
    _publish(body, previous, observation.status, observation.transitions)
    return observation.status


def _cluster_apis(spec: ModelDeploymentSpec) -> ClusterApis:
    """The optional APIs this spec asks for that the cluster serves (discovery only when asked)."""
    return ClusterApis(
        gateway_api=spec.gateway is not None and discovery.served(*discovery.HTTPROUTE),
        keda=spec.autoscaling.scale_to_zero
        and spec.autoscaling.keda is not None
        and discovery.served(*discovery.SCALEDOBJECT),
    )


def _apply(child: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return kube.apply_if_changed(child, live)[0]
    except ApiError as error:
        if error.status == 404 and (child["apiVersion"], child["kind"]) in OPTIONAL_CHILD_KINDS:
            discovery.discovery.forget(child["apiVersion"])  # its CRD went away: look again next time
        raise


def _live_children(owner: Owner) -> dict[tuple[str, str], dict[str, Any]]:
    """Every child of ``owner`` as it is now, by (kind, name): compared with the desired ones (no write when
    unchanged) and pruned when no longer desired."""
    selector = f"{owner.label_key}={owner.label_value}"
    optional = [kind for kind in OPTIONAL_CHILD_KINDS if discovery.served(*kind)]
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for api_version, kind in (*CHILD_KINDS, *optional):
        for child in kube.list_objects(api_version, kind, owner.namespace, selector):
            if any(ref.get("uid") == owner.uid for ref in child["metadata"].get("ownerReferences") or ()):
                live[(kind, child["metadata"]["name"])] = child
    return live


def _prune(
    owner: Owner, desired: list[dict[str, Any]], live: Mapping[tuple[str, str], Mapping[str, Any]]
) -> None:
    """Delete owned children that are no longer desired (challenger removed, autoscaling turned off,
    gateway or scale-to-zero removed)."""
    wanted = {(child["kind"], child["metadata"]["name"]) for child in desired}
    for (kind, name), child in live.items():
        if (kind, name) not in wanted:
            kube.delete(child["apiVersion"], kind, owner.namespace, name)


def _publish(
    body: Mapping[str, Any],
    previous: ModelDeploymentStatus,
    status: ModelDeploymentStatus,
    transitions: list[Transition],
) -> None:
    publish(body, previous.to_dict(), status.to_dict(), transitions)


# Aliases move in MLflow, not in Kubernetes: look again periodically and roll out when they do.
#: Every entry point (events, child events, resync, retries) reconciles an object one pass at a time.
_serialized = triggers.Serialized(reconcile, _read)
#: Child events come in bursts: one reconcile of the parent per burst.
_after_child_events = triggers.Coalescer(_serialized.by_name)

_RESOLVE_INTERVAL = OperatorConfig.from_env().resolve_interval_seconds
resync.register(
    API_VERSION,
    KIND,
    interval=_RESOLVE_INTERVAL,
    reconcile=_serialized,
    when=lambda body: not _serialized.reconciled_within(body, _RESOLVE_INTERVAL),
)
