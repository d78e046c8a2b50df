"""Building blocks shared by the three mlops.dev/v1alpha1 kinds.

Everything here is plain pydantic: the models validate bodies at the operator's boundary and are the only
source of the CRD schemas (``mlops_operator.api.crdgen`` turns their JSON schema into structural OpenAPI).

Conventions:

* JSON/YAML names are camelCase (alias generator); Python code may use either name (``populate_by_name``).
* Spec models forbid unknown fields; status models ignore them (an older operator reading a newer status).
* A cross-field rule is declared once as a :class:`Rule`: its CEL text goes into the CRD as an
  ``x-kubernetes-validations`` entry (the apiserver enforces it) and its Python mirror runs in
  an after-validator of :class:`ApiModel`, so a body that reaches the operator without passing the
  apiserver (or a test) gets the same message.
* Every string has a ``maxLength``, every list a ``maxItems`` and every map a ``maxProperties``: that bounds
  the apiserver's CEL cost estimate and the size of an object.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

# --------------------------------------------------------------------------------------------------------
# Rules: one declaration -> CEL in the CRD + the same check in Python
# --------------------------------------------------------------------------------------------------------

#: ``reason`` values the apiserver accepts on an ``x-kubernetes-validations`` rule.
RuleReason = Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"]


@dataclass(frozen=True)
class Rule:
    """A cross-field validation rule of one schema node.

    ``rule`` is the CEL expression (``self`` is the node, ``oldSelf`` the stored value for a transition
    rule), ``message`` what the user reads (it names the field), ``field_path`` the JSON path, relative to
    the node, of the field the error is reported on, and ``check`` the Python mirror of ``rule``: it gets
    the validated model and returns True when the rule holds. A transition rule has no ``check`` (Python
    never sees the stored object).
    """

    rule: str
    message: str
    check: Callable[[Any], bool] | None = None
    field_path: str | None = None
    reason: RuleReason | None = None

    def to_schema(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry of this rule."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            out["fieldPath"] = self.field_path
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    @property
    def is_transition_rule(self) -> bool:
        """Whether the rule compares against the stored object (``oldSelf``)."""
        return "oldSelf" in self.rule


def _add_rules_to_schema(schema: dict[str, Any], cls: type) -> None:
    """``json_schema_extra`` hook of every model: publish the model's :class:`Rule` s as CEL."""
    rules: Sequence[Rule] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_schema() for r in rules]


_BASE_CONFIG: Final = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    use_attribute_docstrings=True,
    protected_namespaces=(),
    json_schema_extra=_add_rules_to_schema,
)


#: Per model class, the keys of its fields (see _field_keys).
_FIELD_KEYS: dict[type[BaseModel], frozenset[str]] = {}


def _field_keys(model: type[BaseModel]) -> frozenset[str]:
    """The keys a body may use for ``model``'s fields: wire (camelCase) names and Python names."""
    keys = _FIELD_KEYS.get(model)
    if keys is None:
        fields = model.model_fields
        keys = frozenset(fields) | frozenset(f.alias for f in fields.values() if f.alias)
        _FIELD_KEYS[model] = keys
    return keys


