"""DriftPolicy controller: scrapes the target ModelDeployment's model servers (or asks Prometheus),
evaluates drift against the served version's reference profile every ``intervalSeconds``, retrains from the
template on sustained drift, and promotes the retrained version (moves the alias the deployment follows)
when it passes.

On the same rails as the other kinds (``machinery.triggers.Rails``, wired by the runner): its own events when
it is new, its spec or an annotation (an approval) changed; events of its retrain TrainingJobs when they
finish (coalesced: promotion is decided at once, not at the next scrape); and the resync loop every scrape
interval. I/O lives here; the decisions are the plans of ``status`` (pure) and the statistics are in
``mlops_operator.drift``. Drift scores are exported as Prometheus gauges (``evaluation.DriftMetrics``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import API_VERSION, LABEL_PREFIX
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.common import READY, utcnow
from mlops_operator.api.v1alpha1.driftpolicy import KIND, DriftPolicySpec, DriftPolicyStatus, Evaluation
from mlops_operator.api.v1alpha1.modeldeployment import KIND as MD_KIND
from mlops_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from mlops_operator.api.v1alpha1.trainingjob import FINISHED_PHASES, TrainingJobStatus
from mlops_operator.api.v1alpha1.trainingjob import KIND as TJ_KIND
from mlops_operator.config import OperatorConfig
from mlops_operator.controllers.driftpolicy.evaluation import DriftMetrics, evaluate_window
from mlops_operator.controllers.driftpolicy.prometheus import (
    PrometheusUnavailableError,
    query_window_counts,
)
from mlops_operator.controllers.driftpolicy.status import (
    after_promotion,
    apply_evaluation,
    needs_run_metrics,
    plan_promotion,
    plan_retrain,
    with_condition,
)
from mlops_operator.controllers.driftpolicy.window import WindowedCounts, parse_feature_counters
from mlops_operator.kube.client import KubeClient
from mlops_operator.kube.connection import ApiError
from mlops_operator.machinery.publishing import StatusPublisher, describe_validation_error
from mlops_operator.machinery.transitions import Transition
from mlops_operator.mlflow_registry import Registry, RegistryError, registry_for
from mlops_operator.resources.common import Owner, owner_label_key
from mlops_operator.resources.modeldeployment import PRIMARY, ROLE_LABEL

if TYPE_CHECKING:  # numpy: imported by the first evaluation, not at start
    from mlops_operator.drift.profile import ReferenceProfile

APPROVE_ANNOTATION: Final = f"{LABEL_PREFIX}approve-version"
#: The label on a DriftPolicy's retrain TrainingJobs naming it (what the TrainingJob watch selects on).
OWNER_LABEL: Final = owner_label_key(KIND)
SCRAPE_TIMEOUT_SECONDS: Final = 2.0

logger = logging.getLogger(__name__)


class DriftPolicyController:
    """The I/O of the DriftPolicy kind: the model servers it scrapes, Prometheus, the registry (profiles,
    run metrics, aliases), the apiserver (targets, retrain TrainingJobs, status), and what it keeps in
    memory per policy (the scraped window) and per model version (its reference profile)."""

    def __init__(
        self,
        client: KubeClient,
        publisher: StatusPublisher,
        config: OperatorConfig,
        metrics: DriftMetrics,
        registry: Callable[[str | None], Registry] = registry_for,
    ) -> None:
        self.client = client
        self.publisher = publisher
        self.config = config
        self.metrics = metrics
        self.registry = registry
        self._windows: dict[tuple[str, str], WindowedCounts] = {}
        self._profiles: dict[tuple[str | None, str, int], ReferenceProfile] = {}
        self._lock = threading.Lock()

    def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.client.get(API_VERSION, KIND, namespace, name)

    def forget(self, body: Mapping[str, Any]) -> None:
        """The policy was deleted: its window and gauges go with it."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        with self._lock:
            self._windows.pop((namespace, name), None)
        self.metrics.forget(namespace, name)

    @staticmethod
    def retrain_event_matters(trainingjob: Mapping[str, Any]) -> bool:
        """A retrain finished: decide on promotion at once instead of at the next scrape."""
        return (trainingjob.get("status") or {}).get("phase") in FINISHED_PHASES

    def _window(self, namespace: str, policy: str, target: str) -> WindowedCounts:
        """The scraped window of a policy; a new target starts a new one."""
        with self._lock:
            window = self._windows.get((namespace, policy))
            if window is None or window.target != target:
                window = self._windows[(namespace, policy)] = WindowedCounts(target=target)
            return window

    def _profile(self, tracking_uri: str | None, model: str, version: int) -> ReferenceProfile:
        key = (tracking_uri, model, version)
        profile = self._profiles.get(key)
        if profile is None:
            profile = self._profiles[key] = self.registry(tracking_uri).reference_profile(model, version)
        return profile

    def _scrape(self, namespace: str, target: Owner, window: WindowedCounts, now: dt.datetime) -> int:
        """Scrape every ready primary server of the target; returns how many answered."""
        selector = f"{target.label_key}={target.label_value},{ROLE_LABEL}={PRIMARY}"
        pods = self.client.list_objects("v1", "Pod", namespace, selector)
        answered = 0
        live = []
        for pod in pods:
            status = pod.get("status", {})
            ip = status.get("podIP")
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ()
            )
            if not ip or not ready or pod["metadata"].get("deletionTimestamp"):
                continue
            uid = pod["metadata"]["uid"]
            live.append(uid)
            try:
                url = f"http://{ip}:{pc.DEFAULT_SERVER_PORT}/metrics"
                with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as response:
                    text = response.read().decode()
            except OSError as error:
                logger.info("scraping %s/%s failed: %s", namespace, pod["metadata"]["name"], error)
                continue
            started = dt.datetime.fromisoformat(
                (status.get("startTime") or now.isoformat()).replace("Z", "+00:00")
            )
            window.add(uid, started, now, parse_feature_counters(text))
            answered += 1
        window.forget_except(live)
        return answered

    def reconcile(self, body: Mapping[str, Any]) -> DriftPolicyStatus:
        owner = Owner.from_body(body)
        metadata = body["metadata"]
        generation = metadata.get("generation")
        previous = DriftPolicyStatus.model_validate(body.get("status") or {})
        now = utcnow()
        try:
            spec = DriftPolicySpec.model_validate(body["spec"])
        except ValidationError as error:
            return self.publisher.report_invalid(body, previous, describe_validation_error(error), generation)

        status = previous
        transitions: list[Transition] = []
        target_body = self.client.get(API_VERSION, MD_KIND, owner.namespace, spec.target_ref.name)
        if target_body is None:
            message = f"ModelDeployment {spec.target_ref.name} not found in {owner.namespace}"
            status = with_condition(status, READY, "False", "TargetNotFound", message, generation, now)
            said = any(c.type == READY and c.reason == "TargetNotFound" for c in previous.conditions)
            told = [] if said else [Transition("Warning", "TargetNotFound", message)]
            self.publisher.publish(body, previous, status, told)
            return status
        target = Owner.from_body(target_body)
        target_spec = ModelDeploymentSpec.model_validate(target_body["spec"])
        target_status = ModelDeploymentStatus.model_validate(target_body.get("status") or {})
        tracking_uri = (
            target_spec.mlflow.tracking_uri if target_spec.mlflow else None
        ) or self.config.mlflow_tracking_uri

        window = self._window(owner.namespace, owner.name, spec.target_ref.name)
        if spec.source is None:  # scrape the servers ourselves; with Prometheus, it keeps the history
            self._scrape(owner.namespace, target, window, now)
        last = previous.last_evaluation
        if last is None or (now - last.time).total_seconds() >= spec.interval_seconds:
            evaluation = self._evaluate(
                spec,
                owner.namespace,
                window,
                target_spec.model.name,
                target_status.resolved_version,
                tracking_uri,
                now,
            )
            status, transitions = apply_evaluation(spec, status, evaluation, generation)
            self.metrics.export(owner.namespace, owner.name, evaluation)

        phase, retrain = self._read_retrain(owner.namespace, status)
        retrain_plan = plan_retrain(owner, spec, status, phase, now, generation)
        status = retrain_plan.status
        transitions += retrain_plan.transitions
        if retrain_plan.trainingjob is not None:
            try:
                self.client.create(retrain_plan.trainingjob)
            except ApiError as error:
                if error.status != 409:  # 409: created by an earlier attempt of this very decision
                    raise
        else:  # a retrain that just started has nothing to promote yet
            status, more = self._promote(
                spec, status, phase, retrain, metadata, target_spec.model.name, tracking_uri, now, generation
            )
            transitions += more
        self.publisher.publish(body, previous, status, transitions)
        return status

    def _evaluate(
        self,
        spec: DriftPolicySpec,
        namespace: str,
        window: WindowedCounts,
        model: str,
        version: int | None,
        tracking_uri: str | None,
        now: dt.datetime,
    ) -> Evaluation:
        if version is None:
            return Evaluation(time=now, message="the target serves no model version yet")
        try:
            profile = self._profile(tracking_uri, model, version)
        except RegistryError as error:
            return Evaluation(
                time=now,
                model_version=version,
                message=f"no reference profile for {model} v{version}: {error}",
            )
        if spec.source is not None:
            url = spec.source.prometheus.url
            try:
                counts = query_window_counts(url, namespace, spec.target_ref.name, spec.window_seconds)
            except PrometheusUnavailableError as error:
                return Evaluation(time=now, model_version=version, message=str(error))
        else:
            counts, _ = window.window(now, dt.timedelta(seconds=spec.window_seconds))
        return evaluate_window(spec, profile, counts, now, version)

    def _read_retrain(
        self, namespace: str, status: DriftPolicyStatus
    ) -> tuple[str | None, TrainingJobStatus | None]:
        """Phase ("Gone" when deleted) and status of the last retrain TrainingJob, if any."""
        if status.last_retrain is None:
            return None, None
        job = self.client.get(API_VERSION, TJ_KIND, namespace, status.last_retrain.name)
        if job is None:
            return "Gone", None
        job_status = TrainingJobStatus.model_validate(job.get("status") or {})
        return job_status.phase, job_status

    def _promote(
        self,
        spec: DriftPolicySpec,
        status: DriftPolicyStatus,
        phase: str | None,
        retrain: TrainingJobStatus | None,
        metadata: Mapping[str, Any],
        model: str,
        tracking_uri: str | None,
        now: dt.datetime,
        generation: int | None,
    ) -> tuple[DriftPolicyStatus, list[Transition]]:
        """Gather what the promotion decision needs, and carry out its plan."""
        metrics: dict[str, float] = {}
        if needs_run_metrics(spec, phase, retrain):
            assert retrain is not None and retrain.mlflow_run_id is not None
            metrics = self.registry(tracking_uri).run_metrics(retrain.mlflow_run_id)
        approved = (metadata.get("annotations") or {}).get(APPROVE_ANNOTATION)
        approved_version = int(approved) if approved and approved.isdigit() else None
        plan = plan_promotion(spec, status, phase, retrain, metrics, approved_version, now, generation)
        if plan.promote is None or spec.promotion is None:
            return plan.status, plan.transitions
        alias = spec.promotion.alias
        registry = self.registry(tracking_uri)
        holder = registry.find_alias(model, alias)
        previous_version = holder.version if holder else None
        registry.set_alias(model, alias, plan.promote)
        return after_promotion(spec, plan.status, model, plan.promote, previous_version, now, generation)
