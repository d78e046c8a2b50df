"""ModelDeployment controller: resolves the model alias (or pinned version) in the MLflow registry, applies
the model-server Deployment(s), Service(s) and HPA by server-side apply, prunes children no longer wanted,
and reports what is served (``status.observe``, pure).

Triggers (``machinery.triggers.Rails``, wired by the runner): its own events when it is new, its spec changed
or an annotation changed (a nudge to re-resolve), the resync loop that re-resolves aliases (they move in
MLflow, not in Kubernetes), and events of the owned Deployments (coalesced). Children that already match are
not applied again. Rollback: the annotation ``mlops.dev/rollback-to-version: "<N>"`` serves version N until it
is removed (for GitOps, pin ``spec.model.version`` instead).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import API_VERSION, LABEL_PREFIX
from mlops_operator.api.v1alpha1.modeldeployment import KIND, ModelDeploymentSpec, ModelDeploymentStatus
from mlops_operator.api.v1alpha1.pod_contract import ENV_MLFLOW_TRACKING_URI
from mlops_operator.config import OperatorConfig
from mlops_operator.controllers.modeldeployment.status import Resolution, observe
from mlops_operator.kube.client import KubeClient
from mlops_operator.kube.connection import ApiError
from mlops_operator.kube.discovery import Discovery
from mlops_operator.machinery.publishing import StatusPublisher, describe_validation_error
from mlops_operator.mlflow_registry import (
    ModelNotFoundError,
    Registry,
    RegistryUnavailableError,
    registry_for,
    rest,
)
from mlops_operator.mlflow_registry.rest import RestRegistryReader
from mlops_operator.resources.common import Owner, PodDefaults, owner_label_key
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

#: The label on a ModelDeployment's children naming it (what the Deployment watch selects on).
OWNER_LABEL: Final = owner_label_key(KIND)
ROLLBACK_ANNOTATION: Final = f"{LABEL_PREFIX}rollback-to-version"
#: Kinds a ModelDeployment may own, pruned when no longer desired.
CHILD_KINDS: Final = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
)
#: Kinds a ModelDeployment owns only when their CRDs are installed (and the spec opts in).
HTTPROUTE: Final = ("gateway.networking.k8s.io/v1", "HTTPRoute")
SCALEDOBJECT: Final = ("keda.sh/v1alpha1", "ScaledObject")
OPTIONAL_CHILD_KINDS: Final = (HTTPROUTE, SCALEDOBJECT)

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


class ModelDeploymentController:
    """The I/O of the ModelDeployment kind: the registry it resolves versions in (``resolver``), the
    apiserver (children, status) and API discovery for the optional children, with the operator's defaults."""

    def __init__(
        self,
        client: KubeClient,
        publisher: StatusPublisher,
        discovery: Discovery,
        config: OperatorConfig,
        resolver: Resolver = resolve_in_registry,
    ) -> None:
        self.client = client
        self.publisher = publisher
        self.discovery = discovery
        self.defaults = PodDefaults(
            runtime_image=config.runtime_image, mlflow_tracking_uri=config.mlflow_tracking_uri
        )
        self.resolver = resolver

    def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.client.get(API_VERSION, KIND, namespace, name)

    def _primary_resolution(
        self, spec: ModelDeploymentSpec, annotations: Mapping[str, str], tracking_uri: str | None
    ) -> Resolution:
        rollback = annotations.get(ROLLBACK_ANNOTATION)
        if rollback:
            if not rollback.isdigit() or int(rollback) < 1:
                return Resolution(
                    None,
                    "InvalidRollback",
                    f"annotation {ROLLBACK_ANNOTATION}={rollback!r} is not a version number",
                )
            checked = self.resolver(tracking_uri, spec.model.name, None, int(rollback))
            if not checked.ok:
                return checked
            return Resolution(
                int(rollback),
                "Rollback",
                f"rolled back to version {rollback} by annotation {ROLLBACK_ANNOTATION}",
            )
        return self.resolver(tracking_uri, spec.model.name, spec.model.alias, spec.model.version)

    def reconcile(self, body: Mapping[str, Any]) -> ModelDeploymentStatus:
        owner = Owner.from_body(body)
        metadata = body["metadata"]
        generation = metadata.get("generation")
        previous = ModelDeploymentStatus.model_validate(body.get("status") or {})
        try:
            spec = ModelDeploymentSpec.model_validate(body["spec"])
        except ValidationError as error:
            return self.publisher.report_invalid(body, previous, describe_validation_error(error), generation)

        defaults = self.defaults
        tracking_uri = (spec.mlflow.tracking_uri if spec.mlflow else None) or defaults.mlflow_tracking_uri
        primary = self._primary_resolution(spec, metadata.get("annotations") or {}, tracking_uri)
        challenger = (
            self.resolver(tracking_uri, spec.model.name, spec.challenger.alias, spec.challenger.version)
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

        apis = self._cluster_apis(spec)
        desired: list[dict[str, Any]] = []
        deployments: dict[str, dict[str, Any] | None] = {}
        applied: dict[tuple[str, str], dict[str, Any]] = {}
        live = self._live_children(owner)
        if served_primary is not None:
            versions = ResolvedVersions(primary=served_primary, challenger=served_challenger)
            desired = desired_children(owner, spec, versions, defaults, apis)
            # what is live already (unchanged: no write), else what server-side apply answers with
            applied = {
                (child["kind"], child["metadata"]["name"]): self._apply(
                    child, live.get((child["kind"], child["metadata"]["name"]))
                )
                for child in desired
            }
            deployments[PRIMARY] = applied.get(("Deployment", deployment_name(owner)))
            if served_challenger is not None:
                deployments[CHALLENGER] = applied.get(("Deployment", deployment_name(owner, CHALLENGER)))
        self._prune(owner, desired, live)

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
        self.publisher.publish(body, previous, observation.status, observation.transitions)
        return observation.status

    def _cluster_apis(self, spec: ModelDeploymentSpec) -> ClusterApis:
        """The optional APIs this spec asks for that the cluster serves (discovery only when asked)."""
        return ClusterApis(
            gateway_api=spec.gateway is not None and self.discovery.served(*HTTPROUTE),
            keda=spec.autoscaling.scale_to_zero
            and spec.autoscaling.keda is not None
            and self.discovery.served(*SCALEDOBJECT),
        )

    def _apply(self, child: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
        try:
            return self.client.apply_if_changed(child, live)[0]
        except ApiError as error:
            if error.status == 404 and (child["apiVersion"], child["kind"]) in OPTIONAL_CHILD_KINDS:
                self.discovery.forget(child["apiVersion"])  # its CRD went away: look again next time
            raise

    def _live_children(self, owner: Owner) -> dict[tuple[str, str], dict[str, Any]]:
        """Every child of ``owner`` as it is now, by (kind, name): compared with the desired ones (no write
        when unchanged) and pruned when no longer desired."""
        selector = f"{owner.label_key}={owner.label_value}"
        optional = [kind for kind in OPTIONAL_CHILD_KINDS if self.discovery.served(*kind)]
        live: dict[tuple[str, str], dict[str, Any]] = {}
        for api_version, kind in (*CHILD_KINDS, *optional):
            for child in self.client.list_objects(api_version, kind, owner.namespace, selector):
                if any(ref.get("uid") == owner.uid for ref in child["metadata"].get("ownerReferences") or ()):
                    live[(kind, child["metadata"]["name"])] = child
        return live

    def _prune(
        self, owner: Owner, desired: list[dict[str, Any]], live: Mapping[tuple[str, str], Mapping[str, Any]]
    ) -> None:
        """Delete owned children that are no longer desired (challenger removed, autoscaling turned off,
        gateway or scale-to-zero removed)."""
        wanted = {(child["kind"], child["metadata"]["name"]) for child in desired}
        for (kind, name), child in live.items():
            if (kind, name) not in wanted:
                self.client.delete(child["apiVersion"], kind, owner.namespace, name)