class ApiModel(BaseModel):
    """Base of every spec-side model: camelCase on the wire, unknown fields rejected, rules checked."""

    #: NaN and infinities are no JSON: the apiserver never stores them, and a dump must stay JSON.
    model_config = ConfigDict(**_BASE_CONFIG, extra="forbid", allow_inf_nan=False)

    #: Cross-field rules of this node (CEL for the apiserver + Python mirror).
    cel_rules: ClassVar[tuple[Rule, ...]] = ()
    #: Whether list-map keys and set values are checked for duplicates (not on status: read leniently).
    check_list_types: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """``field: null`` means the field is absent, as the apiserver reads it: no field of these CRDs is
        ``nullable``, so it prunes the null before defaulting (a defaulted field gets its default, a
        required one is missing). An unknown field stays unknown, null or not (strict field validation
        refuses it)."""
        if isinstance(data, Mapping) and any(value is None for value in data.values()):
            known = _field_keys(cls)
            return {key: value for key, value in data.items() if value is not None or key not in known}
        return data

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            if rule.check is not None and not rule.check(self):
                raise ValueError(rule.message)
        return self

    @model_validator(mode="after")
    def _check_list_types(self) -> Self:
        """Entries of an ``x-kubernetes-list-type: map`` list are unique by their keys once defaulted, and of
        a ``set`` list by value, as the apiserver checks them (e.g. gate.metrics ``{name: a, op: ">="}`` and
        ``{name: a}`` are the same entry)."""
        if not type(self).check_list_types:
            return self
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            value = getattr(self, name)
            if not isinstance(extra, dict) or not isinstance(value, list) or len(value) < 2:
                continue
            list_type = extra.get("x-kubernetes-list-type")
            if list_type == "map":
                keys = [str(k) for k in extra.get("x-kubernetes-list-map-keys", ())]  # type: ignore[union-attr]
                entries = [tuple(item.to_dict().get(k) for k in keys) for item in value]
            elif list_type == "set":
                keys, entries = [], list(value)
            else:
                continue
            duplicates = [entry for entry, count in Counter(entries).items() if count > 1]
            if duplicates:
                field = info.alias or name
                what = f"by {', '.join(keys)}" if keys else "values"
                raise ValueError(f"{field}: duplicate entries ({what}): {duplicates[:3]}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready body of this object: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Base of every status-side model: written by the operator, read leniently (unknown fields ignored)."""

    model_config = ConfigDict(**_BASE_CONFIG, extra="ignore", allow_inf_nan=True)
    check_list_types: ClassVar[bool] = False


def plain(obj: Any) -> Any:
    """Deep-copy a kopf body (or any Mapping/Sequence view) into plain dicts and lists for pydantic."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------------------
# Constrained scalar types
# --------------------------------------------------------------------------------------------------------

DNS1123_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS-1035 label (what a Service name must be): starts with a letter, at most 63 characters.
DNS1035_LABEL_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_DNS_LABEL: Final = 63
DNS1123_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A Kubernetes resource quantity without a sign (``500m``, ``2``, ``4Gi``, ``1e3``).
QUANTITY_PATTERN: Final = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|(["
    r"eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: Registered model names: they end up in ``models:/<name>/<version>`` URIs and in label values.
MODEL_NAME_PATTERN: Final = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
#: MLflow aliases: letters, digits, ``_`` and ``-``.
ALIAS_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
#: MLflow metric and parameter keys.
METRIC_NAME_PATTERN: Final = r"^[A-Za-z0-9_./-]+$"
#: A dataset column / model input name.
FEATURE_NAME_PATTERN: Final = r"^[^\x00-\x1f]+$"
#: Where data, checkpoints and samples live: a PVC (``pvc://<claim>/<path>``), object storage, http(s), or an
#: absolute path inside the container (``file:///data/x.csv`` or ``/data/x.csv``).
STORAGE_URI_PATTERN: Final = r"^((pvc|s3|gs|https?|file)://.+|/.+)$"
#: metav1.Condition ``type`` (a qualified name) and ``reason`` (CamelCase).
CONDITION_TYPE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
ENV_NAME_PATTERN: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"

#: Bounds of Kubernetes' integer fields (int32 and int64 in the Go types): a larger JSON integer is refused
#: by the apiserver, so the models refuse it too instead of building children the apiserver rejects. The
#: apiserver reads a CRD's ``minimum``/``maximum`` as float64, where 2**63 - 1 rounds to 2**63 and then
#: overflows to -2**63 (every value is refused): int64 fields are bounded by the largest integer a float64
#: holds exactly, 2**53 - 1 seconds being some 285 million years.
INT32_MAX: Final = 2**31 - 1
INT64_MIN: Final = -(2**53 - 1)
INT64_MAX: Final = 2**53 - 1

MAX_NAME: Final = 253
MAX_URI: Final = 2048
MAX_FEATURES: Final = 256
MAX_FEATURE_NAME: Final = 128
MAX_MAP: Final = 64

#: A namespaced object's name (DNS-1123 subdomain).
ObjectName = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=DNS1123_SUBDOMAIN_PATTERN)]
#: A Secret or ConfigMap name (same rules as any object name).
SecretName = ObjectName
#: A URI or absolute path of data, a checkpoint or a sample log.
StorageUri = Annotated[str, Field(min_length=1, max_length=MAX_URI, pattern=STORAGE_URI_PATTERN)]
#: A container image reference (``registry/repo:tag`` or ``...@sha256:...``).
Image = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s]+$")]
#: A registered model name in the MLflow model registry.
ModelName = Annotated[str, Field(min_length=1, max_length=256, pattern=MODEL_NAME_PATTERN)]
#: A registered model version (MLflow numbers versions 1, 2, 3, ... per model).
ModelVersion = Annotated[int, Field(ge=1, le=INT32_MAX)]
#: An MLflow metric name.
MetricName = Annotated[str, Field(min_length=1, max_length=250, pattern=METRIC_NAME_PATTERN)]
#: A dataset column / model input.
FeatureName = Annotated[str, Field(min_length=1, max_length=MAX_FEATURE_NAME, pattern=FEATURE_NAME_PATTERN)]
#: A free text shown to humans.
Text = Annotated[str, Field(max_length=4096)]


def _alias_not_reserved(value: str) -> str:
    if value == "latest" or re.fullmatch(r"[vV][0-9]+", value):
        raise ValueError(
            f"alias {value!r} is reserved by MLflow ('latest' and version-like names such as 'v3'); "
            "use a name like 'champion' or 'challenger'"
        )
    return value


#: An MLflow registered-model alias such as ``champion`` or ``challenger``.
Alias = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=ALIAS_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                Rule(
                    rule="self != 'latest' && !self.matches('^[vV][0-9]+$')",
                    message="aliases 'latest' and version-like names such as 'v3' are reserved by MLflow; "
                    "use a name like 'champion' or 'challenger'",
                ).to_schema()
            ]
        },
    ),
    AfterValidator(_alias_not_reserved),
]


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    dups = [v for v in values if v in seen or seen.add(v)]  # type: ignore[func-returns-value]
    if dups:
        raise ValueError(f"duplicate entries: {sorted(set(dups))}")
    return values


#: A list of distinct feature names (``x-kubernetes-list-type: set``).
FeatureList = Annotated[
    list[FeatureName],
    Field(max_length=MAX_FEATURES, json_schema_extra={"x-kubernetes-list-type": "set"}),
    AfterValidator(_unique),
]


def _quantity_schema(description: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "minimum": 0,
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "description": description,
        }
    )


#: A Kubernetes resource quantity: an integer or a string like ``500m``/``4Gi`` (int-or-string).
Quantity = Annotated[
    Annotated[int, Field(ge=0)] | Annotated[str, Field(max_length=64, pattern=QUANTITY_PATTERN)],
    _quantity_schema("A Kubernetes resource quantity: an integer or a string such as 500m, 2 or 4Gi."),
]

#: A value of a free parameter map: string, integer, number or boolean (never an object or a list).
ScalarValue = Annotated[
    str | bool | int | float,
    WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True}),
]

#: Kubernetes labels / selector map.
StringMap = Annotated[dict[str, Annotated[str, Field(max_length=MAX_NAME)]], Field(max_length=MAX_MAP)]


def default_object(factory: Callable[[], ApiModel]) -> Any:
    """A field defaulting to a fresh ``factory()``, in Python and (as its JSON body) in the CRD.

    The CRD default is the complete defaulted object rather than ``{}``: the apiserver checks an object
    default against the node's CEL rules *without* filling in the nested defaults first, so the rules must
    see every field. Either way a stored object and a Python-parsed body agree.
    """
    return Field(default_factory=factory, json_schema_extra={"default": factory().to_dict()})


def default_list(value: list[Any], **kwargs: Any) -> Any:
    """A list field with a literal default (copied per instance), published as the CRD default."""
    return Field(default_factory=lambda: list(value), json_schema_extra={"default": list(value)}, **kwargs)


# --------------------------------------------------------------------------------------------------------
# Conditions (shaped exactly like metav1.Condition)
# --------------------------------------------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]

#: Condition types used across kinds.
READY: Final = "Ready"
VALID: Final = "Valid"


def utcnow() -> dt.datetime:
    """Now, in UTC, truncated to seconds (the precision of metav1.Time)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Condition(StatusModel):
    """Condition contains details for one aspect of the current state of this object (metav1.Condition)."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)
    """Type of condition in CamelCase, e.g. Ready, Valid, Succeeded."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    observed_generation: int | None = Field(None, ge=0, json_schema_extra={"format": "int64"})
    """The .metadata.generation that the condition was set based upon."""
    last_transition_time: dt.datetime
    """The last time the condition transitioned from one status to another."""
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    """A programmatic identifier (CamelCase) for the condition's last transition, e.g. ImagePullBackOff."""
    message: str = Field(max_length=32768)
    """A human readable message with details about the transition (may be empty)."""


#: ``x-kubernetes-list-*`` markers of every ``conditions`` list: a map keyed by ``type``.
CONDITIONS_LIST: Final[dict[str, Any]] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def conditions_field() -> Any:
    """The ``conditions`` field of a status."""
    return Field(default_factory=list, max_length=32, json_schema_extra=dict(CONDITIONS_LIST))


def set_condition(
    conditions: Iterable[Condition],
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
    now: dt.datetime | None = None,
) -> list[Condition]:
    """Return ``conditions`` with condition ``type`` set (the list is not modified).

    ``lastTransitionTime`` moves only when the status changes, like ``meta.SetStatusCondition``; the order
    of the other conditions is kept and a new type is appended.
    """
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type:
            out.append(cond)
            continue
        found = True
        changed = cond.status != status
        out.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                observed_generation=observed_generation,
                last_transition_time=(now or utcnow()) if changed else cond.last_transition_time,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                observed_generation=observed_generation,
                last_transition_time=now or utcnow(),
            )
        )
    return out


