"""TrainingJob: train a model on a dataset (CPU, one GPU or many nodes x GPUs), log it to MLflow, gate it
and register it as a new model version.

Shaped after Kubeflow Trainer's TrainJob (trainer + resources per node + numNodes/numProcPerNode, suspend for
Kueue), with the model registry step built in.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import AfterValidator, Field

from .common import (
    AGE_COLUMN,
    ENV_LIST,
    INT32_MAX,
    INT64_MAX,
    Alias,
    ApiModel,
    ComputeResources,
    Condition,
    EnvVar,
    FeatureList,
    FeatureName,
    GateSpec,
    Image,
    KindInfo,
    MetricName,
    MlflowConnection,
    ModelName,
    ModelVersion,
    ObjectMeta,
    ObjectMetaTemplate,
    ObjectName,
    PrinterColumn,
    Rule,
    ScalarValue,
    Scheduling,
    StatusModel,
    StorageUri,
    StringMap,
    Text,
    conditions_field,
    default_list,
    default_object,
    name_is_dns1035_label,
    plain,
)
from .common import (
    METRIC_NAME_PATTERN as _PARAM_KEY_PATTERN,
)

KIND: Final = "TrainingJob"

TrainingPhase = Literal["Pending", "Queued", "Suspended", "Running", "Succeeded", "Failed"]
#: Phases after which nothing changes any more.
FINISHED_PHASES: Final[frozenset[str]] = frozenset({"Succeeded", "Failed"})


# --------------------------------------------------------------------------------------------------------
# spec
# --------------------------------------------------------------------------------------------------------


class ModelSpec(ApiModel):
    """The registered model this job produces a new version of."""

    name: ModelName = Field(examples=["iris-classifier"])
    """Name of the registered model in the MLflow model registry (created on first use)."""
    description: Text | None = None
    """Description set on the new model version."""
    tags: StringMap | None = None
    """Tags set on the new model version (the operator adds lineage tags of its own)."""


class SplitSpec(ApiModel):
    """How the dataset is split into train / validation / test rows (shuffled with seed)."""

    validation: float = Field(0.2, ge=0, lt=1)
    """Fraction of rows held out for validation (the val_ metrics, early stopping)."""
    test: float = Field(0.0, ge=0, lt=1)
    """Fraction of rows held out for the final test (the test_ metrics, the gate's mustBeat comparison)."""
    seed: int = Field(42, ge=0, le=2**31 - 1)
    """Seed of the shuffle, so that the same dataset always splits the same way."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="self.validation + self.test < 1.0",
            message="dataset.split: validation + test must be < 1 so that rows are left for training",
            check=lambda s: s.validation + s.test < 1.0,
        ),
    )


_FORMAT_SUFFIXES: Final = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class DatasetSpec(ApiModel):
    """The tabular dataset to train on; the trainer records its sha256 digest for lineage."""

    uri: StorageUri = Field(examples=["pvc://datasets/iris/iris.csv", "s3://bucket/iris.parquet"])
    """Where the data is: pvc://<claim>/<path> (a PersistentVolumeClaim in the namespace), s3://, gs://,
    http(s)://, or an absolute path / file:// URI inside the container image."""
    format: Literal["csv", "parquet"] | None = None
    """File format. Default: from the URI's suffix (.csv, .parquet, .pq), else csv."""
    target: FeatureName = Field(examples=["species"])
    """Column to predict."""
    features: FeatureList | None = None
    """Columns used as inputs. Default: every column except target."""
    split: SplitSpec = default_object(SplitSpec)
    """Train / validation / test split."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="!has(self.features) || !(self.target in self.features)",
            message="dataset.features must not contain dataset.target",
            check=lambda d: d.features is None or d.target not in d.features,
            field_path=".features",
        ),
    )

    def resolved_format(self) -> Literal["csv", "parquet"]:
        """``format``, or the one the URI's suffix implies (csv when it implies none)."""
        if self.format is not None:
            return self.format
        suffix = PurePosixPath(self.uri.split("?", 1)[0]).suffix.lower()
        return "parquet" if _FORMAT_SUFFIXES.get(suffix) == "parquet" else "csv"


class EarlyStopping(ApiModel):
    """Stop training when a validation metric stops improving."""

    metric: MetricName = "val_loss"
    """Validation metric to watch."""
    direction: Literal["minimize", "maximize"] = "minimize"
    """Whether lower (minimize) or higher (maximize) values of metric are better."""
    patience: int = Field(5, ge=1, le=10000)
    """Epochs without improvement before training stops."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest change of metric that counts as an improvement."""


class BuiltinTrainer(ApiModel):
    """The built-in trainer: a PyTorch multilayer perceptron on the tabular dataset (DDP-aware)."""

    task: Literal["classification", "regression"]
    """classification (target is a class label) or regression (target is a number)."""
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = default_list([64, 64], max_length=16)
    """Widths of the hidden layers."""
    epochs: int = Field(20, ge=1, le=100000)
    """Passes over the training rows."""
    batch_size: int = Field(64, ge=1, le=1048576)
    """Rows per optimizer step per process (the global batch is batchSize x nodes x procPerNode)."""
    lr: float = Field(0.001, gt=0, le=10)
    """Learning rate."""
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    """Optimizer."""
    weight_decay: float = Field(0.0, ge=0, le=1)
    """L2 weight decay."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout probability after each hidden layer."""
    seed: int = Field(42, ge=0, le=2**31 - 1)
    """Seed of weight initialisation and batch order."""
    early_stopping: EarlyStopping | None = None
    """Stop early when a validation metric stops improving. Default: train all epochs."""


def _param_keys(params: dict[str, Any]) -> dict[str, Any]:
    bad = [k for k in params if len(k) > 250 or not re.fullmatch(_PARAM_KEY_PATTERN, k)]
    if bad:
        raise ValueError(
            f"trainer.hyperparameters keys {bad} are not valid MLflow parameter names "
            "(letters, digits, _ - . / ; at most 250 characters)"
        )
    return params


#: What a CRD cannot say about ``hyperparameters``: its values are untyped (string, number or boolean: a
#: structural schema has no such type, so they are ``x-kubernetes-preserve-unknown-fields``), and the
#: apiserver refuses any CEL rule on a map of untyped values ("unable to convert structural schema to CEL
#: declarations"), so the keys and value types are checked here only (Valid=False).
Hyperparameters = Annotated[
    dict[str, ScalarValue],
    Field(max_length=128),
    AfterValidator(_param_keys),
]


class TrainerSpec(ApiModel):
    """What runs: the built-in trainer, or your own code (command and/or script) in an image."""

    builtin: BuiltinTrainer | None = None
    """Use the built-in trainer. Mutually exclusive with command and script."""
    image: Image | None = None
    """Image of your code. Default: spec.image. Only for command/script (the built-in trainer runs in
    spec.image)."""
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(None, min_length=1, max_length=64)
    """Entrypoint of your code, e.g. [python, -m, mytrainer]. Under nodes x procPerNode > 1 the operator
    sets the torchrun rendezvous environment (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, ...)."""
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(None, max_length=256)
    """Arguments of command or script."""
    script: str | None = Field(None, min_length=1, max_length=65536)
    """Inline Python source, run with torchrun (one process per GPU). Mutually exclusive with command."""
    env: list[EnvVar] | None = Field(None, max_length=64, json_schema_extra=dict(ENV_LIST))
    """Extra environment variables of the training containers."""
    hyperparameters: Hyperparameters | None = Field(None, examples=[{"lr": 0.01, "optimizer": "adam"}])
    """Free parameters (string, number or boolean values), logged to MLflow as run parameters and given to
    the training code as a JSON object in the MLOPS_HYPERPARAMETERS environment variable. Keys must be
    MLflow parameter names and values scalars; the apiserver cannot check either (a CRD has no type for
    "string, number or boolean"), the operator does and reports a violation as condition Valid=False."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            rule="has(self.builtin) != (has(self.command) || has(self.script))",
            message="trainer: set exactly one of trainer.builtin (the built-in trainer) or "
            "user code (trainer.command or trainer.script)",
            check=lambda t: (t.builtin is not None) != (t.command is not None or t.script is not None),
        ),
        Rule(
            rule="!(has(self.command) && has(self.script))",
            message="trainer.command and trainer.script are mutually exclusive "
            "(a script runs with torchrun; pass its arguments in trainer.args)",
            check=lambda t: t.command is None or t.script is None,
            field_path=".script",
        ),
        Rule(
            rule="!has(self.builtin) || !has(self.image)",
            message="trainer.image is only for user code; the built-in trainer runs in spec.image",
            check=lambda t: t.builtin is None or t.image is None,
            field_path=".image",
        ),
        Rule(
            rule="!has(self.builtin) || !has(self.args)",
            message="trainer.args is only for user code; configure the built-in trainer with "
            "trainer.builtin or trainer.hyperparameters",
            check=lambda t: t.builtin is None or t.args is None,
            field_path=".args",
        ),
    )

    @property
    def is_builtin(self) -> bool:
        return self.builtin is not None


#: Most nodes (pods, Job completion indexes) a TrainingJob trains on.
MAX_NODES: Final = 64


class TrainingResources(ComputeResources):
    """Compute resources per node, and how many nodes and processes per node train together (DDP)."""

    nodes: int = Field(1, ge=1, le=MAX_NODES)
    """Number of nodes (pods) that train together."""
    proc_per_node: int | None = Field(None, ge=1, le=64)
    """Processes per node (torchrun --nproc-per-node). Default: gpus, or 1 on CPU."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        *ComputeResources.cel_rules,
        Rule(
            rule="!has(self.procPerNode) || self.gpus == 0 || self.procPerNode <= self.gpus",
            message="resources.procPerNode must not exceed resources.gpus: data-parallel training runs at "
            "most one process per GPU",
            check=lambda r: r.proc_per_node is None or r.gpus == 0 or r.proc_per_node <= r.gpus,
            field_path=".procPerNode",
        ),
    )

    @property
    def effective_proc_per_node(self) -> int:
        """Processes per node that will actually run."""
        if self.proc_per_node is not None:
            return self.proc_per_node
        return max(self.gpus, 1)

    @property
    def world_size(self) -> int:
        """Total number of training processes."""
        return self.nodes * self.effective_proc_per_node

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus


class TrainingScheduling(Scheduling):
    """Where and when the training pods run."""

    queue_name: str | None = Field(
        None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    """Kueue LocalQueue to submit to (sets the kueue.x-k8s.io/queue-name label; Kueue then admits the job
    by unsuspending it)."""
    suspend: bool = False
    """Create the job suspended: no pods run until this is set to false (or Kueue admits it)."""


class CheckpointSpec(ApiModel):
    """Periodic checkpoints, so that a retried or resumed job continues instead of starting over."""

    uri: StorageUri = Field(examples=["pvc://checkpoints/iris"])
    """Directory for checkpoints (pvc://, s3://, gs:// or an absolute path); the job's latest checkpoint
    there is resumed on start."""
    every_epochs: int = Field(1, ge=1, le=10000)
    """Write a checkpoint every this many epochs."""


class RunPolicy(ApiModel):
    """Retries, deadlines and clean-up."""

    backoff_limit: int = Field(3, ge=0, le=100)
    """Retries of failed pods before the job fails."""
    active_deadline_seconds: int | None = Field(
        None, ge=1, le=INT64_MAX, json_schema_extra={"format": "int64"}
    )
    """Fail the job when it has run longer than this (counted from its first start)."""
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, le=INT32_MAX, json_schema_extra={"format": "int32"}
    )
    """Delete the job's pods and other children this long after it finishes; the TrainingJob and its
    status stay. Default: keep them."""
    checkpoint: CheckpointSpec | None = None
    """Periodic checkpoints."""


