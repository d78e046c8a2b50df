"""ModelDeployment: serve a registered model version (pinned, or followed through an MLflow alias) with
autoscaling, an optional canary/shadow challenger and request sampling for drift detection.

Shaped after KServe's InferenceService (min/max replicas, scale target, canaryTrafficPercent, logger with a
sink), resolving models through the MLflow registry instead of a storage URI.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field

from . import pod_contract
from .common import (
    AGE_COLUMN,
    DNS1123_LABEL_PATTERN,
    DNS1123_SUBDOMAIN_PATTERN,
    Alias,
    ApiModel,
    ComputeResources,
    Condition,
    Image,
    KindInfo,
    MlflowConnection,
    ModelName,
    ModelVersion,
    ObjectMeta,
    ObjectName,
    PrinterColumn,
    Rule,
    Scheduling,
    StatusModel,
    StorageUri,
    conditions_field,
    default_object,
    name_is_dns1035_label,
    plain,
)

KIND: Final = "ModelDeployment"

#: Target used when autoscaling sets neither targetCPUUtilization nor targetRequestsPerSecond.
DEFAULT_TARGET_CPU_UTILIZATION: Final = 80
#: How many revisions status.rollout.history keeps.
MAX_ROLLOUT_HISTORY: Final = 20
#: Per-replica request rate KEDA keeps when scaleToZero is on and targetRequestsPerSecond is not set.
DEFAULT_TARGET_REQUESTS_PER_SECOND: Final = 10
#: A Gateway API hostname (RFC 1123, optionally a leading ``*.`` wildcard), as in HTTPRoute.spec.hostnames.
HOSTNAME_PATTERN: Final = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]


class ModelRef(ApiModel):
    """A registered model and which of its versions: one of alias (followed) or version (pinned)."""

    name: ModelName = Field(examples=["iris-classifier"])
    """Registered model name in the MLflow model registry."""
    alias: Alias | None = Field(None, examples=["champion"])
    """Follow this alias: when it moves to another version, the deployment rolls out that version."""
    version: ModelVersion | None = None
    """Pin this version."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="has(self.alias) != has(self.version)",
            message="model: set exactly one of model.alias (follow an alias, e.g. champion) or "
            "model.version (pin a version)",
            check=lambda m: (m.alias is None) != (m.version is None),
        ),
    )


