"""What a TrainingJob's status should say, derived from what its children and MLflow report.

Pure: ``observe(...)`` takes the Job, its pods, the scheduler's complaints and the MLflow run as plain
data and returns the new status plus the transitions worth an Event. The controller only gathers the inputs
and patches the result when it differs from the stored status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.common import READY, VALID, Condition, ConditionStatus, set_condition, utcnow
from mlops_operator.api.v1alpha1.trainingjob import (
    Failure,
    GateResult,
    PodCounts,
    TrainingJobSpec,
    TrainingJobStatus,
    TrainingPhase,
    TrainingProgress,
)
from mlops_operator.machinery.transitions import Transition, changed_conditions
from mlops_operator.resources.trainingjob import CONTAINER_NAME

# Condition types, like kubeflow/trainer's constants.
SUSPENDED: Final = "Suspended"
SCHEDULED: Final = "Scheduled"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"

#: Container waiting reasons that mean the pod cannot start until someone fixes something.
STUCK_WAITING_REASONS: Final = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)


@dataclass(frozen=True)
class RunObservation:
    """What MLflow says about the job's latest run (None fields: not logged yet)."""

    run_id: str
    epoch: int | None = None
    total_epochs: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    dataset_digest: str | None = None
    model_version: int | None = None
    model_uri: str | None = None
    gate: GateResult | None = None
    update_time: dt.datetime | None = None


@dataclass
class Observation:
    status: TrainingJobStatus
    transitions: list[Transition]


