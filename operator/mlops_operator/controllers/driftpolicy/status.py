"""DriftPolicy decisions, pure: fold an evaluation into status, decide whether to retrain (sustained drift,
cooldown, daily limit, one at a time) and whether to promote the retrained version (its gate, the policy's
gate, manual approval). Decisions come back as plans (:class:`RetrainPlan`, :class:`PromotionPlan`): the new
status, its transitions and the order the controller carries out (create this TrainingJob, move the alias)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from mlops_operator.api.v1alpha1.common import READY, VALID, ConditionStatus, compare, set_condition
from mlops_operator.api.v1alpha1.driftpolicy import (
    MAX_HISTORY,
    DriftPolicySpec,
    DriftPolicyStatus,
    Evaluation,
    HistoryEntry,
    PromotionRecord,
    RetrainRecord,
)
from mlops_operator.api.v1alpha1.trainingjob import FINISHED_PHASES, TrainingJobStatus
from mlops_operator.machinery.transitions import Transition
from mlops_operator.resources.common import Owner
from mlops_operator.resources.driftpolicy import retrain_trainingjob

DRIFTED: Final = "Drifted"
RETRAINING: Final = "Retraining"
PROMOTED: Final = "Promoted"
AWAITING_APPROVAL: Final = "AwaitingApproval"


def with_condition(
    status: DriftPolicyStatus,
    type_: str,
    value: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
) -> DriftPolicyStatus:
    conditions = set_condition(status.conditions, type_, value, reason, message, generation, now)
    return status.model_copy(update={"conditions": conditions})


def with_history(status: DriftPolicyStatus, entry: HistoryEntry) -> DriftPolicyStatus:
    return status.model_copy(update={"history": [entry, *status.history][:MAX_HISTORY]})


def skipped(spec: DriftPolicySpec, evaluation: Evaluation) -> bool:
    """An evaluation that is no verdict: no profile, counters that do not fit, too few samples."""
    return evaluation.drifted_share is None or evaluation.samples < spec.min_samples


def summarize(evaluation: Evaluation) -> str:
    """``3/4 features drifted (petal_length ks p=0.001, ...)`` or the reason it was skipped."""
    if evaluation.message:
        return evaluation.message
    drifted = [f for f in evaluation.feature_scores if f.drifted]
    parts = []
    for score in sorted(drifted, key=lambda f: f.p_value if f.p_value is not None else -f.score)[:4]:
        value = f"p={score.p_value:.3g}" if score.p_value is not None else f"score={score.score:.3g}"
        parts.append(f"{score.feature} {score.method} {value}")
    total = len(evaluation.feature_scores)
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"{len(drifted)}/{total} features drifted on {evaluation.samples} samples{detail}"


def apply_evaluation(
    spec: DriftPolicySpec, previous: DriftPolicyStatus, evaluation: Evaluation, generation: int | None
) -> tuple[DriftPolicyStatus, list[Transition]]:
    now = evaluation.time
    status = previous.model_copy(update={"last_evaluation": evaluation, "observed_generation": generation})
    status = with_condition(status, VALID, "True", "SpecValid", "spec passed validation", generation, now)
    status = with_condition(
        status, READY, "True", "Evaluating", f"evaluating every {spec.interval_seconds}s", generation, now
    )
    transitions: list[Transition] = []
    message = summarize(evaluation)
    if skipped(spec, evaluation):  # too little traffic (or no profile): not a verdict, keep the drift state
        status = with_condition(status, DRIFTED, "Unknown", "InsufficientData", message, generation, now)
        if previous.last_evaluation is None or not skipped(spec, previous.last_evaluation):
            transitions.append(Transition("Normal", "InsufficientData", message))
    elif evaluation.drifted:
        since = previous.drifting_since or now
        status = status.model_copy(update={"drifted": True, "drifting_since": since})
        status = with_condition(status, DRIFTED, "True", "DriftDetected", message, generation, now)
        if not previous.drifted:
            transitions.append(Transition("Warning", "DriftDetected", message))
    else:
        status = status.model_copy(update={"drifted": False, "drifting_since": None})
        status = with_condition(status, DRIFTED, "False", "NoDrift", message, generation, now)
        if previous.drifted:
            transitions.append(Transition("Normal", "DriftCleared", message))
    entry = HistoryEntry(
        time=now,
        samples=evaluation.samples,
        drifted_share=evaluation.drifted_share,
        drifted=evaluation.drifted,
    )
    return with_history(status, entry), transitions


def retrain_due(
    spec: DriftPolicySpec, status: DriftPolicyStatus, now: dt.datetime, last_retrain_phase: str | None
) -> tuple[bool, str]:
    """Whether to create a retrain TrainingJob now, and why (not)."""
    if spec.action is None:
        return False, "no action configured: drift is only reported"
    if not status.drifted or status.drifting_since is None:
        return False, "no drift"
    sustained = (now - status.drifting_since).total_seconds()
    if sustained < spec.for_seconds:
        return False, f"drift for {sustained:.0f}s of the {spec.for_seconds}s required"
    if (
        status.last_retrain is not None
        and last_retrain_phase not in FINISHED_PHASES
        and last_retrain_phase != "Gone"
    ):
        return False, f"retrain {status.last_retrain.name} is still {last_retrain_phase or 'starting'}"
    if status.last_retrain is not None:
        cooldown_end = status.last_retrain.time + dt.timedelta(seconds=spec.action.cooldown_seconds)
        if now < cooldown_end:
            return False, f"cooldown after {status.last_retrain.name} until {cooldown_end.isoformat()}"
    today = now.date()
    done_today = status.retrains_today if status.retrains_day == today else 0
    if done_today >= spec.action.max_retrains_per_day:
        return False, f"{done_today} retrain(s) today, the limit is {spec.action.max_retrains_per_day}"
    return True, summarize(status.last_evaluation) if status.last_evaluation else "drift"


@dataclass(frozen=True)
class PromotionDecision:
    action: Literal["none", "promote", "reject", "await"]
    version: int | None = None
    message: str = ""


def promotion_decision(
    spec: DriftPolicySpec,
    status: DriftPolicyStatus,
    retrain: TrainingJobStatus | None,
    run_metrics: Mapping[str, float],
    approved_version: int | None,
) -> PromotionDecision:
    """What to do with the last retrain's model version."""
    if spec.promotion is None or status.last_retrain is None or retrain is None:
        return PromotionDecision("none")
    if retrain.phase not in FINISHED_PHASES:
        return PromotionDecision("none")
    name = status.last_retrain.name
    if retrain.phase == "Failed":
        failure = retrain.failure
        reason = f"{failure.reason}: {failure.message}" if failure else "failed"
        return PromotionDecision("reject", None, f"{name} registered no version ({reason})")
    version = retrain.model_version
    if version is None:
        return PromotionDecision("reject", None, f"{name} succeeded without registering a version")
    if (
        status.last_promotion is not None
        and status.last_promotion.version == version
        and not status.last_promotion.pending
    ):
        return PromotionDecision("none", version)
    if retrain.gate is not None and not retrain.gate.passed:
        return PromotionDecision(
            "reject", version, f"version {version} failed its gate: {retrain.gate.message}"
        )
    failures = []
    gate = spec.promotion.gate
    thresholds = list(gate.metrics or []) if gate is not None else []
    for threshold in thresholds:
        value = run_metrics.get(threshold.name)
        if value is None:
            failures.append(f"{threshold.name} was not logged")
        elif not compare(value, threshold.op, threshold.threshold):
            failures.append(
                f"{threshold.name} {value:.4g} is not {threshold.op} {threshold.threshold:g} "
                f"(off by {abs(value - threshold.threshold):.4g})"
            )
    if failures:
        return PromotionDecision("reject", version, f"version {version} not promoted: {'; '.join(failures)}")
    if spec.promotion.mode == "manual" and approved_version != version:
        return PromotionDecision(
            "await",
            version,
            f"version {version} passed; approve with annotation mlops.dev/approve-version={version}",
        )
    return PromotionDecision("promote", version, f"version {version} passed every gate")