def find_condition(conditions: Iterable[Condition], type: str) -> Condition | None:
    """The condition of ``type``, if present."""
    return next((c for c in conditions if c.type == type), None)


# --------------------------------------------------------------------------------------------------------
# References, secrets, environment
# --------------------------------------------------------------------------------------------------------


class SecretRef(ApiModel):
    """A Secret in the object's namespace whose keys are exposed as environment variables."""

    name: SecretName
    """Name of the Secret."""
    keys: (
        list[Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=CONFIG_KEY_PATTERN)]] | None
    ) = Field(None, max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"})
    """Keys of the Secret to expose, each as an environment variable of the same name (for MLflow:
    MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN, and AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY for an S3 artifact store). Default: every key of the Secret."""


class KeySelector(ApiModel):
    """One key of a Secret or ConfigMap in the object's namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap."""
    key: str = Field(min_length=1, max_length=MAX_NAME, pattern=CONFIG_KEY_PATTERN)
    """The key to read."""


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from: exactly one of secretKeyRef or configMapKeyRef."""

    secret_key_ref: KeySelector | None = None
    """A key of a Secret."""
    config_map_key_ref: KeySelector | None = None
    """A key of a ConfigMap."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="has(self.secretKeyRef) != has(self.configMapKeyRef)",
            message="valueFrom: set exactly one of secretKeyRef or configMapKeyRef",
            check=lambda s: (s.secret_key_ref is None) != (s.config_map_key_ref is None),
        ),
    )


