"""DriftPolicy controller: scrape the target ModelDeployment's model servers, evaluate drift against the
served version's reference profile every ``intervalSeconds``, retrain from the template on sustained drift,
and promote the retrained version (move the alias the deployment follows) when it passes.

I/O lives here; the decisions are in ``driftpolicy_status`` (pure) and the statistics in ``drift``.
Drift scores are also exported as Prometheus gauges from the operator (``--metrics-port``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import kopf
from pydantic import ValidationError

from mlops_operator.api.v1alpha1 import API_VERSION, GROUP, LABEL_PREFIX, VERSION
from mlops_operator.api.v1alpha1 import pod_contract as pc
from mlops_operator.api.v1alpha1.common import VALID, set_condition, utcnow
from mlops_operator.api.v1alpha1.driftpolicy import (
    KIND,
    DriftPolicySpec,
    DriftPolicyStatus,
    Evaluation,
    HistoryEntry,
    PromotionRecord,
    RetrainRecord,
)
from mlops_operator.api.v1alpha1.modeldeployment import KIND as MD_KIND
from mlops_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from mlops_operator.api.v1alpha1.trainingjob import KIND as TJ_KIND
from mlops_operator.api.v1alpha1.trainingjob import TrainingJobStatus
from mlops_operator.config import OperatorConfig
from mlops_operator.controllers import kube, resync
from mlops_operator.controllers.apiserver import ApiError
from mlops_operator.controllers.common import (
    RETRY_BACKOFF_SECONDS,
    Transition,
    describe_validation_error,
    operator_config,
    publish,
)
from mlops_operator.controllers.drift_evaluation import evaluate_window, export_metrics
from mlops_operator.controllers.drift_prometheus import PrometheusUnavailableError, query_window_counts
from mlops_operator.controllers.drift_window import WindowedCounts, parse_feature_counters
from mlops_operator.controllers.driftpolicy_status import (
    AWAITING_APPROVAL,
    PROMOTED,
    READY,
    RETRAINING,
    apply_evaluation,
    promotion_decision,
    retrain_due,
    with_condition,
    with_history,
)
from mlops_operator.mlflow_registry import RegistryError, registry_for
from mlops_operator.resources.common import Owner
from mlops_operator.resources.driftpolicy import retrain_trainingjob
from mlops_operator.resources.modeldeployment import PRIMARY, ROLE_LABEL

if TYPE_CHECKING:  # numpy: imported by the first evaluation, not at start
    from mlops_operator.drift.profile import ReferenceProfile

PLURAL: Final = "driftpolicies"
APPROVE_ANNOTATION: Final = f"{LABEL_PREFIX}approve-version"
SCRAPE_TIMEOUT_SECONDS: Final = 2.0

logger = logging.getLogger(__name__)

_windows: dict[tuple[str, str, str], WindowedCounts] = {}
_windows_lock = threading.Lock()
_profiles: dict[tuple[str | None, str, int], ReferenceProfile] = {}


def _window_for(namespace: str, policy: str, target: str) -> WindowedCounts:
    with _windows_lock:
        return _windows.setdefault((namespace, policy, target), WindowedCounts())


def _profile(tracking_uri: str | None, model: str, version: int) -> ReferenceProfile:
    key = (tracking_uri, model, version)
    if key not in _profiles:
        _profiles[key] = registry_for(tracking_uri).reference_profile(model, version)
    return _profiles[key]


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.update(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
def reconcile_handler(body: kopf.Body, **_: Any) -> None:
    reconcile(cast(Mapping[str, Any], body))


@kopf.on.event(GROUP, VERSION, "trainingjobs", labels={f"{GROUP}/driftpolicy": kopf.PRESENT})
def retrain_event_handler(body: kopf.Body, **_: Any) -> None:
    """A retrain finished: decide on promotion at once instead of at the next scrape."""
    phase = (body.get("status") or {}).get("phase")
    if phase not in ("Succeeded", "Failed"):
        return
    for reference in body.get("metadata", {}).get("ownerReferences") or ():
        if reference.get("kind") == KIND:
            policy = kube.get(API_VERSION, KIND, body["metadata"]["namespace"], reference["name"])
            if policy is not None:
                reconcile(policy, evaluate=False)


def _scrape(namespace: str, target: Owner, window: WindowedCounts, now: dt.datetime) -> int:
    """Scrape every ready primary server of the target; returns how many answered."""
    selector = f"{target.label_key}={target.label_value},{ROLE_LABEL}={PRIMARY}"
    pods = kube.list_objects("v1", "Pod", namespace, selector)
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


def reconcile(body: Mapping[str, Any], evaluate: bool = True) -> DriftPolicyStatus:
    owner = Owner.from_body(body)
    metadata = body["metadata"]
    generation = metadata.get("generation")
    previous = DriftPolicyStatus.model_validate(body.get("status") or {})
    now = utcnow()
    try:
        spec = DriftPolicySpec.model_validate(body["spec"])
    except ValidationError as error:
        message = describe_validation_error(error)
        status = previous.model_copy(
            update={
                "conditions": set_condition(
                    previous.conditions, VALID, "False", "InvalidSpec", message, generation
                )
            }
        )
        _publish(body, previous, status, [Transition("Warning", "InvalidSpec", message)])
        return status

    status = previous
    transitions: list[Transition] = []
    target_body = kube.get(API_VERSION, MD_KIND, owner.namespace, spec.target_ref.name)
    if target_body is None:
        message = f"ModelDeployment {spec.target_ref.name} not found in {owner.namespace}"
        status = with_condition(status, READY, "False", "TargetNotFound", message, generation, now)
        _publish(
            body,
            previous,
            status,
            []
            if _same_reason(previous, READY, "TargetNotFound")
            else [Transition("Warning", "TargetNotFound", message)],
        )
        return status
    target = Owner.from_body(target_body)
    target_spec = ModelDeploymentSpec.model_validate(target_body["spec"])
    target_status = ModelDeploymentStatus.model_validate(target_body.get("status") or {})
    defaults = operator_config()
    tracking_uri = (
        target_spec.mlflow.tracking_uri if target_spec.mlflow else None
    ) or defaults.mlflow_tracking_uri

    window = _window_for(owner.namespace, owner.name, spec.target_ref.name)
    if spec.source is None:  # scrape the servers ourselves; with Prometheus, it keeps the history
        _scrape(owner.namespace, target, window, now)
    last = previous.last_evaluation
    due = evaluate and (last is None or (now - last.time).total_seconds() >= spec.interval_seconds)
    if due:
        evaluation = _evaluate(
            spec,
            owner.namespace,
            window,
            target_spec.model.name,
            target_status.resolved_version,
            tracking_uri,
            now,
        )
        status, transitions = apply_evaluation(spec, status, evaluation, generation)
        export_metrics(owner.namespace, owner.name, evaluation)

    phase, retrain = _read_retrain(owner.namespace, status)
    status, started = _maybe_retrain(owner, spec, status, phase, now, generation)
    transitions += started
    if not started:  # a retrain that just started has nothing to promote yet
        status, more = _maybe_promote(
            spec, status, phase, retrain, metadata, target_spec.model.name, tracking_uri, now, generation
        )
        transitions += more
    _publish(body, previous, status, transitions)
    return status


def _same_reason(status: DriftPolicyStatus, type_: str, reason: str) -> bool:
    return any(c.type == type_ and c.reason == reason for c in status.conditions)


def _evaluate(
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
        profile = _profile(tracking_uri, model, version)
    except RegistryError as error:
        return Evaluation(
            time=now, model_version=version, message=f"no reference profile for {model} v{version}: {error}"
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


def _read_retrain(namespace: str, status: DriftPolicyStatus) -> tuple[str | None, TrainingJobStatus | None]:
    """Phase ("Gone" when deleted) and status of the last retrain TrainingJob, if any."""
    if status.last_retrain is None:
        return None, None
    job = kube.get(API_VERSION, TJ_KIND, namespace, status.last_retrain.name)
    if job is None:
        return "Gone", None
    job_status = TrainingJobStatus.model_validate(job.get("status") or {})
    return job_status.phase, job_status


def _maybe_retrain(
    owner: Owner,
    spec: DriftPolicySpec,
    status: DriftPolicyStatus,
    phase: str | None,
    now: dt.datetime,
    generation: int | None,
) -> tuple[DriftPolicyStatus, list[Transition]]:
    due, why = retrain_due(spec, status, now, phase)
    if not due or spec.action is None:
        if status.last_retrain is not None and phase not in ("Succeeded", "Failed", "Gone"):
            status = with_condition(status, RETRAINING, "True", "RetrainRunning", why, generation, now)
        return status, []
    number = 1 + sum(1 for entry in status.history if entry.action and entry.action.startswith("Retrain "))
    evaluated_at = status.last_evaluation.time if status.last_evaluation else now
    manifest = retrain_trainingjob(owner, spec.action.retrain.template, number, evaluated_at, why)
    name = manifest["metadata"]["name"]
    try:
        kube.create(manifest)
    except ApiError as error:
        if error.status != 409:  # 409: created by an earlier attempt of this very decision
            raise
    today = now.date()
    record = RetrainRecord(name=name, time=now, reason=why)
    status = status.model_copy(
        update={
            "last_retrain": record,
            "retrains_today": (status.retrains_today if status.retrains_day == today else 0) + 1,
            "retrains_day": today,
        }
    )
    status = with_condition(
        status, RETRAINING, "True", "RetrainStarted", f"created TrainingJob {name}: {why}", generation, now
    )
    if status.history:
        status = status.model_copy(
            update={
                "history": [
                    status.history[0].model_copy(update={"action": f"Retrain {name}"}),
                    *status.history[1:],
                ]
            }
        )
    else:
        status = with_history(status, HistoryEntry(time=now, action=f"Retrain {name}"))
    return status, [Transition("Normal", "RetrainStarted", f"created TrainingJob {name}: {why}")]


def _maybe_promote(
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
    if spec.promotion is None:
        return status, []
    if retrain is None or phase not in ("Succeeded", "Failed"):
        return status, []
    metrics: dict[str, float] = {}
    registry = registry_for(tracking_uri)
    if retrain.mlflow_run_id and spec.promotion.gate and spec.promotion.gate.metrics:
        metrics = registry.run_metrics(retrain.mlflow_run_id)
    approved = (metadata.get("annotations") or {}).get(APPROVE_ANNOTATION)
    decision = promotion_decision(
        spec, status, retrain, metrics, int(approved) if approved and approved.isdigit() else None
    )
    alias = spec.promotion.alias
    if decision.action == "none":
        return status, []
    if decision.action == "reject":
        if any(
            (c.type, c.reason, c.message) == (PROMOTED, "PromotionRejected", decision.message)
            for c in status.conditions
        ):
            return status, []  # already said
        status = with_condition(
            status,
            RETRAINING,
            "False",
            "RetrainFinished",
            f"{status.last_retrain.name if status.last_retrain else ''} {phase}",
            generation,
            now,
        )
        status = with_condition(
            status, PROMOTED, "False", "PromotionRejected", decision.message, generation, now
        )
        return status, [Transition("Warning", "PromotionRejected", decision.message)]
    assert decision.version is not None
    if decision.action == "await":
        if status.last_promotion is not None and status.last_promotion.version == decision.version:
            return status, []
        record = PromotionRecord(version=decision.version, alias=alias, time=now, pending=True)
        status = status.model_copy(update={"last_promotion": record})
        status = with_condition(
            status, AWAITING_APPROVAL, "True", "AwaitingApproval", decision.message, generation, now
        )
        return status, [Transition("Normal", "AwaitingApproval", decision.message)]
    holder = registry.find_alias(model, alias)
    previous_version = holder.version if holder else None
    registry.set_alias(model, alias, decision.version)
    record = PromotionRecord(
        version=decision.version, previous_version=previous_version, alias=alias, time=now
    )
    message = f"moved {alias} of {model} from {previous_version} to version {decision.version}"
    status = status.model_copy(update={"last_promotion": record})
    status = with_condition(
        status,
        RETRAINING,
        "False",
        "RetrainFinished",
        f"{status.last_retrain.name if status.last_retrain else ''} succeeded",
        generation,
        now,
    )
    status = with_condition(status, PROMOTED, "True", "Promoted", message, generation, now)
    if any(c.type == AWAITING_APPROVAL for c in status.conditions):
        status = with_condition(status, AWAITING_APPROVAL, "False", "Approved", message, generation, now)
    status = with_history(status, HistoryEntry(time=now, action=f"Promoted v{decision.version}"))
    return status, [Transition("Normal", "Promoted", message)]


def _publish(
    body: Mapping[str, Any],
    previous: DriftPolicyStatus,
    status: DriftPolicyStatus,
    transitions: list[Transition],
) -> None:
    publish(body, previous.to_dict(), status.to_dict(), transitions)


resync.register(
    API_VERSION, KIND, interval=OperatorConfig.from_env().drift_scrape_interval_seconds, reconcile=reconcile
)
