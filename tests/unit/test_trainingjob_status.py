"""TrainingJob status derivation: phases, conditions, the real cause of failures, Events on transitions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlops_operator.api.v1alpha1.trainingjob import TrainingJobSpec, TrainingJobStatus
from mlops_operator.controllers.trainingjob.status import (
    RunObservation,
    Transition,
    failure_from,
    observe,
    parse_termination_message,
)

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
SPEC = TrainingJobSpec.model_validate(
    {
        "model": {"name": "m"},
        "dataset": {"uri": "/data/d.csv", "target": "y"},
        "trainer": {"builtin": {"task": "regression"}},
        "resources": {"nodes": 2, "gpus": 4},
    }
)


def job(
    conditions: list[dict[str, Any]] | None = None, suspend: bool = False, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "m"},
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions or [], **status},
    }


def pod(name: str, phase: str, node: str | None = "gpu-node-0", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, **status},
    }


def conditions_of(status: TrainingJobStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_no_job_yet_is_pending() -> None:
    result = observe(SPEC, 1, TrainingJobStatus(), None, [], now=NOW)
    assert result.status.phase == "Pending"
    assert conditions_of(result.status) == {"Valid": ("True", "SpecValid"), "Ready": ("False", "Pending")}
    assert result.transitions == []


def test_unschedulable_pod_is_reported_with_the_schedulers_message() -> None:
    message = "0/3 nodes are available: 1 node(s) didn't match, 2 Insufficient nvidia.com/gpu."
    pending = pod(
        "m-0-abc",
        "Pending",
        node=None,
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    )
    result = observe(
        SPEC,
        1,
        TrainingJobStatus(),
        job(startTime="2026-11-29T11:59:00Z"),
        [pending],
        {"m-0-abc": message},
        now=NOW,
    )
    status = result.status
    assert status.phase == "Pending"
    assert conditions_of(status)["Scheduled"] == ("False", "Unschedulable")
    assert conditions_of(status)["Ready"] == ("False", "Unschedulable")
    scheduled = next(c for c in status.conditions if c.type == "Scheduled")
    assert scheduled.message == f"pod m-0-abc: {message}"
    assert Transition("Warning", "Unschedulable", f"pod m-0-abc: {message}") in result.transitions
    assert status.pods is not None and status.pods.pending == 1


def test_running_pods_make_the_job_running_and_record_the_start_time() -> None:
    pods = [pod("m-0", "Running"), pod("m-1", "Running", node="gpu-node-1")]
    result = observe(
        SPEC, 3, TrainingJobStatus(), job(startTime="2026-11-29T11:59:00Z", active=2), pods, now=NOW
    )
    status = result.status
    assert status.phase == "Running"
    assert status.start_time == dt.datetime(2026, 11, 29, 11, 59, tzinfo=dt.UTC)
    assert conditions_of(status)["Running"] == ("True", "PodsRunning")
    assert conditions_of(status)["Scheduled"] == ("True", "PodsScheduled")
    assert all(c.observed_generation == 3 for c in status.conditions)
    assert [t.reason for t in result.transitions] == ["PodsRunning"]  # running pods are scheduled ones


def test_pods_bound_but_not_running_yet_get_their_own_event_and_running_follows() -> None:
    bound = [pod("m-0", "Pending"), pod("m-1", "Pending")]
    first = observe(SPEC, 1, TrainingJobStatus(), job(active=2), bound, now=NOW)
    assert [t.reason for t in first.transitions] == ["PodsScheduled"]
    running = [pod("m-0", "Running"), pod("m-1", "Running")]
    second = observe(SPEC, 1, first.status, job(active=2), running, now=NOW)
    assert [t.reason for t in second.transitions] == ["PodsRunning"]


def test_a_job_that_fails_while_running_gets_one_event_for_its_failure() -> None:
    running = observe(SPEC, 1, TrainingJobStatus(), job(active=2), [pod("m-0", "Running")] * 2, now=NOW)
    failed_job = job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "m"}])
    failed = observe(SPEC, 1, running.status, failed_job, [pod("m-0", "Failed")] * 2, now=NOW)
    assert [(t.type, t.reason) for t in failed.transitions] == [("Warning", "BackoffLimitExceeded")]
    assert conditions_of(failed.status)["Running"] == ("False", "Finished")


def test_a_finished_job_gets_one_event_for_its_outcome() -> None:
    """Finished (Running=False) and Ready=True say nothing JobSucceeded does not."""
    running = observe(SPEC, 1, TrainingJobStatus(), job(active=2), [pod("m-0", "Running")] * 2, now=NOW)
    done = job([{"type": "Complete", "status": "True"}], completionTime="2026-11-29T11:58:00Z")
    finished = observe(SPEC, 1, running.status, done, [pod("m-0", "Succeeded")] * 2, now=NOW)
    assert [t.reason for t in finished.transitions] == ["JobSucceeded"]
    assert conditions_of(finished.status)["Running"] == ("False", "Finished")
    assert conditions_of(finished.status)["Ready"] == ("True", "Succeeded")


def test_observing_twice_changes_nothing_and_emits_no_events() -> None:
    pods = [pod("m-0", "Running"), pod("m-1", "Running")]
    first = observe(SPEC, 1, TrainingJobStatus(), job(startTime="2026-11-29T11:59:00Z"), pods, now=NOW)
    second = observe(
        SPEC, 1, first.status, job(startTime="2026-11-29T11:59:00Z"), pods, now=NOW + dt.timedelta(minutes=5)
    )
    assert second.status == first.status
    assert second.transitions == []


def test_succeeded_job_with_a_registered_version() -> None:
    done = job(
        [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-29T11:58:00Z"}],
        completionTime="2026-11-29T11:58:00Z",
    )
    run = RunObservation(
        run_id="abc123",
        epoch=20,
        total_epochs=20,
        metrics={"val_rmse": 0.5},
        dataset_digest="sha256:ff",
        model_version=4,
        model_uri="models:/m/4",
    )
    result = observe(
        SPEC,
        1,
        TrainingJobStatus(),
        done,
        [pod("m-0", "Succeeded"), pod("m-1", "Succeeded")],
        run=run,
        now=NOW,
    )
    status = result.status
    assert status.phase == "Succeeded"
    assert status.completion_time == dt.datetime(2026, 11, 29, 11, 58, tzinfo=dt.UTC)
    assert (status.mlflow_run_id, status.model_version, status.model_uri, status.dataset_digest) == (
        "abc123",
        4,
        "models:/m/4",
        "sha256:ff",
    )
    assert status.progress is not None and status.progress.summary == "20/20"
    assert conditions_of(status)["Ready"] == ("True", "Succeeded")
    assert Transition("Normal", "ModelRegistered", "registered models:/m/4") in result.transitions
    assert status.failure is None


def test_failure_uses_the_trainers_termination_message() -> None:
    failed_job = job(
        [
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "message": "Container trainer for pod ns/m-0 failed with exit code 3 matching FailJob rule",
            }
        ]
    )
    failed_pod = pod(
        "m-0-x",
        "Failed",
        containerStatuses=[
            {
                "name": "trainer",
                "state": {
                    "terminated": {
                        "exitCode": 3,
                        "reason": "Error",
                        "message": "InvalidDataset: column 'y' not found in /data/d.csv",
                        "finishedAt": "2026-11-29T11:59:00Z",
                    }
                },
            }
        ],
    )
    result = observe(SPEC, 1, TrainingJobStatus(), failed_job, [failed_pod], now=NOW)
    failure = result.status.failure
    assert failure is not None
    assert (failure.reason, failure.exit_code) == ("InvalidDataset", 3)
    assert failure.message.startswith(
        "pod m-0-x: container trainer exited with code 3 (Error): column 'y' not found in /data/d.csv"
    )
    assert result.status.phase == "Failed"
    assert conditions_of(result.status)["Failed"] == ("True", "InvalidDataset")
    assert any(t.type == "Warning" and t.reason == "InvalidDataset" for t in result.transitions)


def test_oom_killed_and_backoff_limit() -> None:
    failed_job = job(
        [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ]
    )
    pods = [
        pod(
            "m-0-a",
            "Failed",
            containerStatuses=[
                {
                    "name": "trainer",
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "OOMKilled",
                            "finishedAt": "2026-11-29T11:50:00Z",
                        }
                    },
                }
            ],
        ),
        pod(
            "m-0-b",
            "Failed",
            containerStatuses=[
                {
                    "name": "trainer",
                    "state": {
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "message": "Traceback ...",
                            "finishedAt": "2026-11-29T11:55:00Z",
                        }
                    },
                }
            ],
        ),
    ]
    failure = failure_from(failed_job, pods)
    assert (failure.reason, failure.exit_code) == ("BackoffLimitExceeded", 1)  # the latest attempt decides
    assert failure.message.endswith("Job: Job has reached the specified backoff limit")
    assert failure_from(failed_job, pods[:1]).reason == "OOMKilled"


def test_deadline_exceeded_without_a_terminated_container() -> None:
    failed_job = job(
        [
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
            }
        ]
    )
    failure = failure_from(failed_job, [])
    assert (failure.reason, failure.message, failure.exit_code) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
        None,
    )


def test_suspended_and_queued() -> None:
    suspended_spec = SPEC.model_copy(
        update={"scheduling": SPEC.scheduling.model_copy(update={"suspend": True})}
    )
    result = observe(suspended_spec, 2, TrainingJobStatus(), job(suspend=True), [], now=NOW)
    assert result.status.phase == "Suspended"
    assert conditions_of(result.status)["Suspended"] == ("True", "Suspended")
    resumed = observe(SPEC, 3, result.status, job(), [pod("m-0", "Running")], now=NOW)
    assert conditions_of(resumed.status)["Suspended"] == ("False", "Resumed")
    queued_spec = SPEC.model_copy(
        update={"scheduling": SPEC.scheduling.model_copy(update={"queue_name": "q"})}
    )
    assert (
        observe(queued_spec, 1, TrainingJobStatus(), job(suspend=True), [], now=NOW).status.phase == "Queued"
    )


def test_image_pull_errors_surface_in_ready() -> None:
    stuck = pod(
        "m-0",
        "Pending",
        containerStatuses=[
            {
                "name": "trainer",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
            }
        ],
    )
    result = observe(SPEC, 1, TrainingJobStatus(), job(), [stuck], now=NOW)
    assert conditions_of(result.status)["Ready"] == ("False", "ImagePullBackOff")
    assert Transition("Warning", "ImagePullBackOff", "pod m-0: Back-off pulling image") in result.transitions


def test_termination_message_parsing() -> None:
    assert parse_termination_message("GateFailed: val_accuracy 0.81 < 0.9\n") == (
        "GateFailed",
        "val_accuracy 0.81 < 0.9",
    )
    assert parse_termination_message("Segmentation fault") == (None, "Segmentation fault")
    assert parse_termination_message("Note: not ours") == (None, "Note: not ours")
    assert parse_termination_message("") == (None, "")