class EnvVar(ApiModel):
    """An environment variable of the container: a literal value or a reference."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    """Name of the variable."""
    value: str | None = Field(None, max_length=32768)
    """Literal value."""
    value_from: EnvVarSource | None = None
    """Take the value from a Secret or ConfigMap key instead."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="!(has(self.value) && has(self.valueFrom))",
            message="env[].value and env[].valueFrom are mutually exclusive",
            check=lambda e: e.value is None or e.value_from is None,
            field_path=".valueFrom",
        ),
    )


ENV_LIST: Final[dict[str, Any]] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class MlflowConnection(ApiModel):
    """How to reach the MLflow tracking server and model registry."""

    tracking_uri: str | None = Field(
        None, min_length=1, max_length=MAX_URI, examples=["http://mlflow.mlflow:5000"]
    )
    """MLflow tracking URI, e.g. http://mlflow.mlflow.svc:5000. Default: the operator's configured tracking
    URI (its MLFLOW_TRACKING_URI)."""
    secret_ref: SecretRef | None = None
    """Credentials for MLflow and its artifact store, by reference to a Secret; never inline."""


# --------------------------------------------------------------------------------------------------------
# Resources and scheduling
# --------------------------------------------------------------------------------------------------------

#: Node label the gpuType fields are matched against (set by NVIDIA GPU feature discovery).
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
#: Extended resource requested per GPU.
GPU_RESOURCE: Final = "nvidia.com/gpu"


