"""TrainingJob controller: kopf handlers that keep a TrainingJob's Job (+ headless Service) applied and its
status true to what the Job, its pods, the scheduler and MLflow report.

One level-based ``reconcile``: parse the spec once (invalid -> ``Valid=False``, an Event, no crash loop),
server-side apply the desired children that differ from what is live (kube.apply_if_changed), then
recompute the status from observations and patch it only when it changed. Triggers (controllers/triggers.py):
the TrainingJob's own events when it is new or its spec changed (nothing is written on the object to remember
it), status-relevant changes of its Job (coalesced), and the resync loop while the job is unfinished and can
change without a Job event (pending pods, multi-node jobs, MLflow progress).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final

import kopf
from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import API_VERSION, GROUP, VERSION
from mlops_operator.api.v1alpha1.common import VALID, set_condition
from mlops_operator.api.v1alpha1.trainingjob import (
    FINISHED_PHASES,
    KIND,
    Failure,
    TrainingJobSpec,
    TrainingJobStatus,
)
from mlops_operator.config import OperatorConfig
from mlops_operator.controllers import kube, resync, triggers
from mlops_operator.controllers.apiserver import ApiError
from mlops_operator.controllers.common import (
    Transition,
    describe_validation_error,
    pod_defaults,
    publish,
)
from mlops_operator.controllers.settings import handler_executor
from mlops_operator.controllers.trainingjob_status import READY, RunObservation, observe
from mlops_operator.mlflow_registry import registry_for
from mlops_operator.resources.common import Owner, PodDefaults
from mlops_operator.resources.trainingjob import (
    desired_children,
    job_name,
    resolved_image,
)

PLURAL: Final = "trainingjobs"
OWNER_LABEL: Final = f"{GROUP}/trainingjob"
SPEC_APPLIED: Final = "SpecApplied"

logger = logging.getLogger(__name__)

#: Reads the latest MLflow run of a TrainingJob: (uid, tracking URI, experiment) -> observation.
RunReader = Callable[[str, str | None, str], RunObservation | None]


def read_run_from_mlflow(uid: str, tracking_uri: str | None, experiment: str) -> RunObservation | None:
    """The latest attempt's run in MLflow (None without a tracking URI or before the run exists)."""
    if not tracking_uri:
        return None
    view = registry_for(tracking_uri).observe_training_job(uid, experiments=[experiment])
    if view is None:
        return None
    return RunObservation(
        run_id=view.run_id,
        epoch=view.epoch,
        total_epochs=view.total_epochs,
        metrics=view.metrics,
        dataset_digest=view.dataset_digest,
        model_version=view.model_version,
        model_uri=view.model_uri,
        gate=view.gate,
        update_time=view.update_time,
    )


run_reader: RunReader = read_run_from_mlflow


# ----------------------------------------------------------------------------------------------- handlers


#: Spec changes (generation) trigger a reconcile; our own status patches do not (see triggers).
TRIGGERS = triggers.ParentTriggers()


# Both event handlers are coroutines: they decide on kopf's event loop, and only a due reconcile takes one
# of kopf's handler threads (most events are the echoes of our own writes).
@kopf.on.event(GROUP, VERSION, PLURAL)
async def trainingjob_event_handler(body: kopf.Body, type: str | None, **_: Any) -> None:
    await triggers.on_parent_event(TRIGGERS, body, type, _serialized, handler_executor())


# Pods are not watched (a cluster-wide watch of every pod, filtered client-side, for state the Job's status
# already summarises): Job status changes (active/ready/succeeded/failed) bring the reconcile that lists the
# job's pods; pods stuck Pending (unschedulable, image pulls) are seen by the resync of unfinished jobs.
@kopf.on.event("batch/v1", "jobs", labels={OWNER_LABEL: kopf.PRESENT})
async def job_event_handler(body: kopf.Body, type: str | None, **_: Any) -> None:
    uid = body.get("metadata", {}).get("uid", "")
    summary = _job_summary(body)
    if type == "DELETED":
        _job_summaries.pop(uid, None)
    else:
        previous = _job_summaries.get(uid)
        _job_summaries[uid] = summary
        if type is None:
            return  # the initial listing: parents are reconciled on their own listing and by the resync loop
        if summary == previous or (previous is None and summary == _job_summary({})):
            return  # our own apply (ADDED) or a change that says nothing new about the training
    for reference in body.get("metadata", {}).get("ownerReferences") or ():
        if reference.get("kind") == KIND and reference.get("apiVersion") == API_VERSION:
            _after_child_events.schedule((body["metadata"]["namespace"], reference["name"]))


#: Per Job uid, what its last event said (see _job_summary).
_job_summaries: dict[str, Hashable] = {}