class RegistrationSpec(ApiModel):
    """How the new model version is registered once the run passes the gate."""

    alias: Alias | None = Field(None, examples=["challenger"])
    """Alias to move to the new version, e.g. challenger (then promote it to champion) or champion
    (deploy at once). Default: register without an alias."""
    tags: StringMap | None = None
    """Extra tags on the new model version."""


class MlflowSpec(MlflowConnection):
    """MLflow tracking server, experiment and credentials of the run."""

    experiment: str | None = Field(None, min_length=1, max_length=500)
    """Experiment the run is logged under. Default: the model name."""


class TrainingJobSpec(ApiModel):
    """Desired state of a TrainingJob."""

    model: ModelSpec
    """The registered model this job produces a new version of."""
    dataset: DatasetSpec
    """The training data."""
    trainer: TrainerSpec
    """The built-in trainer or your code."""
    image: Image | None = None
    """Runtime image of the training pods (PyTorch, MLflow and the built-in trainer). Default: the
    operator's runtime image, ghcr.io/mlops-operator/runtime:<operator version>."""
    resources: TrainingResources = default_object(TrainingResources)
    """Compute per node, number of nodes and processes per node."""
    scheduling: TrainingScheduling = default_object(TrainingScheduling)
    """Node selection, tolerations, priority, queueing and suspension."""
    run_policy: RunPolicy = default_object(RunPolicy)
    """Retries, deadlines, clean-up and checkpoints."""
    gate: GateSpec | None = None
    """Conditions the trained model must meet to be registered. Default: no gate (always registered)."""
    registration: RegistrationSpec | None = None
    """Alias and tags of the registered version."""
    mlflow: MlflowSpec | None = None
    """MLflow tracking server, experiment and credentials. Default: the operator's MLflow settings."""
    service_account_name: ObjectName | None = None
    """ServiceAccount of the training pods (e.g. for workload identity to the dataset bucket)."""
    pod_metadata: ObjectMetaTemplate | None = None
    """Extra labels and annotations of the training pods (e.g. for a service mesh or cost allocation);
    the operator's own mlops.dev/ labels take precedence."""

    @property
    def experiment_name(self) -> str:
        """MLflow experiment of the run."""
        if self.mlflow is not None and self.mlflow.experiment:
            return self.mlflow.experiment
        return self.model.name


