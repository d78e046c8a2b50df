"""Property-based tests of the API models against specs generated from the CRDs' own schemas.

(a) validation either accepts a spec or raises ``ValidationError`` naming the field that is wrong, never any
    other exception; (b) every accepted spec goes through the pure builders and status derivations without
    an exception, deterministically; (c) ``validate(dump(x)) == x`` and the dump only uses names the CRD
    declares. The generator (tests/support/schema_strategies.py) ignores CEL, so many generated specs break a
    cross-field rule: both sides of every rule get exercised. The apiserver's view of the same specs is in
    tests/cluster/test_api_properties.py.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mlops_operator.api.v1alpha1 import (
    DriftPolicySpec,
    DriftPolicyStatus,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
)
from mlops_operator.api.v1alpha1.driftpolicy import (
    DEFAULT_THRESHOLDS,
    Evaluation,
    FeatureScore,
    RetrainRecord,
)
from mlops_operator.api.v1alpha1.trainingjob import GateResult
from mlops_operator.controllers.driftpolicy import status as driftpolicy_status
from mlops_operator.controllers.driftpolicy.evaluation import drift_config
from mlops_operator.controllers.modeldeployment import status as modeldeployment_status
from mlops_operator.controllers.trainingjob import status as trainingjob_status
from mlops_operator.resources import driftpolicy as dp_resources
from mlops_operator.resources import modeldeployment as md_resources
from mlops_operator.resources import trainingjob as tj_resources
from mlops_operator.resources.common import Owner, PodDefaults
from tests.support.schema_strategies import (
    data_path,
    examples,
    from_schema,
    mutated,
    paths,
    schema_at,
    spec_schema,
)

SPEC_MODELS: dict[str, type[BaseModel]] = {
    "TrainingJob": TrainingJobSpec,
    "ModelDeployment": ModelDeploymentSpec,
    "DriftPolicy": DriftPolicySpec,
}
SCHEMAS = {kind: spec_schema(kind) for kind in SPEC_MODELS}
SPECS = {kind: from_schema(SCHEMAS[kind]) for kind in SPEC_MODELS}
KIND = st.sampled_from(sorted(SPEC_MODELS))
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DEFAULTS = PodDefaults(
    runtime_image="ghcr.io/mlops-operator/runtime:0.1.0", mlflow_tracking_uri="http://mlflow:5000"
)
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: Object names as the apiserver allows them for custom resources (DNS-1123 subdomains): a DriftPolicy's.
OWNER_NAMES = st.one_of(
    st.sampled_from(["iris", "a", "x" * 253, "model.v2", "9lives", "a-" * 30 + "b", "drift." + "d" * 60]),
    st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?){0,3}\Z"),
).filter(lambda n: len(n) <= 253)
#: What the name rule leaves of them for a TrainingJob or a ModelDeployment (DNS-1035 labels).
LABEL_NAMES = st.one_of(
    st.sampled_from(["iris", "a", "x" * 63, "a" * 60, "a" * 61, "a-" * 30 + "b", "m" + "-" * 61 + "9"]),
    st.from_regex(r"\A[a-z]([-a-z0-9]{0,61}[a-z0-9])?\Z"),
)


def validate(kind: str, body: Any) -> BaseModel | ValidationError:
    """The model, or the ValidationError; any other exception propagates (and fails the test)."""
    try:
        return SPEC_MODELS[kind].model_validate(body)
    except ValidationError as error:
        return error


def owner(kind: str, name: str) -> Owner:
    return Owner(kind=kind, name=name, namespace="team-a", uid="0b6f1c9e-5a1e-4d0e-8f3f-1d2c3b4a5e6f")


# ----------------------------------------------------------------------------------------------------------
# (a) accept, or a ValidationError naming the field
# ----------------------------------------------------------------------------------------------------------


@examples(300)
@given(data=st.data(), kind=KIND)
def test_generated_specs_are_accepted_or_refused_with_a_validation_error(
    data: st.DataObject, kind: str
) -> None:
    body = data.draw(SPECS[kind], label="spec")
    result = validate(kind, body)
    event(f"{kind}: {'accepted' if isinstance(result, BaseModel) else 'refused'}")
    if isinstance(result, ValidationError):
        for error in result.errors():
            assert error["msg"], error
            # a refusal names a place in the body, or (a rule of the whole spec) a field in its message
            assert data_path(body, error["loc"]) or re.search(r"[a-z][A-Za-z]+", error["msg"]), error


@examples(400)
@given(data=st.data(), kind=KIND)
def test_a_broken_spec_is_refused_naming_the_broken_field(data: st.DataObject, kind: str) -> None:
    base = data.draw(SPECS[kind].filter(lambda b: isinstance(validate(kind, b), BaseModel)), label="valid")
    body, where, what = data.draw(mutated(st.just(base)), label="mutation")
    note(f"{what} at {where}")
    result = validate(kind, body)
    event(f"{what}: {'accepted' if isinstance(result, BaseModel) else 'refused'}")
    if isinstance(result, BaseModel):
        # still accepted: the change kept the field valid (then the schema must allow it too)
        assert what != "unknown", f"unknown field {where} accepted"
        return
    names = {str(step) for step in where if isinstance(step, str)}
    related = []
    for error in result.errors():
        loc = data_path(body, error["loc"])
        prefix = where[: len(loc)] == loc or loc[: len(where)] == where
        named = any(name in error["msg"] for name in names)  # a rule of an enclosing object names it
        if named or (prefix and (loc or len(where) == 1)):
            related.append(error)
    assert related, f"{what} at {where}: no error names it: {result.errors()}"


def test_not_json_at_all_is_a_validation_error() -> None:
    for kind in SPEC_MODELS:
        for body in (None, [], "spec", 3, {"": {}}, {"model": object()}):
            assert isinstance(validate(kind, body), ValidationError)


# ----------------------------------------------------------------------------------------------------------
# (b) builders and status derivation: total and deterministic on every accepted spec
# ----------------------------------------------------------------------------------------------------------

JOBS: list[dict[str, Any] | None] = [
    None,
    {"metadata": {"name": "j", "generation": 1}, "spec": {"suspend": True}, "status": {}},
    {"metadata": {"name": "j"}, "spec": {}, "status": {"active": 2, "startTime": "2026-03-01T11:00:00Z"}},
    {
        "metadata": {"name": "j"},
        "spec": {},
        "status": {
            "succeeded": 1,
            "completionTime": "2026-03-01T11:30:00Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    },
    {
        "metadata": {"name": "j"},
        "spec": {},
        "status": {
            "failed": 4,
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "x"}
            ],
        },
    },
]
PODS: list[list[dict[str, Any]]] = [
    [],
    [{"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}}],
    [
        {
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n"},
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": tj_resources.CONTAINER_NAME,
                        "state": {
                            "terminated": {"exitCode": 3, "reason": "Error", "message": "boom\n\u00e9"}
                        },
                    }
                ],
            },
        }
    ],
]
RUNS = [
    None,
    trainingjob_status.RunObservation(run_id="r1", epoch=2, total_epochs=5, metrics={"val_loss": 0.5}),
    trainingjob_status.RunObservation(
        run_id="r1",
        model_version=7,
        model_uri="models:/m/7",
        gate=GateResult(passed=False, message="val_accuracy 0.5 < 0.9"),
    ),
]
DEPLOYMENTS: list[dict[str, Any] | None] = [
    None,
    {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    },
    {"metadata": {}, "spec": {}, "status": {"conditions": [{"type": "Available", "status": "False"}]}},
]


def twice(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn`` called twice on the same input: equal results (and JSON-ready manifests) or the test fails."""
    first, second = fn(*args, **kwargs), fn(*args, **kwargs)
    assert first == second, f"{fn.__name__} is not deterministic"
    return first