def _job_summary(job: Mapping[str, Any]) -> Hashable:
    """What in a Job's events can change a TrainingJob's status: pods ready (Running), finished pods,
    conditions (Complete, Failed, Suspended) and suspension. Pods merely created (``active``) are not: the
    job stays Pending, and pending pods are looked at by the resync of unfinished jobs."""
    status = job.get("status") or {}
    conditions = tuple(
        sorted((c.get("type", ""), c.get("status", "")) for c in status.get("conditions") or ())
    )
    return (
        status.get("ready") or 0,
        status.get("succeeded") or 0,
        status.get("failed") or 0,
        conditions,
        bool((job.get("spec") or {}).get("suspend")),
    )


def _read(namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(API_VERSION, KIND, namespace, name)


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

    defaults = pod_defaults()
    job = kube.get("batch/v1", "Job", owner.namespace, job_name(owner))
    spec_applied: tuple[bool, str] = (True, "")
    if previous.phase not in FINISHED_PHASES:
        job, spec_applied = _apply_children(owner, spec, defaults, job)
    if job is None and previous.phase in FINISHED_PHASES:
        return previous  # the Job was cleaned up (ttlSecondsAfterFinished); the verdict stands
    pods = (
        kube.list_objects("v1", "Pod", owner.namespace, f"{OWNER_LABEL}={owner.label_value}")
        if _may_have_pods(job)
        else []
    )
    pending = [p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Pending"]
    tracking_uri = (spec.mlflow.tracking_uri if spec.mlflow else None) or defaults.mlflow_tracking_uri
    run = _read_run(owner, tracking_uri, spec.experiment_name) if job else None
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


def _may_have_pods(job: Mapping[str, Any] | None) -> bool:
    """No Job, or a Job whose status counts no pod at all (just created, suspended): nothing to list."""
    if job is None:
        return False
    status = job.get("status") or {}
    return any(status.get(key) for key in ("active", "ready", "succeeded", "failed", "terminating"))


def _apply_children(
    owner: Owner, spec: TrainingJobSpec, defaults: PodDefaults, existing: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, tuple[bool, str]]:
    """Apply every desired child. Returns the Job as the apiserver now has it (server-side apply answers with
    the object) and (False, why) when it refuses a change to a running Job."""
    job = existing
    for child in desired_children(owner, spec, defaults, job_exists=existing is not None):
        if child["kind"] == "Job":
            live = existing
        else:  # the headless Service (listed: the chart's least-privilege RBAC grants no get on Services)
            live = next(
                (
                    item
                    for item in kube.list_objects(
                        child["apiVersion"],
                        child["kind"],
                        owner.namespace,
                        f"{OWNER_LABEL}={owner.label_value}",
                    )
                    if item["metadata"]["name"] == child["metadata"]["name"]
                ),
                None,
            )
        try:
            applied, _ = kube.apply_if_changed(child, live)
        except ApiError as error:
            if error.status == 422 and child["kind"] == "Job" and existing is not None:
                return existing, (
                    False,
                    "this change cannot be applied to the running Job "
                    f"{job_name(owner)} (pod templates of running Jobs are immutable): {_reason(error)}",
                )
            raise
        if child["kind"] == "Job":
            job = applied
    return job, (True, "")


def _reason(error: ApiError) -> str:
    try:
        message: str = json.loads(error.body or "{}").get("message", "")
    except ValueError:
        message = ""
    return message or str(error.reason)


def _read_run(owner: Owner, tracking_uri: str | None, experiment: str) -> RunObservation | None:
    try:
        return run_reader(owner.uid, tracking_uri, experiment)
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
    publish(body, previous.to_dict(), status.to_dict(), transitions)


def needs_resync(body: Mapping[str, Any]) -> bool:
    """Unfinished jobs whose state can change without an event of their Job: MLflow progress (when a
    tracking URI is configured), pods stuck Pending (unschedulable, image pulls: phases before Running)
    and multi-node jobs (one pod may be stuck while another runs). A running single-pod job without MLflow
    changes only through its Job's status, which triggers a reconcile anyway."""
    phase = (body.get("status") or {}).get("phase")
    if phase in FINISHED_PHASES:
        return False
    if phase != "Running":
        return True
    spec = body.get("spec") or {}
    if ((spec.get("resources") or {}).get("nodes") or 1) > 1:
        return True
    return bool(((spec.get("mlflow") or {}).get("trackingUri")) or pod_defaults().mlflow_tracking_uri)


#: Every entry point (events, child events, resync, retries) reconciles an object one pass at a time.
_serialized = triggers.Serialized(reconcile, _read)
#: Child events come in bursts: one reconcile of the parent per burst.
_after_child_events = triggers.Coalescer(_serialized.by_name)

_PROGRESS_INTERVAL = OperatorConfig.from_env().progress_interval_seconds
resync.register(
    API_VERSION,
    KIND,
    interval=_PROGRESS_INTERVAL,
    reconcile=_serialized,
    when=lambda body: needs_resync(body) and not _serialized.reconciled_within(body, _PROGRESS_INTERVAL),
)
