"""TrainingJob controller: kopf handlers that keep a TrainingJob's Job (+ headless Service) applied and its
status true to what the Job, its pods, the scheduler and MLflow report.

One level-based ``reconcile``: parse the spec once (invalid -> ``Valid=False``, an Event, no crash loop),
server-side apply the desired children, then recompute the status from observations and patch it only when
it changed. Triggers: create/update/resume of the TrainingJob, events of its Job and pods, and a timer
while the job is unfinished (MLflow progress).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import API_VERSION, GROUP, VERSION
from mlops_operator.api.v1alpha1.common import VALID, plain, set_condition
from mlops_operator.api.v1alpha1.trainingjob import (
    FINISHED_PHASES,
    KIND,
    Failure,
    TrainingJobSpec,
    TrainingJobStatus,
)
from mlops_operator.config import OperatorConfig
from mlops_operator.controllers import kube
from mlops_operator.controllers.trainingjob_status import (
    READY,
    RunObservation,
    Transition,
    observe,
)
from mlops_operator.resources.common import OWNER_NAME_ANNOTATION, Owner
from mlops_operator.resources.trainingjob import (
    TrainingDefaults,
    desired_children,
    job_name,
    resolved_image,
)

PLURAL: Final = "trainingjobs"
OWNER_LABEL: Final = f"{GROUP}/trainingjob"
SPEC_APPLIED: Final = "SpecApplied"

logger = logging.getLogger(__name__)

#: Reads the latest MLflow run of a TrainingJob (namespace, name, uid); replaced in tests.
RunReader = Callable[[str, str, str, str | None], RunObservation | None]


def _no_runs(namespace: str, name: str, uid: str, tracking_uri: str | None) -> RunObservation | None:
    return None


run_reader: RunReader = _no_runs
_config: OperatorConfig | None = None


def operator_config() -> OperatorConfig:
    global _config
    if _config is None:
        _config = OperatorConfig.from_env()
    return _config


def _defaults() -> TrainingDefaults:
    config = operator_config()
    return TrainingDefaults(
        runtime_image=config.runtime_image, mlflow_tracking_uri=config.mlflow_tracking_uri
    )


def describe_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    """``spec.dataset.target: Field required; spec.trainer: ...`` with camelCase field paths."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in (prefix, *item["loc"]))
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------- handlers


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_handler(body: kopf.Body, **_: Any) -> None:
    reconcile(plain(body))


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=OperatorConfig.from_env().progress_interval_seconds,
    initial_delay=2,
    idle=None,
    when=lambda status, **_: (status or {}).get("phase") not in FINISHED_PHASES,
)
def refresh_handler(body: kopf.Body, **_: Any) -> None:
    """While a job is unfinished: pick up MLflow progress and anything the watches missed."""
    reconcile(plain(body))


@kopf.on.event("batch/v1", "jobs", labels={OWNER_LABEL: kopf.PRESENT})
def job_event_handler(body: kopf.Body, type: str | None, **_: Any) -> None:
    for reference in body.get("metadata", {}).get("ownerReferences") or ():
        if reference.get("kind") == KIND and reference.get("apiVersion") == API_VERSION:
            _reconcile_by_name(body["metadata"]["namespace"], reference["name"])


@kopf.on.event("v1", "pods", labels={OWNER_LABEL: kopf.PRESENT})
def pod_event_handler(body: kopf.Body, **_: Any) -> None:
    name = (body.get("metadata", {}).get("annotations") or {}).get(OWNER_NAME_ANNOTATION)
    if name:
        _reconcile_by_name(body["metadata"]["namespace"], name)


def _reconcile_by_name(namespace: str, name: str) -> None:
    trainingjob = kube.get(API_VERSION, KIND, namespace, name)
    if trainingjob is not None and trainingjob["metadata"].get("deletionTimestamp") is None:
        reconcile(trainingjob)


# ---------------------------------------------------------------------------------------------- reconcile


