"""DriftPolicy: watch a ModelDeployment's live inputs for drift against the training data's reference
profile, and when drift is sustained, retrain from a TrainingJob template and (optionally) promote.

Statistical tests and their default thresholds follow Evidently's conventions: p-value based tests (ks for
numerical, chi2 for categorical features) and distances (psi, wasserstein, jensenshannon) with a score
threshold; ``auto`` picks per feature by type and sample size.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Final, Literal

from pydantic import Field

from mlops_operator.drift.methods import DEFAULT_THRESHOLDS, P_VALUE_METHODS, DriftMethod

from .common import (
    AGE_COLUMN,
    Alias,
    ApiModel,
    Condition,
    FeatureList,
    FeatureName,
    GateSpec,
    KindInfo,
    ModelVersion,
    ObjectMeta,
    ObjectMetaTemplate,
    ObjectName,
    PrinterColumn,
    Rule,
    StatusModel,
    conditions_field,
    plain,
)
from .trainingjob import TrainingJobSpec

KIND: Final = "DriftPolicy"

#: How many evaluations status.history keeps.
MAX_HISTORY: Final = 50

_P_VALUE_LIST: Final = "['ks', 'chi2']"


def _threshold_ok(method: str, threshold: float | None) -> bool:
    return threshold is None or method not in P_VALUE_METHODS or 0.0 < threshold < 1.0


class TargetRef(ApiModel):
    """The ModelDeployment (in the same namespace) whose traffic is watched."""

    name: ObjectName = Field(examples=["iris"])
    """Name of the ModelDeployment."""


class FeatureOverride(ApiModel):
    """A different method and/or threshold for one feature."""

    feature: FeatureName
    """The feature (model input) this override applies to."""
    method: DriftMethod | None = None
    """Method for this feature. Default: spec.method."""
    threshold: float | None = Field(None, ge=0)
    """Threshold for this feature. Default: spec.threshold, or the method's default."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule=f"!has(self.method) || !has(self.threshold) || !(self.method in {_P_VALUE_LIST}) || "
            "(self.threshold > 0.0 && self.threshold < 1.0)",
            message="overrides[].threshold is a p-value for method ks or chi2 and must be between 0 and 1 "
            "(exclusive)",
            check=lambda o: o.method is None or _threshold_ok(o.method, o.threshold),
            field_path=".threshold",
        ),
        Rule(
            rule="!has(self.method) || self.method != 'auto' || !has(self.threshold)",
            message="overrides[].threshold requires an explicit overrides[].method (auto picks a method, and "
            "its threshold, per feature)",
            check=lambda o: o.method != "auto" or o.threshold is None,
            field_path=".threshold",
        ),
    )


class PrometheusSource(ApiModel):
    """Read the model server's per-feature histograms from Prometheus."""

    url: str = Field(
        min_length=1, max_length=2048, pattern=r"^https?://.+$", examples=["http://prometheus:9090"]
    )
    """Base URL of the Prometheus HTTP API, e.g. http://prometheus-operated.monitoring:9090."""


class DriftSource(ApiModel):
    """Where live feature values come from."""

    prometheus: PrometheusSource
    """The model server's per-feature histograms in Prometheus."""


class TrainingJobTemplate(ApiModel):
    """The TrainingJob to create on sustained drift."""

    metadata: ObjectMetaTemplate | None = None
    """Labels and annotations of the created TrainingJob (its name is <policy>-retrain-<n>)."""
    spec: TrainingJobSpec
    """Spec of the created TrainingJob, as in a TrainingJob (point dataset.uri at fresh data)."""


class RetrainAction(ApiModel):
    """Retrain by creating a TrainingJob."""

    template: TrainingJobTemplate
    """The TrainingJob to create."""


class DriftAction(ApiModel):
    """What to do when drift is sustained for forSeconds."""

    retrain: RetrainAction
    """Create a TrainingJob from a template."""
    cooldown_seconds: int = Field(86400, ge=0, le=31536000)
    """Seconds after a retrain during which no other retrain starts."""
    max_retrains_per_day: int = Field(1, ge=0, le=24)
    """At most this many retrains per UTC day (0: never retrain, only report)."""