# ------------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class RetrainPlan:
    """The status after deciding on a retrain, its transitions, and the TrainingJob to create (None: no
    retrain now)."""

    status: DriftPolicyStatus
    transitions: list[Transition]
    trainingjob: dict[str, Any] | None = None


@dataclass(frozen=True)
class PromotionPlan:
    """The status after deciding on a promotion, its transitions, and the version whose promotion the
    controller carries out (then :func:`after_promotion` records it)."""

    status: DriftPolicyStatus
    transitions: list[Transition]
    promote: int | None = None


def plan_retrain(
    owner: Owner,
    spec: DriftPolicySpec,
    status: DriftPolicyStatus,
    phase: str | None,
    now: dt.datetime,
    generation: int | None,
) -> RetrainPlan:
    """Whether to start a retrain now (:func:`retrain_due`), and the status that records it."""
    due, why = retrain_due(spec, status, now, phase)
    if not due or spec.action is None:
        if status.last_retrain is not None and phase not in ("Succeeded", "Failed", "Gone"):
            status = with_condition(status, RETRAINING, "True", "RetrainRunning", why, generation, now)
        return RetrainPlan(status, [])
    number = 1 + sum(1 for entry in status.history if entry.action and entry.action.startswith("Retrain "))
    evaluated_at = status.last_evaluation.time if status.last_evaluation else now
    manifest = retrain_trainingjob(owner, spec.action.retrain.template, number, evaluated_at, why)
    name = manifest["metadata"]["name"]
    today = now.date()
    record = RetrainRecord(name=name, time=now, reason=why)
    status = status.model_copy(
        update={
            "last_retrain": record,
            "retrains_today": (status.retrains_today if status.retrains_day == today else 0) + 1,
            "retrains_day": today,
        }
    )
    message = f"created TrainingJob {name}: {why}"
    status = with_condition(status, RETRAINING, "True", "RetrainStarted", message, generation, now)
    if status.history:
        latest = status.history[0].model_copy(update={"action": f"Retrain {name}"})
        status = status.model_copy(update={"history": [latest, *status.history[1:]]})
    else:
        status = with_history(status, HistoryEntry(time=now, action=f"Retrain {name}"))
    return RetrainPlan(status, [Transition("Normal", "RetrainStarted", message)], manifest)


