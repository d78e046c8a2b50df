"""Names the trainer writes to MLflow beyond those of ``pod_contract`` (run params/metrics/tags and extra
environment variables), read back by ``mlops_operator.mlflow_registry``: the contract both sides import.

Pure constants, no imports of torch or mlflow: the operator side imports this module too.
"""

from typing import Final

# --- run params / metrics the operator reads for status.progress -------------------------------------------
#: Run param: epochs planned (``trainer.builtin.epochs``), for "epoch i/N" while the run is live.
PARAM_TOTAL_EPOCHS: Final = "total_epochs"
#: Run metric logged once per epoch (value = step = the epoch just completed, 1-based).
METRIC_EPOCH: Final = "epoch"

# --- run tags ------------------------------------------------------------------------------------------
#: sha256 of the dataset bytes lives in pod_contract.TAG_DATASET_DIGEST; these complete the lineage.
TAG_DATASET_URI: Final = "mlops.dev/dataset-uri"
TAG_FAILURE_MESSAGE: Final = "mlops.dev/failure-message"
#: JSON of the gate's outcome (api ``GateResult.to_dict()``); TAG_GATE_RESULT says passed/failed/skipped.
TAG_GATE_DETAIL: Final = "mlops.dev/gate-detail"
TAG_MODEL_NAME: Final = "mlops.dev/model-name"
TAG_MODEL_VERSION: Final = "mlops.dev/model-version"
TAG_MODEL_URI: Final = "mlops.dev/model-uri"
TAG_RESUMED_FROM_EPOCH: Final = "mlops.dev/resumed-from-epoch"
TAG_RESUMED_FROM_RUN: Final = "mlops.dev/resumed-from-run"
TAG_WORLD_SIZE: Final = "mlops.dev/world-size"
TAG_DEVICE: Final = "mlops.dev/device"
#: On a registered model version: the run that produced it.
TAG_RUN_ID: Final = "mlops.dev/run-id"

GATE_PASSED: Final = "passed"
GATE_FAILED: Final = "failed"
GATE_SKIPPED: Final = "skipped"

#: Artifact path of the logged model inside the run.
MODEL_ARTIFACT_NAME: Final = "model"

# --- extra environment of the trainer and of user code --------------------------------------------------
#: JSON object of trainer.hyperparameters (the builder sets it; the trainer sets it for user code too).
ENV_HYPERPARAMETERS: Final = "MLOPS_HYPERPARAMETERS"
#: For user code: where the dataset's bytes are (a local file), its URI, digest, target and features.
ENV_DATASET_PATH: Final = "MLOPS_DATASET_PATH"
ENV_DATASET_URI: Final = "MLOPS_DATASET_URI"
ENV_DATASET_DIGEST: Final = "MLOPS_DATASET_DIGEST"
ENV_DATASET_FORMAT: Final = "MLOPS_DATASET_FORMAT"
ENV_DATASET_TARGET: Final = "MLOPS_DATASET_TARGET"
ENV_DATASET_FEATURES: Final = "MLOPS_DATASET_FEATURES"
ENV_MODEL_NAME: Final = "MLOPS_MODEL_NAME"
#: Seconds the trainer waits for the MLflow server to answer /health before MLflowUnavailable.
ENV_MLFLOW_CONNECT_TIMEOUT: Final = "MLOPS_MLFLOW_CONNECT_TIMEOUT"
#: Fault injection for tests: exit abruptly (code 137, like SIGKILL) right after this epoch's checkpoint.
ENV_FAULT_EXIT_AFTER_EPOCH: Final = "MLOPS_FAULT_EXIT_AFTER_EPOCH"