class PromotionSpec(ApiModel):
    """What happens to a retrained version that passed its TrainingJob's gate."""

    mode: Literal["auto", "manual"] = "manual"
    """auto: move alias to the new version when it passes gate. manual: leave it registered (with the
    template's registration.alias, e.g. challenger) for a human to promote."""
    alias: Alias = "champion"
    """The alias promotion moves (the one the ModelDeployment follows)."""
    gate: GateSpec | None = None
    """Conditions checked before moving alias, in addition to the TrainingJob's own gate."""


class DriftPolicySpec(ApiModel):
    """Desired state of a DriftPolicy."""

    target_ref: TargetRef
    """The ModelDeployment to watch."""
    features: FeatureList | None = None
    """Features to watch. Default: every input of the served model's signature."""
    method: DriftMethod = "auto"
    """Drift test: auto (ks or chi2 for small samples, wasserstein or jensenshannon for large ones, by
    feature type), psi, ks, chi2, wasserstein or jensenshannon."""
    threshold: float | None = Field(None, ge=0)
    """Per-feature drift threshold: for ks and chi2 the p-value below which a feature drifted, for the
    distances the score above which it drifted. Default per method: psi 0.1, ks 0.05, chi2 0.05,
    wasserstein 0.1 (in reference standard deviations), jensenshannon 0.1. Requires an explicit method."""
    overrides: list[FeatureOverride] | None = Field(
        None,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["feature"]},
    )
    """Per-feature method and threshold."""
    drift_share: float = Field(0.5, gt=0, le=1)
    """Fraction of watched features that must drift for the model to count as drifted."""
    window_seconds: int = Field(3600, ge=60, le=2592000)
    """Live samples from this many seconds back are compared with the reference."""
    min_samples: int = Field(500, ge=1, le=100000000)
    """Evaluations with fewer live samples than this are skipped (reported, never drifted)."""
    interval_seconds: int = Field(300, ge=10, le=86400)
    """Seconds between evaluations."""
    for_seconds: int = Field(0, ge=0, le=2592000)
    """Drift must persist this long before action is taken (0: act on the first drifted evaluation)."""
    source: DriftSource | None = None
    """Where live feature values come from. Default: the sampled requests in the target's logging sink."""
    action: DriftAction | None = None
    """What to do on sustained drift. Default: only report it in status and events."""
    promotion: PromotionSpec | None = None
    """Promotion of retrained versions. Requires action."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule=f"!has(self.threshold) || !(self.method in {_P_VALUE_LIST}) || "
            "(self.threshold > 0.0 && self.threshold < 1.0)",
            message="threshold is a p-value for method ks or chi2 and must be between 0 and 1 (exclusive)",
            check=lambda s: _threshold_ok(s.method, s.threshold),
            field_path=".threshold",
        ),
        Rule(
            rule="self.method != 'auto' || !has(self.threshold)",
            message="threshold requires an explicit method (with method auto the threshold is chosen per "
            "feature); set method or remove threshold",
            check=lambda s: s.method != "auto" or s.threshold is None,
            field_path=".threshold",
        ),
        Rule(
            rule=f"!has(self.overrides) || !has(self.threshold) || !(self.method in {_P_VALUE_LIST}) || "
            "self.overrides.all(o, has(o.method) || !has(o.threshold) || "
            "(o.threshold > 0.0 && o.threshold < 1.0))",
            message="overrides[].threshold without its own method inherits method (ks or chi2: a p-value) "
            "and must be between 0 and 1 (exclusive)",
            check=lambda s: (
                s.overrides is None
                or all(o.method is not None or _threshold_ok(s.method, o.threshold) for o in s.overrides)
            ),
            field_path=".overrides",
        ),
        Rule(
            rule="!has(self.features) || !has(self.overrides) || "
            "self.overrides.all(o, o.feature in self.features)",
            message="overrides[].feature must be one of features",
            check=lambda s: (
                s.features is None or s.overrides is None or all(o.feature in s.features for o in s.overrides)
            ),
            field_path=".overrides",
        ),
        Rule(
            rule="!has(self.promotion) || has(self.action)",
            message="promotion requires action.retrain: without retraining there is nothing to promote",
            check=lambda s: s.promotion is None or s.action is not None,
            field_path=".promotion",
        ),
        Rule(
            rule="!has(self.promotion) || self.promotion.mode != 'auto' || has(self.promotion.gate) || "
            "(has(self.action) && has(self.action.retrain.template.spec.gate))",
            message="promotion.mode auto requires a gate: set promotion.gate or "
            "action.retrain.template.spec.gate",
            check=lambda s: (
                s.promotion is None
                or s.promotion.mode != "auto"
                or s.promotion.gate is not None
                or (s.action is not None and s.action.retrain.template.spec.gate is not None)
            ),
            field_path=".promotion.mode",
        ),
        Rule(
            rule="!has(self.promotion) || !has(self.action) || "
            "!has(self.action.retrain.template.spec.registration) || "
            "!has(self.action.retrain.template.spec.registration.alias) || "
            "self.action.retrain.template.spec.registration.alias != self.promotion.alias",
            message="action.retrain.template.spec.registration.alias must differ from promotion.alias: the "
            "retrained version would take the alias at registration, before the promotion gate",
            check=lambda s: (
                s.promotion is None
                or s.action is None
                or s.action.retrain.template.spec.registration is None
                or s.action.retrain.template.spec.registration.alias != s.promotion.alias
            ),
            field_path=".action.retrain.template.spec.registration.alias",
        ),
    )

    def threshold_for(self, feature: str, method: str) -> float:
        """Threshold applied to ``feature`` evaluated with ``method``: the feature's override, else
        spec.threshold when it is meant for ``method`` (spec.method itself, or both are p-value tests),
        else the method's default. A psi threshold is never handed to a feature overridden to ks (the
        drift engine's ``DriftConfig.threshold_for`` resolves the same way)."""
        for o in self.overrides or ():
            if o.feature == feature and o.threshold is not None:
                return o.threshold
        if self.threshold is not None and self.method != "auto":
            same_family = self.method in P_VALUE_METHODS and method in P_VALUE_METHODS
            if method == self.method or same_family:
                return self.threshold
        return DEFAULT_THRESHOLDS[method]

    def method_for(self, feature: str) -> DriftMethod:
        """Method configured for ``feature`` (may be auto)."""
        for o in self.overrides or ():
            if o.feature == feature and o.method is not None:
                return o.method
        return self.method


