"""ModelDeployment controller: resolves the model alias (or pinned version) in the MLflow registry, applies
the model-server Deployment(s), Service(s) and HPA by server-side apply, prunes children no longer wanted,
and reports what is served.

Triggers: create/update/resume (an annotation change is a nudge to re-resolve), a timer that re-resolves
aliases (they move in MLflow, not in Kubernetes), and events of the owned Deployments.
Rollback: the annotation ``mlops.dev/rollback-to-version: "<N>"`` serves version N until it is removed
(for GitOps, pin ``spec.model.version`` instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import API_VERSION, GROUP, LABEL_PREFIX, VERSION
from mlops_operator.api.v1alpha1.common import VALID, set_condition
from mlops_operator.api.v1alpha1.modeldeployment import KIND, ModelDeploymentSpec, ModelDeploymentStatus
from mlops_operator.config import OperatorConfig
from mlops_operator.controllers import discovery, kube, resync
from mlops_operator.controllers.common import (
    RETRY_BACKOFF_SECONDS,
    Transition,
    describe_validation_error,
    pod_defaults,
    publish,
)
from mlops_operator.controllers.modeldeployment_status import READY, Resolution, observe
from mlops_operator.mlflow_registry import ModelNotFoundError, RegistryUnavailableError, registry_for
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
    """Resolve an alias to a version, or check that a pinned version exists."""
    try:
        registry = registry_for(tracking_uri)
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


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.update(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
def reconcile_handler(body: kopf.Body, **_: Any) -> None:
    reconcile(cast(Mapping[str, Any], body))


@kopf.on.event("apps/v1", "deployments", labels={OWNER_LABEL: kopf.PRESENT})
def deployment_event_handler(body: kopf.Body, **_: Any) -> None:
    for reference in body.get("metadata", {}).get("ownerReferences") or ():
        if reference.get("kind") == KIND and reference.get("apiVersion") == API_VERSION:
            parent = kube.get(API_VERSION, KIND, body["metadata"]["namespace"], reference["name"])
            if parent is not None and parent["metadata"].get("deletionTimestamp") is None:
                reconcile(parent)


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
    if served_primary is not None:
        versions = ResolvedVersions(primary=served_primary, challenger=served_challenger)
        desired = desired_children(owner, spec, versions, defaults, apis)
        # server-side apply answers with the object as stored: its status is what the Deployment reports
        applied = {(child["kind"], child["metadata"]["name"]): _apply(child) for child in desired}
        deployments[PRIMARY] = applied.get(("Deployment", deployment_name(owner)))
        if served_challenger is not None:
            deployments[CHALLENGER] = applied.get(("Deployment", deployment_name(owner, CHALLENGER)))
    _prune(owner, desired)

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


def _apply(child: dict[str, Any]) -> dict[str, Any]:
    try:
        return kube.apply(child)
    except ApiException as error:
        if error.status == 404 and (child["apiVersion"], child["kind"]) in OPTIONAL_CHILD_KINDS:
            discovery.discovery.forget(child["apiVersion"])  # its CRD went away: look again next time
        raise


def _prune(owner: Owner, desired: list[dict[str, Any]]) -> None:
    """Delete owned children that are no longer desired (challenger removed, autoscaling turned off,
    gateway or scale-to-zero removed)."""
    wanted = {(child["kind"], child["metadata"]["name"]) for child in desired}
    selector = f"{owner.label_key}={owner.label_value}"
    optional = [kind for kind in OPTIONAL_CHILD_KINDS if discovery.served(*kind)]
    for api_version, kind in (*CHILD_KINDS, *optional):
        for child in kube.list_objects(api_version, kind, owner.namespace, selector):
            name = child["metadata"]["name"]
            owned = any(ref.get("uid") == owner.uid for ref in child["metadata"].get("ownerReferences") or ())
            if owned and (kind, name) not in wanted:
                kube.delete(api_version, kind, owner.namespace, name)


def _publish(
    body: Mapping[str, Any],
    previous: ModelDeploymentStatus,
    status: ModelDeploymentStatus,
    transitions: list[Transition],
) -> None:
    publish(body, previous.to_dict(), status.to_dict(), transitions)


# Aliases move in MLflow, not in Kubernetes: look again periodically and roll out when they do.
resync.register(
    API_VERSION, KIND, interval=OperatorConfig.from_env().resolve_interval_seconds, reconcile=reconcile
)
