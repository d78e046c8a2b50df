"""The contract between the operator and the programs in its pods: environment variables, exit codes and
the termination message. The builders in ``resources`` set these; ``runtime`` reads them. Both sides import
the names from here so they cannot drift apart.
"""

from enum import IntEnum
from typing import Final

from mlops_operator.drift import methods

# --- what the controller puts into a training pod ------------------------------------------------------
#: JSON of the TrainingJob's ``spec`` (camelCase, as stored in the apiserver).
ENV_TRAININGJOB_SPEC: Final = "MLOPS_TRAININGJOB_SPEC"
ENV_TRAININGJOB_NAME: Final = "MLOPS_TRAININGJOB_NAME"
ENV_TRAININGJOB_NAMESPACE: Final = "MLOPS_TRAININGJOB_NAMESPACE"
ENV_TRAININGJOB_UID: Final = "MLOPS_TRAININGJOB_UID"
#: The pod's own name (downward API): identifies the attempt, since a retried Job pod gets a new name.
ENV_POD_NAME: Final = "MLOPS_POD_NAME"
#: Image the pod runs, recorded as a run tag for reproducibility.
ENV_IMAGE: Final = "MLOPS_IMAGE"
#: Where the termination message goes (default: Kubernetes' ``/dev/termination-log``).
ENV_TERMINATION_LOG: Final = "MLOPS_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG: Final = "/dev/termination-log"
#: Directory for checkpoints when the spec gives none (an emptyDir is mounted there).
ENV_CHECKPOINT_DIR: Final = "MLOPS_CHECKPOINT_DIR"

# MLflow's own variables (read by the mlflow client as well).
ENV_MLFLOW_TRACKING_URI: Final = "MLFLOW_TRACKING_URI"
ENV_MLFLOW_EXPERIMENT_NAME: Final = "MLFLOW_EXPERIMENT_NAME"

# torchrun rendezvous, set for every training pod (a single-process job has WORLD_SIZE 1).
ENV_MASTER_ADDR: Final = "MASTER_ADDR"
ENV_MASTER_PORT: Final = "MASTER_PORT"
ENV_NNODES: Final = "NNODES"
ENV_NODE_RANK: Final = "NODE_RANK"
ENV_NPROC_PER_NODE: Final = "NPROC_PER_NODE"
DEFAULT_MASTER_PORT: Final = 29500

# --- MLflow run tags that link a run back to its TrainingJob ----------------------------------------------
TAG_TRAININGJOB_NAMESPACE: Final = "mlops.dev/trainingjob-namespace"
TAG_TRAININGJOB_NAME: Final = "mlops.dev/trainingjob-name"
TAG_TRAININGJOB_UID: Final = "mlops.dev/trainingjob-uid"
TAG_ATTEMPT: Final = "mlops.dev/attempt"
TAG_IMAGE: Final = "mlops.dev/image"
TAG_CODE_VERSION: Final = "mlops.dev/code-version"
TAG_DATASET_DIGEST: Final = "mlops.dev/dataset-digest"
TAG_GATE_RESULT: Final = "mlops.dev/gate"
TAG_FAILURE_REASON: Final = "mlops.dev/failure-reason"
#: Name of the reference-profile artifact (per-feature bins/quantiles/frequencies) used by drift detection.
PROFILE_ARTIFACT: Final = "reference_profile.json"


class ExitCode(IntEnum):
    """Exit codes of the runtime programs. The Job's podFailurePolicy fails fast on the non-retriable ones."""

    OK = 0
    UNEXPECTED = 1  # a bug or an unclassified error: retried per backoffLimit
    CONFIG_ERROR = 2  # invalid spec/environment: retrying cannot help
    DATA_ERROR = 3  # unreadable dataset, missing target, NaN, wrong types: retrying cannot help
    MLFLOW_UNAVAILABLE = 4  # tracking server unreachable: transient, retried
    GATE_FAILED = 5  # the model did not meet the gate: a verdict, not an error to retry
    USER_CODE_FAILED = 6  # the user's command exited non-zero


#: Exit codes for which a retry cannot change the outcome.
NON_RETRIABLE_EXIT_CODES: Final = (ExitCode.CONFIG_ERROR, ExitCode.DATA_ERROR, ExitCode.GATE_FAILED)

#: Termination message reasons (the first word of the message, CamelCase), matching ExitCode.
REASON_BY_EXIT_CODE: Final = {
    ExitCode.UNEXPECTED: "TrainerError",
    ExitCode.CONFIG_ERROR: "InvalidConfig",
    ExitCode.DATA_ERROR: "InvalidDataset",
    ExitCode.MLFLOW_UNAVAILABLE: "MLflowUnavailable",
    ExitCode.GATE_FAILED: "GateFailed",
    ExitCode.USER_CODE_FAILED: "UserCodeFailed",
}