class ComputeResources(ApiModel):
    """Compute resources of one pod; requests and limits are both set to these values."""

    cpu: Quantity = "1"
    """CPU of one pod, e.g. 500m or 4."""
    memory: Quantity = "2Gi"
    """Memory of one pod, e.g. 512Mi or 16Gi."""
    gpus: int = Field(0, ge=0, le=16)
    """Number of GPUs (nvidia.com/gpu) of one pod; 0 runs on CPU."""
    gpu_type: str | None = Field(
        None, min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
    )
    """GPU model to run on, matched against the node label nvidia.com/gpu.product
    (e.g. NVIDIA-H100-80GB-HBM3). Requires gpus > 0."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="!has(self.gpuType) || self.gpus > 0",
            message="resources.gpuType requires resources.gpus > 0",
            check=lambda r: r.gpu_type is None or r.gpus > 0,
            field_path=".gpuType",
        ),
    )


class Toleration(ApiModel):
    """A toleration of node taints (the shape of core/v1 Toleration)."""

    key: str | None = Field(None, max_length=316)
    """Taint key the toleration applies to; empty matches all keys (then operator must be Exists)."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists (any value) or Equal (value must match)."""
    value: str | None = Field(None, max_length=63)
    """Taint value to match; must be empty with operator Exists."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = Field(
        None, ge=INT64_MIN, le=INT64_MAX, json_schema_extra={"format": "int64"}
    )
    """For effect NoExecute: how long the pod stays bound after the taint appears; unset = forever."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="self.operator != 'Exists' || !has(self.value) || self.value == ''",
            message="tolerations[].value must be empty when tolerations[].operator is Exists",
            check=lambda t: t.operator != "Exists" or not t.value,
            field_path=".value",
        ),
        Rule(
            rule="(has(self.key) && self.key != '') || self.operator == 'Exists'",
            message="tolerations[].operator must be Exists when tolerations[].key is empty",
            check=lambda t: bool(t.key) or t.operator == "Exists",
            field_path=".operator",
        ),
        Rule(
            rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="tolerations[].tolerationSeconds requires tolerations[].effect NoExecute",
            check=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
            field_path=".tolerationSeconds",
        ),
    )


class Scheduling(ApiModel):
    """Where the pods may run."""

    node_selector: StringMap | None = None
    """Node labels the pods must match (added to the GPU type selector)."""
    tolerations: list[Toleration] | None = Field(None, max_length=32)
    """Taints the pods tolerate, e.g. nvidia.com/gpu:NoSchedule on GPU nodes."""
    priority_class_name: str | None = Field(
        None, min_length=1, max_length=MAX_NAME, pattern=DNS1123_SUBDOMAIN_PATTERN
    )
    """PriorityClass of the pods."""


class ObjectMetaTemplate(ApiModel):
    """Labels and annotations to put on a created object."""

    labels: StringMap | None = None
    """Labels of the created object (the operator adds its own mlops.dev/ labels)."""
    annotations: (
        Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=MAX_MAP)] | None
    ) = None
    """Annotations of the created object."""


class ObjectMeta(BaseModel):
    """The parts of metadata the models read; everything else is kept as is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str | None = None
    namespace: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


def is_dns1035_label(value: str) -> bool:
    """Whether ``value`` is a DNS-1035 label (a valid Service name)."""
    return len(value) <= MAX_DNS_LABEL and re.fullmatch(DNS1035_LABEL_PATTERN, value) is not None


def name_is_dns1035_label(kind: str, children: str) -> Rule:
    """Root rule of a kind whose name becomes the name of Services (and pod hostnames): the apiserver
    allows any DNS-1123 subdomain as a custom resource's name (``model.v2``, ``9lives``), but a Service name
    must be a DNS-1035 label, so such an object could never get its children. Like KServe's
    InferenceService, refuse the name up front."""
    return Rule(
        rule=f"size(self.metadata.name) <= {MAX_DNS_LABEL} && "
        f"self.metadata.name.matches('{DNS1035_LABEL_PATTERN}')",
        message=f"metadata.name of a {kind} must be a DNS-1035 label: at most {MAX_DNS_LABEL} characters, "
        "lowercase letters, digits and '-', starting with a letter and ending with a letter or digit "
        f"(it names {children})",
        check=lambda obj: obj.metadata.name is None or is_dns1035_label(obj.metadata.name),
        reason="FieldValueInvalid",
    )


# --------------------------------------------------------------------------------------------------------
# Gates (TrainingJob registration gate, DriftPolicy promotion gate)
# --------------------------------------------------------------------------------------------------------

ComparisonOp = Literal[">=", ">", "<=", "<"]

#: Metrics that are ratios in [0, 1]: a gate threshold on them outside that range can never be met.
RATIO_METRIC_PATTERN: Final = r"(^|[_./-])(accuracy|precision|recall|f1|auc|roc_auc)$"


def compare(value: float, op: ComparisonOp, threshold: float) -> bool:
    """``value <op> threshold``."""
    if op == ">=":
        return value >= threshold
    if op == ">":
        return value > threshold
    if op == "<=":
        return value <= threshold
    return value < threshold


class MetricThreshold(ApiModel):
    """A threshold on one metric the training run logged, e.g. val_accuracy >= 0.9."""

    name: MetricName = Field(examples=["val_accuracy"])
    """Metric name as logged to MLflow. The built-in trainer logs val_loss plus val_accuracy and val_f1
    (classification) or val_rmse, val_mae and val_r2 (regression), and the same with a test_ prefix when
    dataset.split.test > 0."""
    op: ComparisonOp = ">="
    """Comparison: >=, >, <= or <."""
    threshold: float
    """The value the metric is compared with."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule=f"!self.name.matches('{RATIO_METRIC_PATTERN}') || "
            "(self.threshold >= 0.0 && self.threshold <= 1.0)",
            message="gate.metrics[].threshold must be between 0 and 1 for a ratio metric "
            "(accuracy, precision, recall, f1, auc)",
            check=lambda m: not re.search(RATIO_METRIC_PATTERN, m.name) or 0.0 <= m.threshold <= 1.0,
            field_path=".threshold",
        ),
    )

    def passed(self, value: float) -> bool:
        """Whether ``value`` satisfies this threshold."""
        return compare(value, self.op, self.threshold)