def check_children(children: list[dict[str, Any]]) -> None:
    """Every child is an object the apiserver (and, for a Job, the Job controller) can create."""
    json.dumps(children, allow_nan=False)
    for child in children:
        name = child["metadata"]["name"]
        assert len(name) <= 63 and DNS1123_LABEL.match(name), name
        for value in child["metadata"]["labels"].values():
            assert len(value) <= 63, value
        if child["kind"] == "Service":
            assert DNS1035_LABEL.match(name), f"Service name {name!r} is not a DNS-1035 label"
        if child["kind"] == "Job":
            # the Job controller names pods' hosts <job>-<index> (an Indexed Job), a DNS label
            last = f"{name}-{child['spec']['completions'] - 1}"
            assert len(last) <= 63 and DNS1123_LABEL.match(last), f"pod hostname {last!r}"
            subdomain = child["spec"]["template"]["spec"].get("subdomain")
            assert subdomain is None or DNS1035_LABEL.match(subdomain), subdomain


def accepted(kind: str) -> st.SearchStrategy[Any]:
    return SPECS[kind].map(lambda b: validate(kind, b)).filter(lambda m: isinstance(m, BaseModel))


@examples(150)
@given(
    spec=accepted("TrainingJob"),
    name=LABEL_NAMES,
    job=st.sampled_from(JOBS),
    pods=st.sampled_from(PODS),
    run=st.sampled_from(RUNS),
)
def test_trainingjob_builders_and_status_are_total_and_deterministic(
    spec: TrainingJobSpec, name: str, job: dict[str, Any] | None, pods: list[dict[str, Any]], run: Any
) -> None:
    who = owner("TrainingJob", name)
    for exists in (False, True):
        check_children(twice(tj_resources.desired_children, who, spec, DEFAULTS, exists))
    twice(tj_resources.trainer_view, spec)
    result = twice(
        trainingjob_status.observe,
        spec,
        3,
        TrainingJobStatus(),
        job,
        pods,
        {"p": "0/3 nodes are available"},
        run,
        "img",
        now=NOW,
    )
    again = trainingjob_status.observe(spec, 3, result.status, job, pods, None, run, "img", now=NOW)
    assert again.status.to_dict() == TrainingJobStatus.model_validate(again.status.to_dict()).to_dict()