class Replicas(ApiModel):
    """Bounds of the replica count (the autoscaler moves between them)."""

    min: int = Field(1, ge=0, le=1000)
    """Fewest replicas; 0 needs autoscaling.scaleToZero."""
    max: int | None = Field(None, ge=1, le=1000)
    """Most replicas. Default: min (a fixed replica count, no autoscaling)."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="!has(self.max) || self.min <= self.max",
            message="replicas.min must be less than or equal to replicas.max",
            check=lambda r: r.max is None or r.min <= r.max,
            field_path=".min",
        ),
    )

    @property
    def effective_max(self) -> int:
        """``max``, or ``min`` (at least 1) when unset."""
        return self.max if self.max is not None else max(self.min, 1)


class Autoscaling(ApiModel):
    """What the autoscaler tracks between replicas.min and replicas.max: CPU or request rate, not both."""

    target_cpu_utilization: int | None = Field(None, ge=1, le=100, alias="targetCPUUtilization")
    """Average CPU utilization (percent of the CPU request) to keep. Default when neither target is set:
    80."""
    target_requests_per_second: float | None = Field(None, gt=0, le=1000000)
    """Average requests per second per replica to keep (from the model server's Prometheus metrics)."""
    scale_to_zero: bool = False
    """Scale to zero replicas after idleSeconds without requests (requires replicas.min: 0)."""
    idle_seconds: int = Field(300, ge=30, le=86400)
    """Seconds without requests before scaling to zero (KEDA's cooldownPeriod)."""
    keda: KedaScaling | None = None
    """Scale to zero through a KEDA ScaledObject (needs KEDA installed; without it an HPA keeps at least
    one replica and the ScaleToZero condition says why)."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="!(has(self.targetCPUUtilization) && has(self.targetRequestsPerSecond))",
            message="autoscaling: set at most one of autoscaling.targetCPUUtilization and "
            "autoscaling.targetRequestsPerSecond",
            check=lambda a: a.target_cpu_utilization is None or a.target_requests_per_second is None,
        ),
    )


class KedaScaling(ApiModel):
    """How KEDA scales the primary between 0 and replicas.max: a Prometheus trigger on the model servers'
    request rate (the servers export mlops_inference_requests_total; Prometheus must scrape them)."""

    prometheus_address: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://.+$",
        examples=["http://prometheus-operated.monitoring.svc:9090"],
    )
    """Base URL of the Prometheus HTTP API that KEDA queries."""
    query: str | None = Field(None, min_length=1, max_length=4096)
    """PromQL returning the request rate to scale on. Default: the rate of inference requests
    (mlops_inference_requests_total on the infer and /invocations endpoints) of the primary's pods,
    selected by the namespace and pod target labels. At zero replicas no server counts requests, so to
    wake up on traffic point this at a metric of what is in front of the servers (ingress, gateway)."""
    activation_requests_per_second: float = Field(0, ge=0, le=1000000)
    """Request rate above which KEDA scales from zero to one replica (KEDA's activationThreshold)."""
    polling_interval_seconds: int = Field(15, ge=1, le=3600)
    """How often KEDA queries Prometheus."""


class Challenger(ApiModel):
    """A second version served next to the main one, to compare them on live traffic."""

    alias: Alias | None = Field(None, examples=["challenger"])
    """Follow this alias of the same registered model."""
    version: ModelVersion | None = None
    """Pin this version of the same registered model."""
    traffic_percent: int = Field(10, ge=0, le=100)
    """canary: percent of requests answered by the challenger. shadow: percent of requests also sent to
    the challenger, whose answers are logged and discarded."""
    mode: Literal["canary", "shadow"] = "canary"
    """canary splits traffic; shadow mirrors it."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="has(self.alias) != has(self.version)",
            message="challenger: set exactly one of challenger.alias or challenger.version",
            check=lambda c: (c.alias is None) != (c.version is None),
        ),
    )


class RequestLogging(ApiModel):
    """Sampling of requests and responses to a monitoring log (what DriftPolicy reads)."""

    sample_rate: float = Field(0.0, ge=0, le=1)
    """Fraction of requests whose inputs and outputs are logged (0 disables logging, 1 logs all)."""
    sink: StorageUri | None = Field(None, examples=["pvc://monitoring/iris"])
    """Where sampled records go as JSON lines (pvc://, s3://, gs://, an absolute path, or an http(s)://
    endpoint receiving them by POST). Default: the operator's monitoring store."""


class GatewayParentRef(ApiModel):
    """A Gateway (optionally one of its listeners) the HTTPRoute attaches to, as in Gateway API's
    ParentReference."""

    name: ObjectName = Field(examples=["public"])
    """Name of the Gateway."""
    namespace: str | None = Field(None, min_length=1, max_length=63, pattern=DNS1123_LABEL_PATTERN)
    """Namespace of the Gateway. Default: the ModelDeployment's namespace."""
    section_name: str | None = Field(
        None, min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN_PATTERN, examples=["https"]
    )
    """Listener of the Gateway to attach to. Default: every listener that allows the route."""
    port: int | None = Field(None, ge=1, le=65535)
    """Port of the Gateway's listener(s) to attach to."""


class GatewayRouting(ApiModel):
    """Route requests through a Gateway API Gateway with an HTTPRoute: the canary gets exactly
    challenger.trafficPercent of requests (weighted backendRefs) instead of a share of pods."""

    parent_refs: list[GatewayParentRef] = Field(min_length=1, max_length=32)
    """Gateways the route attaches to."""
    hostnames: list[Hostname] = Field(
        default_factory=list, max_length=16, examples=[["iris.models.example.com"]]
    )
    """Hostnames the route matches (HTTPRoute.spec.hostnames). Default: every hostname of the Gateway.
    The first one that is not a wildcard becomes status.url."""
    scheme: Literal["http", "https"] = "http"
    """Scheme of status.url (what the Gateway's listener speaks)."""

    @property
    def url_host(self) -> str | None:
        """The first hostname that is not a wildcard."""
        return next((h for h in self.hostnames if not h.startswith("*.")), None)


class ServerBatching(ApiModel):
    """Micro-batching: requests arriving together are concatenated into one model call and split back."""

    max_batch_size: int = Field(32, ge=2, le=4096)
    """Most rows in one model call (a request with more rows runs on its own)."""
    max_latency_ms: int = Field(pod_contract.DEFAULT_MAX_BATCH_DELAY_MS, ge=1, le=1000)
    """Longest a request waits for others to join its batch, in milliseconds."""


class ServerSettings(ApiModel):
    """Tuning of the model server."""

    batching: ServerBatching | None = None
    """Micro-batching of concurrent requests (off when unset). Helps models whose cost per call dominates
    (large networks, GPUs); for a small MLP on a CPU it adds latency without adding throughput."""


class ServingResources(ComputeResources):
    """Compute resources of one model server replica."""


class ModelDeploymentSpec(ApiModel):
    """Desired state of a ModelDeployment."""

    model: ModelRef
    """The model and version (or alias) to serve."""
    replicas: Replicas = default_object(Replicas)
    """Replica bounds."""
    autoscaling: Autoscaling = default_object(Autoscaling)
    """Autoscaling target and scale-to-zero."""
    resources: ServingResources = default_object(ServingResources)
    """Compute of one replica."""
    challenger: Challenger | None = None
    """A canary or shadow version next to the main one."""
    logging: RequestLogging = default_object(RequestLogging)
    """Request/response sampling for monitoring and drift detection."""
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Type of the Service in front of the replicas."""
    gateway: GatewayRouting | None = None
    """Expose the deployment through a Gateway API Gateway with an HTTPRoute (exact canary weights).
    Without Gateway API installed the canary falls back to its share of replicas and the TrafficRouted
    condition says so."""
    server: ServerSettings = default_object(ServerSettings)
    """Model server tuning (micro-batching)."""
    scheduling: Scheduling = default_object(Scheduling)
    """Node selection, tolerations and priority of the replicas."""
    image: Image | None = None
    """Model server image. Default: the operator's runtime image,
    ghcr.io/mlops-operator/runtime:<operator version>."""
    mlflow: MlflowConnection | None = None
    """MLflow registry and credentials. Default: the operator's MLflow settings."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="self.replicas.min > 0 || self.autoscaling.scaleToZero",
            message="replicas.min may be 0 only with autoscaling.scaleToZero: true",
            check=lambda s: s.replicas.min > 0 or s.autoscaling.scale_to_zero,
            field_path=".replicas.min",
        ),
        Rule(
            rule="!self.autoscaling.scaleToZero || self.replicas.min == 0",
            message="autoscaling.scaleToZero requires replicas.min: 0",
            check=lambda s: not s.autoscaling.scale_to_zero or s.replicas.min == 0,
            field_path=".autoscaling.scaleToZero",
        ),
        Rule(
            rule="!self.autoscaling.scaleToZero || has(self.autoscaling.keda)",
            message="autoscaling.scaleToZero needs autoscaling.keda (a KEDA ScaledObject scales the "
            "deployment to and from zero on its request rate in Prometheus)",
            check=lambda s: not s.autoscaling.scale_to_zero or s.autoscaling.keda is not None,
            field_path=".autoscaling.keda",
        ),
        Rule(
            rule="!has(self.challenger) || "
            "(has(self.model.alias) && has(self.challenger.alias) ? self.challenger.alias != self.model.alias"
            " : !(has(self.model.version) && has(self.challenger.version)) || "
            "self.challenger.version != self.model.version)",
            message="challenger must name a different alias or version than model",
            check=lambda s: (
                s.challenger is None
                or (
                    s.challenger.alias != s.model.alias
                    if s.model.alias is not None and s.challenger.alias is not None
                    else s.challenger.version is None
                    or s.model.version is None
                    or s.challenger.version != s.model.version
                )
            ),
            field_path=".challenger",
        ),
    )

    @property
    def autoscaling_enabled(self) -> bool:
        return self.replicas.effective_max > self.replicas.min or self.autoscaling.scale_to_zero