# --------------------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------------------


class FeatureScore(StatusModel):
    """The drift result of one feature."""

    feature: FeatureName
    """Feature name."""
    method: str = Field(max_length=32)
    """Method used (auto resolved), e.g. ks."""
    score: float
    """Test statistic or distance."""
    p_value: float | None = None
    """p-value, for ks and chi2."""
    threshold: float | None = None
    """Threshold applied."""
    drifted: bool
    """Whether this feature drifted."""


class Evaluation(StatusModel):
    """One drift evaluation."""

    time: dt.datetime
    """When it ran."""
    model_version: ModelVersion | None = None
    """Model version whose reference profile was compared."""
    samples: int = Field(0, ge=0)
    """Live samples compared."""
    drifted_share: float | None = Field(None, ge=0, le=1)
    """Fraction of watched features that drifted."""
    drifted: bool = False
    """driftedShare >= spec.driftShare (and enough samples)."""
    message: str | None = Field(None, max_length=4096)
    """Why an evaluation was skipped or failed, e.g. 120 samples < minSamples 500."""
    feature_scores: list[FeatureScore] = Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["feature"]},
    )
    """Per-feature results."""


class HistoryEntry(StatusModel):
    """A past evaluation, summarised."""

    time: dt.datetime
    samples: int = Field(0, ge=0)
    drifted_share: float | None = Field(None, ge=0, le=1)
    drifted: bool = False
    action: str | None = Field(None, max_length=256)
    """What was done, e.g. Retrain <name> or Promoted v4."""