@examples(150)
@given(
    spec=accepted("ModelDeployment"),
    name=LABEL_NAMES,
    challenger=st.sampled_from([None, 4]),
    deployment=st.sampled_from(DEPLOYMENTS),
)
def test_modeldeployment_builders_and_status_are_total_and_deterministic(
    spec: ModelDeploymentSpec, name: str, challenger: int | None, deployment: dict[str, Any] | None
) -> None:
    who = owner("ModelDeployment", name)
    versions = md_resources.ResolvedVersions(primary=3, challenger=challenger)
    check_children(twice(md_resources.desired_children, who, spec, versions, DEFAULTS))
    primary, canary = twice(md_resources.replica_split, spec)
    assert primary >= 0 and canary >= 0 and primary + canary >= 1
    resolution = modeldeployment_status.Resolution(3, "Resolved", "alias champion points to version 3")
    other = modeldeployment_status.Resolution(None, "AliasNotFound", "no version holds alias challenger")
    result = twice(
        modeldeployment_status.observe,
        spec,
        2,
        ModelDeploymentStatus(),
        resolution,
        other if spec.challenger is not None else None,
        (3, challenger),
        {"primary": deployment, "challenger": deployment if challenger else None},
        md_resources.url(who),
        md_resources.model_uri("m", 3),
        now=NOW,
    )
    ModelDeploymentStatus.model_validate(result.status.to_dict())


EVALUATIONS = st.builds(
    Evaluation,
    time=st.just(NOW),
    model_version=st.sampled_from([None, 1, 2]),
    samples=st.integers(0, 10**6),
    drifted_share=st.one_of(st.none(), st.floats(0, 1)),
    drifted=st.booleans(),
    message=st.sampled_from([None, "120 samples < minSamples 500"]),
    feature_scores=st.lists(
        st.builds(
            FeatureScore,
            feature=st.sampled_from(["a", "b", "c", "petal length"]),
            method=st.sampled_from(sorted(DEFAULT_THRESHOLDS)),
            score=st.floats(0, 10),
            p_value=st.one_of(st.none(), st.floats(0, 1)),
            threshold=st.one_of(st.none(), st.floats(0, 1)),
            drifted=st.booleans(),
        ),
        max_size=4,
        unique_by=lambda f: f.feature,
    ),
)


@examples(150)
@given(
    spec=accepted("DriftPolicy"),
    name=OWNER_NAMES,
    evaluation=EVALUATIONS,
    drifted=st.booleans(),
    phase=st.sampled_from([None, "Running", "Succeeded", "Failed", "Gone"]),
    metrics=st.dictionaries(st.sampled_from(["val_accuracy", "val_loss", "test_f1"]), st.floats(0, 1)),
)
def test_driftpolicy_builders_and_status_are_total_and_deterministic(
    spec: DriftPolicySpec,
    name: str,
    evaluation: Evaluation,
    drifted: bool,
    phase: str | None,
    metrics: dict[str, float],
) -> None:
    who = owner("DriftPolicy", name)
    previous = DriftPolicyStatus(
        drifted=drifted,
        drifting_since=NOW - dt.timedelta(hours=2) if drifted else None,
        last_retrain=RetrainRecord(name=dp_resources.retrain_name(who, 1), time=NOW - dt.timedelta(days=2)),
    )
    status, _ = twice(driftpolicy_status.apply_evaluation, spec, previous, evaluation, 5)
    DriftPolicyStatus.model_validate(status.to_dict())
    _due, why = twice(driftpolicy_status.retrain_due, spec, status, NOW, phase)
    assert why
    if spec.action is not None:
        manifest = twice(dp_resources.retrain_trainingjob, who, spec.action.retrain.template, 2, NOW, why)
        json.dumps(manifest, allow_nan=False)
        assert len(manifest["metadata"]["name"]) <= 253
        # the TrainingJob the policy creates is one the TrainingJob model (its name rule included) accepts
        TrainingJob.model_validate(manifest)
    retrain = TrainingJobStatus(phase="Succeeded" if phase != "Failed" else "Failed", model_version=4)
    twice(driftpolicy_status.promotion_decision, spec, status, retrain, metrics, None)
    twice(driftpolicy_status.summarize, evaluation)