class TrafficSplit(StatusModel):
    """How requests are split between the primary and the challenger right now."""

    method: Literal["HTTPRoute", "ReplicaRatio", "Mirror"]
    """HTTPRoute: exact weights through the Gateway; ReplicaRatio: the main Service spreads requests over
    primary and canary pods alike; Mirror: the primary answers everything and mirrors a share to a shadow
    challenger."""
    route: str | None = Field(None, max_length=253)
    """Name of the HTTPRoute when one routes the requests (spec.gateway)."""
    primary_percent: int = Field(ge=0, le=100)
    """Percent of requests answered by the primary."""
    challenger_percent: int = Field(0, ge=0, le=100)
    """Percent of requests answered (canary) or mirrored (shadow) by the challenger."""


class RolloutRevision(StatusModel):
    """One rollout of the deployment."""

    revision: int = Field(ge=1)
    """Revision number (increases by one per rollout)."""
    version: ModelVersion
    """Model version served."""
    challenger_version: ModelVersion | None = None
    """Challenger version served next to it."""
    time: dt.datetime
    """When the rollout started."""
    reason: str | None = Field(None, max_length=256)
    """Why, e.g. AliasMoved, SpecChanged, Rollback."""


class Rollout(StatusModel):
    """The current revision and the ones before it (for rollback)."""

    revision: int = Field(0, ge=0)
    """Current revision."""
    history: list[RolloutRevision] = Field(default_factory=list, max_length=MAX_ROLLOUT_HISTORY)
    """Latest revisions, newest first (at most 20)."""