def _condition_true(obj: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in (obj or {}).get("status", {}).get("conditions") or ():
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _pod_counts(pods: Sequence[Mapping[str, Any]]) -> PodCounts:
    counts = {"Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 0}
    for pod in pods:
        phase = pod.get("status", {}).get("phase", "Pending")
        counts[phase] = counts.get(phase, 0) + 1
    return PodCounts(
        pending=counts["Pending"],
        running=counts["Running"],
        succeeded=counts["Succeeded"],
        failed=counts["Failed"],
    )


def _unschedulable(
    pods: Sequence[Mapping[str, Any]], scheduler_messages: Mapping[str, str]
) -> tuple[str, str] | None:
    """(pod name, scheduler's message) of the first pod the scheduler could not place."""
    for pod in pods:
        status = pod.get("status", {})
        if status.get("phase") != "Pending":
            continue
        for condition in status.get("conditions") or ():
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                name = pod["metadata"]["name"]
                message = (
                    scheduler_messages.get(name) or condition.get("message") or "pod cannot be scheduled"
                )
                return name, message
    return None


def _stuck_container(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str, str] | None:
    """(pod, waiting reason, message) of a container that cannot start (image pull, bad config)."""
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses") or ():
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_WAITING_REASONS:
                return pod["metadata"]["name"], waiting["reason"], waiting.get("message", "")
    return None


def parse_termination_message(message: str) -> tuple[str | None, str]:
    """Split the trainer's one-line ``"<Reason>: <message>"``; (None, message) when it is not ours."""
    first_line = message.strip().splitlines()[0] if message.strip() else ""
    head, sep, rest = first_line.partition(": ")
    if sep and head in pc.REASON_BY_EXIT_CODE.values():
        return head, rest.strip()
    return None, message.strip()


def _last_terminated(pods: Sequence[Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]] | None:
    """(pod name, terminated state) of the most recent failed trainer container."""
    best: tuple[str, Mapping[str, Any]] | None = None
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses") or ():
            if status.get("name") != CONTAINER_NAME:
                continue
            terminated = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
                "terminated"
            )
            if not terminated or terminated.get("exitCode", 0) == 0:
                continue
            if best is None or (terminated.get("finishedAt") or "") >= (best[1].get("finishedAt") or ""):
                best = (pod["metadata"]["name"], terminated)
    return best


def failure_from(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Failure:
    """The real cause of a failed Job: the trainer's own reason, OOMKilled, an exit code, or the Job's
    reason (BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy)."""
    job_condition = _condition_true(job, "Failed") or _condition_true(job, "FailureTarget") or {}
    job_reason = job_condition.get("reason") or "JobFailed"
    job_message = job_condition.get("message") or ""
    terminated = _last_terminated(pods)
    if terminated is None:
        return Failure(reason=job_reason, message=job_message)
    pod_name, state = terminated
    exit_code = int(state.get("exitCode", 1))
    own_reason, detail = parse_termination_message(state.get("message") or "")
    container_reason = state.get("reason") or "Error"
    if own_reason:
        reason = own_reason
    elif container_reason not in ("Error", "Completed"):
        reason = container_reason  # OOMKilled, ContainerCannotRun, DeadlineExceeded, ...
    elif job_reason == "DeadlineExceeded":
        reason = job_reason
    else:
        reason = "ExitCode" if job_reason == "PodFailurePolicy" else job_reason
    message = f"pod {pod_name}: container {CONTAINER_NAME} exited with code {exit_code} ({container_reason})"
    if detail:
        message += f": {detail}"
    if job_message:
        message += f". Job: {job_message}"
    return Failure(reason=reason, message=message, exit_code=exit_code)


def _phase(
    spec: TrainingJobSpec, job: Mapping[str, Any] | None, counts: PodCounts
) -> tuple[TrainingPhase, Mapping[str, Any] | None]:
    """Phase, and the Job condition that decided it when the Job finished."""
    if job is None:
        return ("Suspended" if spec.scheduling.suspend else "Pending"), None
    if done := _condition_true(job, "Complete") or _condition_true(job, "SuccessCriteriaMet"):
        return "Succeeded", done
    if failed := _condition_true(job, "Failed") or _condition_true(job, "FailureTarget"):
        return "Failed", failed
    if job.get("spec", {}).get("suspend"):
        if spec.scheduling.suspend:
            return "Suspended", None
        return ("Queued" if spec.scheduling.queue_name else "Suspended"), None
    if counts.running or (counts.succeeded and not counts.pending):
        return "Running", None  # pods that finished while the Job controller has not concluded yet
    return "Pending", None


def observe(
    spec: TrainingJobSpec,
    generation: int | None,
    previous: TrainingJobStatus,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    scheduler_messages: Mapping[str, str] | None = None,
    run: RunObservation | None = None,
    image: str | None = None,
    now: dt.datetime | None = None,
) -> Observation:
    """The status the TrainingJob should have now, and the transitions since ``previous``."""
    now = now or utcnow()
    counts = _pod_counts(pods)
    phase, deciding_condition = _phase(spec, job, counts)
    conditions: list[Condition] = list(previous.conditions)
    transitions: list[Transition] = []

    def cond(type_: str, status: ConditionStatus, reason: str, message: str = "") -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)

    cond(VALID, "True", "SpecValid", "spec passed validation")
    failure: Failure | None = previous.failure if phase == "Failed" else None

    if phase in ("Suspended", "Queued"):
        reason = "QueuedByKueue" if phase == "Queued" else "Suspended"
        message = (
            f"waiting for Kueue to admit the job in queue {spec.scheduling.queue_name}"
            if phase == "Queued"
            else "spec.scheduling.suspend is true: no pods run until it is false"
        )
        cond(SUSPENDED, "True", reason, message)
    elif any(c.type == SUSPENDED for c in conditions):
        cond(SUSPENDED, "False", "Resumed", "the job is no longer suspended")

    unschedulable = _unschedulable(pods, scheduler_messages or {})
    stuck = _stuck_container(pods)
    if unschedulable:
        pod_name, message = unschedulable
        cond(SCHEDULED, "False", "Unschedulable", f"pod {pod_name}: {message}")
    elif pods and all(
        p.get("spec", {}).get("nodeName") for p in pods if p.get("status", {}).get("phase") != "Failed"
    ):
        cond(SCHEDULED, "True", "PodsScheduled", f"{len(pods)} pod(s) bound to nodes")

    if phase == "Running":
        cond(RUNNING, "True", "PodsRunning", f"{counts.running}/{spec.resources.nodes} pod(s) running")
    elif phase == "Succeeded" or (phase == "Failed" and any(c.type == RUNNING for c in conditions)):
        # a job that succeeded ran, whether or not a reconcile happened to see it running: the end state
        # must not depend on which intermediate states were observed
        cond(RUNNING, "False", "Finished", f"the job {phase.lower()}")

    if phase == "Succeeded":
        cond(SUCCEEDED, "True", "JobSucceeded", "training finished")
        cond(READY, "True", "Succeeded", _success_message(run))
    elif phase == "Failed":
        assert job is not None
        failure = failure_from(job, pods)
        cond(FAILED, "True", failure.reason, failure.message)
        cond(SUCCEEDED, "False", failure.reason, failure.message)
        cond(READY, "False", failure.reason, failure.message)
    elif unschedulable:
        cond(READY, "False", "Unschedulable", _condition_message(conditions, SCHEDULED))
    elif stuck:
        pod_name, reason, message = stuck
        cond(READY, "False", reason, f"pod {pod_name}: {message}" if message else f"pod {pod_name}: {reason}")
    else:
        reason = {"Running": "Training", "Pending": "Pending", "Suspended": "Suspended", "Queued": "Queued"}[
            phase
        ]
        cond(READY, "False", reason, f"the job is {phase.lower()}")

    start_time = previous.start_time or _parse_time((job or {}).get("status", {}).get("startTime"))
    completion_time = previous.completion_time
    if phase in ("Succeeded", "Failed") and completion_time is None:
        completion_time = _parse_time((job or {}).get("status", {}).get("completionTime")) or _parse_time(
            (deciding_condition or {}).get("lastTransitionTime")
        )
        completion_time = completion_time or now

    status = TrainingJobStatus(
        phase=phase,
        conditions=conditions,
        observed_generation=generation,
        start_time=start_time,
        completion_time=completion_time,
        image=previous.image or image,
        progress=previous.progress,
        pods=counts if pods or previous.pods else None,
        mlflow_run_id=previous.mlflow_run_id,
        dataset_digest=previous.dataset_digest,
        gate=previous.gate,
        model_version=previous.model_version,
        model_uri=previous.model_uri,
        failure=failure,
    )
    if run is not None:
        status = _with_run(status, run)

    transitions.extend(_transitions(previous, status))
    return Observation(status=status, transitions=transitions)


def _with_run(status: TrainingJobStatus, run: RunObservation) -> TrainingJobStatus:
    update: dict[str, Any] = {"mlflow_run_id": run.run_id}
    if run.epoch is not None:
        update["progress"] = TrainingProgress.of(
            run.epoch, run.total_epochs, dict(run.metrics), run.update_time
        )
    for name in ("dataset_digest", "model_version", "model_uri", "gate"):
        value = getattr(run, name)
        if value is not None:
            update[name] = value
    return status.model_copy(update=update)


def _success_message(run: RunObservation | None) -> str:
    if run is not None and run.model_uri:
        return f"trained and registered {run.model_uri}"
    return "training finished"


def _condition_message(conditions: Sequence[Condition], type_: str) -> str:
    return next((c.message for c in conditions if c.type == type_), "")


#: (condition type, status) -> the (type, status) transitions that imply it when seen in the same
#: observation: one Event says what happened (running pods are scheduled; a job that succeeded or failed
#: stopped running; a job that succeeded is ready), where several at the same second would only repeat it.
_IMPLIED_BY: Final = {
    (SCHEDULED, "True"): ((RUNNING, "True"),),
    (RUNNING, "False"): ((SUCCEEDED, "True"), (FAILED, "True")),
    (READY, "True"): ((SUCCEEDED, "True"),),
}


def _transitions(previous: TrainingJobStatus, current: TrainingJobStatus) -> list[Transition]:
    out: list[Transition] = []
    changes = changed_conditions(previous.conditions, current.conditions)
    changed = {(c.type, c.status) for _, c in changes}
    for old, condition in changes:
        if any(cause in changed for cause in _IMPLIED_BY.get((condition.type, condition.status), ())):
            continue
        if condition.type == VALID and condition.status == "True" and old is None:
            continue
        warning = (
            (condition.type == FAILED and condition.status == "True")
            or (condition.type == SCHEDULED and condition.status != "True")
            or (condition.type == READY and condition.reason in STUCK_WAITING_REASONS)
        )
        if condition.type == READY and not warning and condition.status != "True":
            continue  # Ready=False while pending/running says nothing the other conditions did not
        if condition.type == SUCCEEDED and condition.status == "False":
            continue  # the Failed condition already reports it
        out.append(Transition.of(condition, warning))
    if current.model_version and current.model_version != previous.model_version:
        out.append(
            Transition(
                "Normal", "ModelRegistered", f"registered {current.model_uri or current.model_version}"
            )
        )
    return out