def _immutable(field_name: str, *, optional: bool, hint: str) -> Rule:
    if optional:
        rule = (
            f"has(self.{field_name}) == has(oldSelf.{field_name}) && "
            f"(!has(self.{field_name}) || self.{field_name} == oldSelf.{field_name})"
        )
    else:
        rule = f"self.{field_name} == oldSelf.{field_name}"
    return Rule(
        rule=rule,
        message=f"spec.{field_name} is immutable: {hint}",
        field_path=f".{field_name}",
        reason="FieldValueForbidden",
    )


_NEW_JOB: Final = "create a new TrainingJob instead"

#: What cannot change once a TrainingJob exists: everything that determines the trained model and its
#: lineage. scheduling (suspend, queue, placement) and runPolicy stay mutable.
TRANSITION_RULES: Final = (
    _immutable("model", optional=False, hint=_NEW_JOB),
    _immutable("dataset", optional=False, hint=_NEW_JOB),
    _immutable("trainer", optional=False, hint=_NEW_JOB),
    _immutable("resources", optional=False, hint=_NEW_JOB),
    _immutable("image", optional=True, hint=_NEW_JOB),
    _immutable("gate", optional=True, hint=_NEW_JOB),
    _immutable("registration", optional=True, hint=_NEW_JOB),
    _immutable("mlflow", optional=True, hint=_NEW_JOB),
)


# --------------------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------------------


class TrainingProgress(StatusModel):
    """How far training is."""

    epoch: int = Field(0, ge=0)
    """Epochs completed."""
    total_epochs: int | None = Field(None, ge=0)
    """Epochs planned (builtin: trainer.builtin.epochs; user code: what it reports)."""
    summary: str | None = Field(None, max_length=64)
    """Human-readable progress, e.g. 12/20 (the Progress column)."""
    metrics: dict[str, float] | None = Field(None, max_length=64)
    """Latest metrics, e.g. val_loss and val_accuracy."""
    update_time: dt.datetime | None = None
    """When the trainer last reported."""

    @classmethod
    def of(
        cls,
        epoch: int,
        total_epochs: int | None,
        metrics: dict[str, float] | None = None,
        update_time: dt.datetime | None = None,
    ) -> TrainingProgress:
        """Progress with its summary filled in (non-finite metrics are dropped: JSON cannot carry them)."""
        summary = f"{epoch}/{total_epochs}" if total_epochs else str(epoch)
        clean = {k: v for k, v in (metrics or {}).items() if math.isfinite(v)} or None
        return cls(
            epoch=epoch, total_epochs=total_epochs, summary=summary, metrics=clean, update_time=update_time
        )


class Failure(StatusModel):
    """Why the job failed."""

    reason: str = Field(max_length=256)
    """CamelCase reason, e.g. Unschedulable, BackoffLimitExceeded, DeadlineExceeded, OOMKilled, GateFailed."""
    message: str = Field("", max_length=32768)
    """Details, e.g. 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."""
    exit_code: int | None = None
    """Exit code of the failed training container, when there is one."""


class PodCounts(StatusModel):
    """Training pods by phase."""

    pending: int = Field(0, ge=0)
    running: int = Field(0, ge=0)
    succeeded: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)


class MetricResult(StatusModel):
    """One evaluated gate threshold."""

    name: MetricName
    op: str = Field(max_length=2)
    threshold: float
    value: float | None = None
    """The metric's value; unset when the run did not log it (which fails the gate)."""
    passed: bool


