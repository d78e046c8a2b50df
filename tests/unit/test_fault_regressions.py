"""Regressions found by the fault tests (tests/cluster/test_fault_*.py), pinned at the unit level."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlops_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from mlops_operator.api.v1alpha1.trainingjob import TrainingJobSpec, TrainingJobStatus
from mlops_operator.controllers.modeldeployment import status as modeldeployment_status
from mlops_operator.controllers.trainingjob import status as trainingjob_status

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
TJ_SPEC = TrainingJobSpec.model_validate(
    {
        "model": {"name": "m"},
        "dataset": {"uri": "/data/d.csv", "target": "y"},
        "trainer": {"builtin": {"task": "regression"}},
        "resources": {"nodes": 2},
    }
)


def _job(complete: bool) -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True"}] if complete else []
    extra = {"completionTime": "2026-11-29T11:59:00Z", "succeeded": 2} if complete else {"active": 2}
    return {
        "metadata": {"name": "m"},
        "spec": {},
        "status": {"conditions": conditions, "startTime": "2026-11-29T11:58:00Z", **extra},
    }


def _pods(phase: str) -> list[dict[str, Any]]:
    return [
        {"metadata": {"name": f"m-{i}"}, "spec": {"nodeName": "n"}, "status": {"phase": phase}}
        for i in range(2)
    ]


def _conditions(status: TrainingJobStatus) -> set[tuple[str, str, str]]:
    return {(c.type, c.status, c.reason) for c in status.conditions}


def test_trainingjob_end_state_does_not_depend_on_whether_running_was_observed() -> None:
    """Behind a faulty connection the operator may first see a job already finished: same conditions."""
    seen_running = trainingjob_status.observe(
        TJ_SPEC, 1, TrainingJobStatus(), _job(False), _pods("Running"), now=NOW
    )
    after_running = trainingjob_status.observe(
        TJ_SPEC, 1, seen_running.status, _job(True), _pods("Succeeded"), now=NOW
    )
    only_done = trainingjob_status.observe(
        TJ_SPEC, 1, TrainingJobStatus(), _job(True), _pods("Succeeded"), now=NOW
    )
    assert _conditions(only_done.status) == _conditions(after_running.status)
    assert ("Running", "False", "Finished") in _conditions(only_done.status)


def _deployment(replicas: int, available: int, condition: str) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [{"type": "Available", "status": condition, "message": "minimum availability"}],
        },
    }


def _md_observe(deployment: dict[str, Any], replicas_min: int = 4) -> ModelDeploymentStatus:
    body: dict[str, Any] = {
        "model": {"name": "iris", "alias": "champion"},
        "replicas": {"min": replicas_min, "max": 4},
    }
    if replicas_min == 0:
        body["autoscaling"] = {"scaleToZero": True}
    spec = ModelDeploymentSpec.model_validate(body)
    resolved = modeldeployment_status.Resolution(1, "Resolved", "alias champion of iris points to version 1")
    return modeldeployment_status.observe(
        spec,
        1,
        ModelDeploymentStatus(),
        resolved,
        None,
        (1, None),
        {"primary": deployment},
        "http://iris.prod.svc:8080",
        "models:/iris/1",
        NOW,
    ).status


def test_modeldeployment_stays_available_when_one_of_four_replicas_is_gone() -> None:
    """maxUnavailable is 0, so the Deployment's Available condition drops with one pod: 3 still serve."""
    status = _md_observe(_deployment(4, 3, "False"))
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions["Available"] == ("True", "MinimumReplicasAvailable")
    assert conditions["Ready"] == ("True", "Serving")


def test_modeldeployment_without_any_replica_is_not_available() -> None:
    status = _md_observe(_deployment(4, 0, "False"))
    assert {c.type: c.status for c in status.conditions}["Available"] == "False"


def test_an_event_lost_to_a_dropped_connection_does_not_fail_the_reconcile(monkeypatch: Any) -> None:
    """Events are best effort: a connection dropped on every attempt is logged, not raised."""
    import urllib3

    from mlops_operator.kube import client as kube
    from mlops_operator.kube.client import KubeClient
    from mlops_operator.kube.connection import ApiServer

    attempts = []

    def dropped(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())

    api = ApiServer()
    monkeypatch.setattr(api, "request", dropped)
    monkeypatch.setattr(kube.time, "sleep", lambda _seconds: None)
    body = {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "md", "namespace": "ns", "uid": "u"},
    }
    KubeClient(api, field_manager="test", annotation_prefix="test/").post_event(
        body, "Normal", "Initial", "revision 1"
    )
    assert len(attempts) == 3