def needs_run_metrics(spec: DriftPolicySpec, phase: str | None, retrain: TrainingJobStatus | None) -> bool:
    """The promotion decision needs the retrain run's metrics (the policy's own gate has thresholds)."""
    gate = spec.promotion.gate if spec.promotion is not None else None
    return (
        phase in FINISHED_PHASES
        and retrain is not None
        and bool(retrain.mlflow_run_id)
        and gate is not None
        and bool(gate.metrics)
    )


def plan_promotion(
    spec: DriftPolicySpec,
    status: DriftPolicyStatus,
    phase: str | None,
    retrain: TrainingJobStatus | None,
    run_metrics: Mapping[str, float],
    approved_version: int | None,
    now: dt.datetime,
    generation: int | None,
) -> PromotionPlan:
    """What to do with the last retrain's version (:func:`promotion_decision`), as status and an order."""
    if spec.promotion is None or retrain is None or phase not in FINISHED_PHASES:
        return PromotionPlan(status, [])
    decision = promotion_decision(spec, status, retrain, run_metrics, approved_version)
    if decision.action == "none":
        return PromotionPlan(status, [])
    retrain_name = status.last_retrain.name if status.last_retrain else ""
    if decision.action == "reject":
        if any(
            (c.type, c.reason, c.message) == (PROMOTED, "PromotionRejected", decision.message)
            for c in status.conditions
        ):
            return PromotionPlan(status, [])  # already said
        finished = f"{retrain_name} {phase}"
        status = with_condition(status, RETRAINING, "False", "RetrainFinished", finished, generation, now)
        status = with_condition(
            status, PROMOTED, "False", "PromotionRejected", decision.message, generation, now
        )
        return PromotionPlan(status, [Transition("Warning", "PromotionRejected", decision.message)])
    assert decision.version is not None
    if decision.action == "await":
        if status.last_promotion is not None and status.last_promotion.version == decision.version:
            return PromotionPlan(status, [])
        alias = spec.promotion.alias
        record = PromotionRecord(version=decision.version, alias=alias, time=now, pending=True)
        status = status.model_copy(update={"last_promotion": record})
        status = with_condition(
            status, AWAITING_APPROVAL, "True", "AwaitingApproval", decision.message, generation, now
        )
        return PromotionPlan(status, [Transition("Normal", "AwaitingApproval", decision.message)])
    return PromotionPlan(status, [], promote=decision.version)


def after_promotion(
    spec: DriftPolicySpec,
    status: DriftPolicyStatus,
    model: str,
    version: int,
    previous_version: int | None,
    now: dt.datetime,
    generation: int | None,
) -> tuple[DriftPolicyStatus, list[Transition]]:
    """The status once the alias moved from ``previous_version`` to ``version``."""
    assert spec.promotion is not None
    alias = spec.promotion.alias
    record = PromotionRecord(version=version, previous_version=previous_version, alias=alias, time=now)
    message = f"moved {alias} of {model} from {previous_version} to version {version}"
    status = status.model_copy(update={"last_promotion": record})
    finished = f"{status.last_retrain.name if status.last_retrain else ''} succeeded"
    status = with_condition(status, RETRAINING, "False", "RetrainFinished", finished, generation, now)
    status = with_condition(status, PROMOTED, "True", "Promoted", message, generation, now)
    if any(c.type == AWAITING_APPROVAL for c in status.conditions):
        status = with_condition(status, AWAITING_APPROVAL, "False", "Approved", message, generation, now)
    status = with_history(status, HistoryEntry(time=now, action=f"Promoted v{version}"))
    return status, [Transition("Normal", "Promoted", message)]
