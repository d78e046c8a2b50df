"""TrainingJob controller: keeps a TrainingJob's Job (+ headless Service) applied and its status true to
what the Job, its pods, the scheduler and MLflow report.

One level-based :meth:`TrainingJobController.reconcile`: parse the spec once (invalid -> ``Valid=False``, an
Event, no crash loop), server-side apply the desired children that differ from what is live
(``KubeClient.apply_if_changed``), then recompute the status from observations (``status.observe``, pure) and
patch it only when it changed. Triggers (``machinery.triggers.Rails``, wired by the runner): the TrainingJob's
own events when it is new or its spec changed (nothing is written on the object to remember it),
status-relevant changes of its Job (:meth:`TrainingJobController.job_event_matters`, coalesced), and the
resync loop while the job is unfinished and can change without a Job event (:meth:`needs_resync`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final

from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import API_VERSION
from mlops_operator.api.v1alpha1.common import set_condition
from mlops_operator.api.v1alpha1.trainingjob import (
    FINISHED_PHASES,
    KIND,
    Failure,
    TrainingJobSpec,
    TrainingJobStatus,
)
from mlops_operator.config import OperatorConfig
from mlops_operator.controllers.trainingjob.status import RunObservation, observe
from mlops_operator.kube.client import KubeClient
from mlops_operator.kube.connection import ApiError
from mlops_operator.machinery.publishing import StatusPublisher, describe_validation_error
from mlops_operator.machinery.transitions import Transition
from mlops_operator.mlflow_registry import registry_for
from mlops_operator.resources.common import Owner, PodDefaults, owner_label_key
from mlops_operator.resources.trainingjob import (
    desired_children,
    job_name,
    resolved_image,
)

#: The label on a TrainingJob's children naming it (what the Job watch selects on).
OWNER_LABEL: Final = owner_label_key(KIND)
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


def job_summary(job: Mapping[str, Any]) -> Hashable:
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


_NO_JOB_STATUS: Final = job_summary({})


class TrainingJobController:
    """The I/O of the TrainingJob kind: what it reads (the apiserver, MLflow runs) and writes (children,
    status), with the operator's defaults."""

    def __init__(
        self,
        client: KubeClient,
        publisher: StatusPublisher,
        config: OperatorConfig,
        run_reader: RunReader = read_run_from_mlflow,
    ) -> None:
        self.client = client
        self.publisher = publisher
        self.config = config
        self.defaults = PodDefaults(
            runtime_image=config.runtime_image, mlflow_tracking_uri=config.mlflow_tracking_uri
        )
        self.run_reader = run_reader
        #: Per Job uid, what its last event said (see job_summary).
        self._job_summaries: dict[str, Hashable] = {}
        self._lock = threading.Lock()

    def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.client.get(API_VERSION, KIND, namespace, name)

    def job_event_matters(self, job: Mapping[str, Any], event_type: str | None) -> bool:
        """Whether an event of an owned Job may change its TrainingJob's status. Pods are not watched (a
        cluster-wide watch of every pod, filtered client-side, for state the Job's status already
        summarises): Job status changes bring the reconcile that lists the job's pods; pods stuck Pending
        are seen by the resync of unfinished jobs."""
        uid = job.get("metadata", {}).get("uid", "")
        summary = job_summary(job)
        with self._lock:
            if event_type == "DELETED":
                self._job_summaries.pop(uid, None)
                return True
            previous = self._job_summaries.get(uid)
            self._job_summaries[uid] = summary
        if event_type is None:
            return False  # the initial listing: parents are reconciled on their own listing and by resync
        # our own apply (ADDED) or a change that says nothing new about the training
        return not (summary == previous or (previous is None and summary == _NO_JOB_STATUS))

    def reconcile(self, body: Mapping[str, Any]) -> TrainingJobStatus:
        """Bring one TrainingJob's children and status up to date. Safe to call any number of times."""
        owner = Owner.from_body(body)
        generation = body["metadata"].get("generation")
        previous = TrainingJobStatus.model_validate(body.get("status") or {})
        try:
            spec = TrainingJobSpec.model_validate(body["spec"])
        except ValidationError as error:
            message = describe_validation_error(error)
            return self.publisher.report_invalid(
                body,
                previous,
                message,
                generation,
                phase="Failed",
                failure=Failure(reason="InvalidSpec", message=message),
            )

        defaults = self.defaults
        job = self.client.get("batch/v1", "Job", owner.namespace, job_name(owner))
        spec_applied: tuple[bool, str] = (True, "")
        if previous.phase not in FINISHED_PHASES:
            job, spec_applied = self._apply_children(owner, spec, job)
        if job is None and previous.phase in FINISHED_PHASES:
            return previous  # the Job was cleaned up (ttlSecondsAfterFinished); the verdict stands
        pods = (
            self.client.list_objects("v1", "Pod", owner.namespace, f"{OWNER_LABEL}={owner.label_value}")
            if _may_have_pods(job)
            else []
        )
        pending = [p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Pending"]
        tracking_uri = (spec.mlflow.tracking_uri if spec.mlflow else None) or defaults.mlflow_tracking_uri
        run = self._read_run(owner, tracking_uri, spec.experiment_name) if job else None
        observation = observe(
            spec,
            generation,
            previous,
            job,
            pods,
            scheduler_messages=self.client.scheduler_messages(owner.namespace, pending),
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
            status.conditions = set_condition(
                status.conditions, SPEC_APPLIED, "True", "Applied", "", generation
            )
        self.publisher.publish(body, previous, status, observation.transitions)
        return status

    def _apply_children(
        self, owner: Owner, spec: TrainingJobSpec, existing: dict[str, Any] | None
    ) -> tuple[dict[str, Any] | None, tuple[bool, str]]:
        """Apply every desired child. Returns the Job as the apiserver now has it (server-side apply answers
        with the object) and (False, why) when it refuses a change to a running Job."""
        job = existing
        for child in desired_children(owner, spec, self.defaults, job_exists=existing is not None):
            if child["kind"] == "Job":
                live = existing
            else:  # the headless Service (listed: the chart's least-privilege RBAC grants no get on Services)
                live = next(
                    (
                        item
                        for item in self.client.list_objects(
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
                applied, _ = self.client.apply_if_changed(child, live)
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

    def _read_run(self, owner: Owner, tracking_uri: str | None, experiment: str) -> RunObservation | None:
        try:
            return self.run_reader(owner.uid, tracking_uri, experiment)
        except Exception as error:  # MLflow down must not stop Kubernetes-side status from updating
            logger.warning("reading MLflow run of %s/%s failed: %s", owner.namespace, owner.name, error)
            return None

    def needs_resync(self, body: Mapping[str, Any]) -> bool:
        """Unfinished jobs whose state can change without an event of their Job: MLflow progress (when a
        tracking URI is configured), pods stuck Pending (unschedulable, image pulls: phases before Running)
        and multi-node jobs (one pod may be stuck while another runs). A running single-pod job without
        MLflow changes only through its Job's status, which triggers a reconcile anyway."""
        phase = (body.get("status") or {}).get("phase")
        if phase in FINISHED_PHASES:
            return False
        if phase != "Running":
            return True
        spec = body.get("spec") or {}
        if ((spec.get("resources") or {}).get("nodes") or 1) > 1:
            return True
        return bool(((spec.get("mlflow") or {}).get("trackingUri")) or self.defaults.mlflow_tracking_uri)


def _may_have_pods(job: Mapping[str, Any] | None) -> bool:
    """No Job, or a Job whose status counts no pod at all (just created, suspended): nothing to list."""
    if job is None:
        return False
    status = job.get("status") or {}
    return any(status.get(key) for key in ("active", "ready", "succeeded", "failed", "terminating"))


def _reason(error: ApiError) -> str:
    try:
        message: str = json.loads(error.body or "{}").get("message", "")
    except ValueError:
        message = ""
    return message or str(error.reason)