class MustBeat(ApiModel):
    """Compare the new model with the version currently holding an alias, on the same held-out data."""

    alias: Alias = "champion"
    """Alias of the version to beat. If no version holds it yet, the comparison passes."""
    metric: MetricName
    """Metric both versions are scored on."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether higher (maximize) or lower (minimize) values of metric are better."""
    margin: float = Field(0.0, ge=0)
    """How much better the new version must be, in metric units (0 = at least as good)."""

    def beats(self, new: float, incumbent: float) -> bool:
        """Whether ``new`` beats ``incumbent`` by at least ``margin``."""
        if self.direction == "maximize":
            return new >= incumbent + self.margin
        return new <= incumbent - self.margin


class GateSpec(ApiModel):
    """Conditions a new model version must meet; set metrics, mustBeat or both."""

    metrics: list[MetricThreshold] | None = Field(
        None,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "op"]},
    )
    """Thresholds every one of which must hold."""
    must_beat: MustBeat | None = None
    """Beat the version holding an alias (usually champion)."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="(has(self.metrics) && size(self.metrics) > 0) || has(self.mustBeat)",
            message="gate: set gate.metrics and/or gate.mustBeat (omit gate entirely for no gate)",
            check=lambda g: bool(g.metrics) or g.must_beat is not None,
        ),
    )


# --------------------------------------------------------------------------------------------------------
# What crdgen needs to know about a kind
# --------------------------------------------------------------------------------------------------------

PrinterType = Literal["string", "integer", "number", "boolean", "date"]


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry (``kubectl get`` column)."""

    name: str
    json_path: str
    type: PrinterType
    description: str
    priority: int = 0
    format: str | None = None

    def to_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            out["priority"] = self.priority
        if self.format:
            out["format"] = self.format
        return out


AGE_COLUMN: Final = PrinterColumn(
    "Age",
    ".metadata.creationTimestamp",
    "date",
    "Time since the object was created.",
)


@dataclass(frozen=True)
class KindInfo:
    """Everything about a kind that is not in its spec/status models: names, columns, CRD-only rules."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[ApiModel]
    status: type[StatusModel]
    printer_columns: tuple[PrinterColumn, ...]
    #: JSON paths usable with ``kubectl get --field-selector``.
    selectable_fields: tuple[str, ...] = ()
    #: Rules on ``.spec`` that only make sense on the stored kind itself (immutability: ``oldSelf``);
    #: kept out of the spec model so that a TrainingJob spec embedded as a template stays editable.
    spec_transition_rules: tuple[Rule, ...] = field(default=())
    #: Rules of the whole object (the CRD schema's root, where CEL can read ``metadata.name``); the resource
    #: model carries the same rules as its ``cel_rules``.
    root_rules: tuple[Rule, ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"