class GateResult(StatusModel):
    """Outcome of the gate."""

    passed: bool
    """Whether every threshold held and the mustBeat comparison passed."""
    message: str = Field("", max_length=4096)
    """Summary, e.g. val_accuracy 0.93 >= 0.9; beats champion v3 (0.91) by 0.02."""
    results: list[MetricResult] = Field(default_factory=list, max_length=32)
    """Each threshold."""
    incumbent_version: ModelVersion | None = None
    """Version holding gate.mustBeat.alias at evaluation time."""
    incumbent_value: float | None = None
    """Its score on gate.mustBeat.metric."""


class TrainingJobStatus(StatusModel):
    """Observed state of a TrainingJob."""

    phase: TrainingPhase | None = None
    """Pending, Queued (waiting for Kueue), Suspended, Running, Succeeded or Failed."""
    conditions: list[Condition] = conditions_field()
    """Latest observations: Valid, Ready, Running, Succeeded, GatePassed, Registered, ..."""
    observed_generation: int | None = Field(None, ge=0, json_schema_extra={"format": "int64"})
    """metadata.generation this status describes."""
    start_time: dt.datetime | None = None
    """When training started."""
    completion_time: dt.datetime | None = None
    """When the job succeeded or failed."""
    image: str | None = Field(None, max_length=512)
    """The runtime image the pods ran (spec.image or the operator's default at creation)."""
    progress: TrainingProgress | None = None
    """Epochs and latest metrics."""
    pods: PodCounts | None = None
    """Training pods by phase."""
    mlflow_run_id: str | None = Field(None, max_length=64)
    """MLflow run of this job."""
    dataset_digest: str | None = Field(None, max_length=128)
    """sha256:<hex> of the dataset the run read (lineage)."""
    gate: GateResult | None = None
    """Outcome of spec.gate."""
    model_version: ModelVersion | None = None
    """Registered model version produced by this job."""
    model_uri: str | None = Field(None, max_length=512)
    """models:/<name>/<version> of the registered version."""
    failure: Failure | None = None
    """Why the job failed."""


#: The Job's pods are named and hostnamed after it and the headless Service is ``<name>-workers``.
NAME_RULE: Final = name_is_dns1035_label(KIND, "its Job, its pods' hostnames and its headless Service")


class TrainingJob(ApiModel):
    """TrainingJob trains a model on a dataset (CPU, GPUs, or nodes x GPUs with DDP), logs the run to
    MLflow, checks an optional gate and registers the result as a new model version."""

    api_version: Literal["mlops.dev/v1alpha1"] = "mlops.dev/v1alpha1"
    kind: Literal["TrainingJob"] = "TrainingJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None

    cel_rules: ClassVar[tuple[Rule, ...]] = (NAME_RULE,)

    @classmethod
    def from_body(cls, body: Any) -> TrainingJob:
        """Parse a whole object (e.g. a kopf body)."""
        return cls.model_validate(plain(body))


INFO: Final = KindInfo(
    kind=KIND,
    plural="trainingjobs",
    short_names=("tj",),
    description=TrainingJob.__doc__ or "",
    spec=TrainingJobSpec,
    status=TrainingJobStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.model.name", "string", "Registered model this job trains."),
        PrinterColumn(
            "Phase", ".status.phase", "string", "Pending, Queued, Suspended, Running, Succeeded or Failed."
        ),
        PrinterColumn("Nodes", ".spec.resources.nodes", "integer", "Nodes training together."),
        PrinterColumn("GPUs", ".spec.resources.gpus", "integer", "GPUs per node."),
        PrinterColumn("Progress", ".status.progress.summary", "string", "Epochs completed / planned."),
        PrinterColumn("Version", ".status.modelVersion", "integer", "Registered model version."),
        PrinterColumn("Reason", ".status.failure.reason", "string", "Why the job failed.", priority=1),
        PrinterColumn("Run", ".status.mlflowRunId", "string", "MLflow run id.", priority=1),
        AGE_COLUMN,
    ),
    selectable_fields=(".spec.model.name",),
    spec_transition_rules=TRANSITION_RULES,
    root_rules=(NAME_RULE,),
)

__all__ = [
    "FINISHED_PHASES",
    "INFO",
    "KIND",
    "MAX_NODES",
    "NAME_RULE",
    "TRANSITION_RULES",
    "BuiltinTrainer",
    "CheckpointSpec",
    "DatasetSpec",
    "EarlyStopping",
    "Failure",
    "GateResult",
    "MetricResult",
    "MlflowSpec",
    "ModelSpec",
    "PodCounts",
    "RegistrationSpec",
    "RunPolicy",
    "SplitSpec",
    "TrainerSpec",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
    "TrainingPhase",
    "TrainingProgress",
    "TrainingResources",
    "TrainingScheduling",
]