# ----------------------------------------------------------------------------------------------------------
# the DriftPolicy spec and the drift engine resolve thresholds the same way
# ----------------------------------------------------------------------------------------------------------


@examples(200)
@given(spec=accepted("DriftPolicy"))
def test_spec_and_engine_agree_on_every_features_method_and_threshold(spec: DriftPolicySpec) -> None:
    config = drift_config(spec)
    features = [o.feature for o in spec.overrides or ()] + ["not-overridden"]
    for feature in features:
        assert spec.method_for(feature) == config.method_for(feature)
        for method in sorted(DEFAULT_THRESHOLDS):
            assert spec.threshold_for(feature, method) == config.threshold_for(feature, method), (
                feature,
                method,
            )


def test_a_psi_threshold_is_not_handed_to_a_feature_overridden_to_ks() -> None:
    spec = DriftPolicySpec.model_validate(
        {
            "targetRef": {"name": "m"},
            "method": "psi",
            "threshold": 0.3,
            "overrides": [{"feature": "a", "method": "ks"}, {"feature": "b", "method": "psi"}],
        }
    )
    assert spec.method_for("a") == "ks"
    assert spec.threshold_for("a", "ks") == DEFAULT_THRESHOLDS["ks"] == 0.05  # not the psi 0.3
    assert spec.threshold_for("b", "psi") == 0.3
    assert spec.threshold_for("c", "psi") == 0.3
    # a p-value threshold carries over between the two p-value tests
    p = DriftPolicySpec.model_validate(
        {
            "targetRef": {"name": "m"},
            "method": "ks",
            "threshold": 0.01,
            "overrides": [{"feature": "a", "method": "chi2"}],
        }
    )
    assert p.threshold_for("a", "chi2") == 0.01
    assert p.threshold_for("a", "wasserstein") == DEFAULT_THRESHOLDS["wasserstein"]


# ----------------------------------------------------------------------------------------------------------
# (c) round trip, and the dump speaks the CRD's names
# ----------------------------------------------------------------------------------------------------------


@examples(300)
@given(data=st.data(), kind=KIND)
def test_round_trip_and_the_dump_uses_the_crds_camel_case_names(data: st.DataObject, kind: str) -> None:
    model = data.draw(accepted(kind), label="model")
    dumped = model.to_dict()  # type: ignore[attr-defined]
    assert type(model).model_validate(dumped) == model
    assert type(model).model_validate_json(json.dumps(dumped)) == model
    assert json.loads(json.dumps(dumped, allow_nan=False)) == dumped
    for path in paths(dumped):
        if path and isinstance(path[-1], str):
            node = schema_at(SCHEMAS[kind], path)
            assert node is not None, f"{kind}: dumped field {'.'.join(map(str, path))} is not in the CRD"


@pytest.mark.parametrize("kind", sorted(SPEC_MODELS))
def test_every_crd_property_is_camel_case(kind: str) -> None:
    def walk(node: Any, where: str) -> None:
        for name, sub in (node.get("properties") or {}).items():
            assert re.fullmatch(r"[a-z][A-Za-z0-9]*", name), f"{where}.{name}"
            walk(sub, f"{where}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], where)

    walk(SCHEMAS[kind], kind)


# ----------------------------------------------------------------------------------------------------------
# object names: what becomes a Service name or a pod's hostname must be a DNS-1035 label
# ----------------------------------------------------------------------------------------------------------

MINIMAL_SPECS: dict[str, dict[str, Any]] = {
    "TrainingJob": {
        "model": {"name": "iris"},
        "dataset": {"uri": "pvc://data/iris.csv", "target": "species"},
        "trainer": {"builtin": {"task": "classification"}},
    },
    "ModelDeployment": {"model": {"name": "iris", "alias": "champion"}},
}


@examples(200)
@given(name=OWNER_NAMES, kind=st.sampled_from(["TrainingJob", "ModelDeployment"]))
def test_a_name_that_cannot_name_a_service_is_refused_naming_metadata_name(name: str, kind: str) -> None:
    model = {"TrainingJob": TrainingJob, "ModelDeployment": ModelDeployment}[kind]
    body = {"apiVersion": "mlops.dev/v1alpha1", "kind": kind, "metadata": {"name": name}}
    try:
        model.model_validate({**body, "spec": MINIMAL_SPECS[kind]})
    except ValidationError as error:
        assert not DNS1035_LABEL.match(name) or len(name) > 63, error
        assert "metadata.name" in str(error)
    else:
        assert DNS1035_LABEL.match(name) and len(name) <= 63, name