# --- volumes ------------------------------------------------------------------------------------------------
#: ``pvc://<claim>/<path>`` URIs are served from the claim mounted at ``<PVC_MOUNT_ROOT>/<claim>``.
PVC_SCHEME: Final = "pvc://"
PVC_MOUNT_ROOT: Final = "/mnt/pvc"
#: Writable scratch space of the (read-only-root) containers, and torch's shared memory.
SCRATCH_DIR: Final = "/tmp"
SHM_DIR: Final = "/dev/shm"
DEFAULT_CHECKPOINT_DIR: Final = "/tmp/checkpoints"


def pvc_claim(uri: str) -> str | None:
    """The claim of a ``pvc://<claim>/<path>`` URI, else None."""
    if not uri.startswith(PVC_SCHEME):
        return None
    claim = uri[len(PVC_SCHEME) :].split("/", 1)[0]
    return claim or None


def local_path(uri: str) -> str:
    """Where a URI is readable inside the pod: ``pvc://c/p`` -> ``/mnt/pvc/c/p``, ``file:///p`` -> ``/p``,
    anything else unchanged (http(s)://, s3://, gs:// and plain paths)."""
    if uri.startswith(PVC_SCHEME):
        return f"{PVC_MOUNT_ROOT}/{uri[len(PVC_SCHEME) :]}"
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return uri


# --- what the controller puts into a model-server pod -------------------------------------------------------
ENV_MODEL_NAME: Final = "MLOPS_MODEL_NAME"
ENV_MODEL_VERSION: Final = "MLOPS_MODEL_VERSION"
#: ``models:/<name>/<version>``: always a pinned version (the controller resolves aliases).
ENV_MODEL_URI: Final = "MLOPS_MODEL_URI"
ENV_MODELDEPLOYMENT_NAME: Final = "MLOPS_MODELDEPLOYMENT_NAME"
#: ``primary``, ``challenger`` (canary share of traffic) or ``shadow`` (mirrored traffic, answers discarded).
ENV_SERVING_ROLE: Final = "MLOPS_SERVING_ROLE"
ENV_SERVER_PORT: Final = "MLOPS_SERVER_PORT"
#: Listen address (default all interfaces); the dev process node sets it to the pod's own address.
ENV_SERVER_HOST: Final = "MLOPS_SERVER_HOST"
DEFAULT_SERVER_PORT: Final = 8080
#: JSON-lines file of sampled requests/responses (unset: no sampling) and the sampled fraction.
ENV_INFERENCE_LOG: Final = "MLOPS_INFERENCE_LOG"
ENV_LOG_SAMPLE_RATE: Final = "MLOPS_LOG_SAMPLE_RATE"
#: Shadow challenger: the primary mirrors this percent of requests to that URL (answers discarded).
ENV_SHADOW_URL: Final = "MLOPS_SHADOW_URL"
ENV_SHADOW_PERCENT: Final = "MLOPS_SHADOW_PERCENT"
#: Requests processed at once before the server answers 503 + Retry-After.
ENV_MAX_INFLIGHT: Final = "MLOPS_MAX_INFLIGHT"
#: Micro-batching (off unless set above 1): most rows per model call, and how long (milliseconds) a request
#: waits for others to join its batch.
ENV_MAX_BATCH_SIZE: Final = "MLOPS_MAX_BATCH_SIZE"
ENV_MAX_BATCH_DELAY_MS: Final = "MLOPS_MAX_BATCH_DELAY_MS"
#: The wait when batching is on and no delay is given (the ModelDeployment's default too).
DEFAULT_MAX_BATCH_DELAY_MS: Final = 5

# --- what the model server exports on /metrics (the DriftPolicy controller reads the feature counters) -----
METRIC_REQUESTS: Final = "mlops_inference_requests_total"  # labels: endpoint, code
METRIC_LATENCY: Final = "mlops_inference_request_duration_seconds"  # histogram; labels: endpoint
METRIC_INFLIGHT: Final = "mlops_inference_inflight_requests"  # gauge
METRIC_MODEL_INFO: Final = "mlops_model_info"  # gauge = 1; labels: model, version, role
METRIC_PREDICTIONS: Final = "mlops_predictions_total"  # labels: output (class label or value bin)
#: Rows seen per feature bin of the reference profile; labels: feature, bin (index as a string).
METRIC_FEATURE_BIN: Final = "mlops_feature_bin_total"
#: Rows seen per category of a categorical feature; labels: feature, category ("__other__" for unlisted).
METRIC_FEATURE_CATEGORY: Final = "mlops_feature_category_total"
#: Missing values per feature; labels: feature.
METRIC_FEATURE_MISSING: Final = "mlops_feature_missing_total"
OTHER_CATEGORY: Final = methods.OTHER_CATEGORY