class ModelDeploymentStatus(StatusModel):
    """Observed state of a ModelDeployment."""

    conditions: list[Condition] = conditions_field()
    """Latest observations: Valid, ModelResolved, ChallengerResolved, Available, Progressing,
    TrafficRouted (with gateway), ScaleToZero (with autoscaling.scaleToZero), Ready."""
    observed_generation: int | None = Field(None, ge=0, json_schema_extra={"format": "int64"})
    """metadata.generation this status describes."""
    resolved_version: ModelVersion | None = None
    """The model version being served (model.version, or the version model.alias points to)."""
    challenger_version: ModelVersion | None = None
    """The challenger version being served."""
    model_uri: str | None = Field(None, max_length=512)
    """models:/<name>/<version> being served."""
    url: str | None = Field(None, max_length=2048)
    """URL of the model server (Open Inference Protocol v2 and /invocations): the gateway hostname when
    an HTTPRoute routes to it, else the in-cluster Service."""
    replicas: int | None = Field(None, ge=0)
    """Replicas that exist."""
    ready_replicas: int | None = Field(None, ge=0)
    """Replicas ready to serve."""
    rollout: Rollout | None = None
    """Rollout revision history."""
    traffic: TrafficSplit | None = None
    """Effective traffic split (with a challenger or a gateway)."""


#: The ModelDeployment's Services are named after it.
NAME_RULE: Final = name_is_dns1035_label(KIND, "its Services and Deployments")


class ModelDeployment(ApiModel):
    """ModelDeployment serves a registered model version, pinned or followed through an MLflow alias such as
    champion, with autoscaling, an optional canary or shadow challenger, and request sampling for drift
    detection."""

    api_version: Literal["mlops.dev/v1alpha1"] = "mlops.dev/v1alpha1"
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    cel_rules: ClassVar[tuple[Rule, ...]] = (NAME_RULE,)

    @classmethod
    def from_body(cls, body: Any) -> ModelDeployment:
        """Parse a whole object (e.g. a kopf body)."""
        return cls.model_validate(plain(body))


INFO: Final = KindInfo(
    kind=KIND,
    plural="modeldeployments",
    short_names=("md",),
    description=ModelDeployment.__doc__ or "",
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.model.name", "string", "Registered model served."),
        PrinterColumn("Alias", ".spec.model.alias", "string", "Alias followed.", priority=1),
        PrinterColumn("Version", ".status.resolvedVersion", "integer", "Model version being served."),
        PrinterColumn(
            "Challenger",
            ".status.challengerVersion",
            "integer",
            "Challenger version being served.",
            priority=1,
        ),
        PrinterColumn(
            "Ready",
            '.status.conditions[?(@.type=="Ready")].status',
            "string",
            "Whether the deployment serves.",
        ),
        PrinterColumn("Replicas", ".status.readyReplicas", "integer", "Replicas ready to serve."),
        PrinterColumn("URL", ".status.url", "string", "In-cluster URL of the model server."),
        AGE_COLUMN,
    ),
    selectable_fields=(".spec.model.name",),
    root_rules=(NAME_RULE,),
)

__all__ = [
    "DEFAULT_TARGET_CPU_UTILIZATION",
    "DEFAULT_TARGET_REQUESTS_PER_SECOND",
    "INFO",
    "KIND",
    "MAX_ROLLOUT_HISTORY",
    "NAME_RULE",
    "Autoscaling",
    "Challenger",
    "GatewayParentRef",
    "GatewayRouting",
    "KedaScaling",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelRef",
    "Replicas",
    "RequestLogging",
    "Rollout",
    "RolloutRevision",
    "ServerBatching",
    "ServerSettings",
    "ServingResources",
    "TrafficSplit",
]