def reconcile(body: Mapping[str, Any]) -> TrainingJobStatus:
    """Bring one TrainingJob's children and status up to date. Safe to call any number of times."""
    owner = Owner.from_body(body)
    generation = body["metadata"].get("generation")
    previous = TrainingJobStatus.model_validate(body.get("status") or {})
    try:
        spec = TrainingJobSpec.model_validate(body["spec"])
    except ValidationError as error:
        return _report_invalid(body, previous, describe_validation_error(error), generation)

    defaults = _defaults()
    spec_applied: tuple[bool, str] = (True, "")
    if previous.phase not in FINISHED_PHASES:
        spec_applied = _apply_children(owner, spec, defaults)

    job = kube.get("batch/v1", "Job", owner.namespace, job_name(owner))
    if job is None and previous.phase in FINISHED_PHASES:
        return previous  # the Job was cleaned up (ttlSecondsAfterFinished); the verdict stands
    pods = (
        kube.list_objects("v1", "Pod", owner.namespace, f"{OWNER_LABEL}={owner.label_value}") if job else []
    )
    pending = [p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Pending"]
    tracking_uri = (spec.mlflow.tracking_uri if spec.mlflow else None) or defaults.mlflow_tracking_uri
    run = _read_run(owner, tracking_uri) if job else None
    observation = observe(
        spec,
        generation,
        previous,
        job,
        pods,
        scheduler_messages=kube.scheduler_messages(owner.namespace, pending),
        run=run,
        image=resolved_image(spec, defaults),
    )
    status = observation.status
    applied, message = spec_applied
    if not applied:
        status.conditions = set_condition(
            status.conditions, SPEC_APPLIED, "False", "ImmutableWhileRunning", message, generation
        )
        observation.transitions.append(Transition("Warning", "ImmutableWhileRunning", message))
    elif any(c.type == SPEC_APPLIED for c in status.conditions):
        status.conditions = set_condition(status.conditions, SPEC_APPLIED, "True", "Applied", "", generation)
    _publish(body, previous, status, observation.transitions)
    return status


def _apply_children(owner: Owner, spec: TrainingJobSpec, defaults: TrainingDefaults) -> tuple[bool, str]:
    """Apply every desired child; (False, why) when the apiserver refuses a change to a running Job."""
    existing = kube.get("batch/v1", "Job", owner.namespace, job_name(owner))
    for child in desired_children(owner, spec, defaults, job_exists=existing is not None):
        try:
            kube.apply(child)
        except ApiException as error:
            if error.status == 422 and child["kind"] == "Job" and existing is not None:
                return False, (
                    "this change cannot be applied to the running Job "
                    f"{job_name(owner)} (pod templates of running Jobs are immutable): {_reason(error)}"
                )
            raise
    return True, ""


def _reason(error: ApiException) -> str:
    import json

    try:
        message: str = json.loads(error.body or "{}").get("message", "")
    except ValueError:
        message = ""
    return message or str(error.reason)


def _read_run(owner: Owner, tracking_uri: str | None) -> RunObservation | None:
    try:
        return run_reader(owner.namespace, owner.name, owner.uid, tracking_uri)
    except Exception as error:  # MLflow down must not stop Kubernetes-side status from updating
        logger.warning("reading MLflow run of %s/%s failed: %s", owner.namespace, owner.name, error)
        return None


def _report_invalid(
    body: Mapping[str, Any], previous: TrainingJobStatus, message: str, generation: int | None
) -> TrainingJobStatus:
    conditions = set_condition(previous.conditions, VALID, "False", "InvalidSpec", message, generation)
    conditions = set_condition(conditions, READY, "False", "InvalidSpec", message, generation)
    status = previous.model_copy(
        update={
            "phase": "Failed",
            "conditions": conditions,
            "observed_generation": generation,
            "failure": Failure(reason="InvalidSpec", message=message),
        }
    )
    _publish(body, previous, status, [Transition("Warning", "InvalidSpec", message)])
    return status


def _publish(
    body: Mapping[str, Any],
    previous: TrainingJobStatus,
    status: TrainingJobStatus,
    transitions: list[Transition],
) -> None:
    new = status.to_dict()
    if new != previous.to_dict():
        metadata = body["metadata"]
        kube.patch_status(
            API_VERSION, KIND, metadata["namespace"], metadata["name"], _with_removals(previous, new)
        )
    for transition in transitions:
        # kopf only reads apiVersion/kind/metadata of the body to build the Event's involvedObject.
        kopf.event(
            cast(kopf.Body, body), type=transition.type, reason=transition.reason, message=transition.message
        )


def _with_removals(previous: TrainingJobStatus, new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch must null out fields that disappeared (e.g. ``failure`` after a fix)."""
    patch: dict[str, Any] = dict(new)
    for key in previous.to_dict():
        if key not in new:
            patch[key] = None
    return patch