class RetrainRecord(StatusModel):
    """The last TrainingJob created by this policy."""

    name: str = Field(max_length=253)
    """Name of the TrainingJob."""
    time: dt.datetime
    """When it was created."""
    reason: str | None = Field(None, max_length=4096)
    """The drift that triggered it, e.g. 3/4 features drifted (petal_length ks p=0.001)."""


class PromotionRecord(StatusModel):
    """The last promotion done (or awaited) by this policy."""

    version: ModelVersion
    """The promoted version."""
    previous_version: ModelVersion | None = None
    """The version that held the alias before."""
    alias: str = Field(max_length=255)
    time: dt.datetime
    pending: bool = False
    """True while a manual promotion waits for a human."""


class DriftPolicyStatus(StatusModel):
    """Observed state of a DriftPolicy."""

    conditions: list[Condition] = conditions_field()
    """Latest observations: Valid, Ready, Drifted, Retraining."""
    observed_generation: int | None = Field(None, ge=0, json_schema_extra={"format": "int64"})
    """metadata.generation this status describes."""
    drifted: bool | None = None
    """Whether the last evaluation found drift."""
    drifting_since: dt.datetime | None = None
    """Start of the current run of drifted evaluations."""
    last_evaluation: Evaluation | None = None
    """The last evaluation, per feature."""
    last_retrain: RetrainRecord | None = None
    """The last TrainingJob created."""
    retrains_today: int = Field(0, ge=0)
    """TrainingJobs created on retrainsDay."""
    retrains_day: dt.date | None = None
    """UTC day retrainsToday counts."""
    last_promotion: PromotionRecord | None = None
    """The last promotion."""
    history: list[HistoryEntry] = Field(default_factory=list, max_length=MAX_HISTORY)
    """Latest evaluations, newest first (at most 50)."""


class DriftPolicy(ApiModel):
    """DriftPolicy watches a ModelDeployment's live inputs for drift against the training data, and on
    sustained drift retrains from a TrainingJob template and promotes the result."""

    api_version: Literal["mlops.dev/v1alpha1"] = "mlops.dev/v1alpha1"
    kind: Literal["DriftPolicy"] = "DriftPolicy"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DriftPolicySpec
    status: DriftPolicyStatus | None = None

    @classmethod
    def from_body(cls, body: Any) -> DriftPolicy:
        """Parse a whole object (e.g. a kopf body)."""
        return cls.model_validate(plain(body))


INFO: Final = KindInfo(
    kind=KIND,
    plural="driftpolicies",
    short_names=("dp",),
    description=DriftPolicy.__doc__ or "",
    spec=DriftPolicySpec,
    status=DriftPolicyStatus,
    printer_columns=(
        PrinterColumn("Target", ".spec.targetRef.name", "string", "ModelDeployment watched."),
        PrinterColumn("Drifted", ".status.drifted", "boolean", "Whether the last evaluation found drift."),
        PrinterColumn(
            "Score",
            ".status.lastEvaluation.driftedShare",
            "number",
            "Fraction of watched features that drifted at the last evaluation.",
        ),
        PrinterColumn(
            "Samples", ".status.lastEvaluation.samples", "integer", "Live samples compared.", priority=1
        ),
        PrinterColumn("Last Retrain", ".status.lastRetrain.name", "string", "Last TrainingJob created."),
        AGE_COLUMN,
    ),
    selectable_fields=(".spec.targetRef.name",),
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "INFO",
    "KIND",
    "MAX_HISTORY",
    "P_VALUE_METHODS",
    "DriftAction",
    "DriftMethod",
    "DriftPolicy",
    "DriftPolicySpec",
    "DriftPolicyStatus",
    "DriftSource",
    "Evaluation",
    "FeatureOverride",
    "FeatureScore",
    "HistoryEntry",
    "PrometheusSource",
    "PromotionRecord",
    "PromotionSpec",
    "RetrainAction",
    "RetrainRecord",
    "TargetRef",
    "TrainingJobTemplate",
]
