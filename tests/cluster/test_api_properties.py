"""The real apiserver and the pydantic models agree on what a valid object is.

A bounded, derandomized sample of objects generated from the CRDs' own schemas (tests/support/
schema_strategies.py: schema-valid, steered to satisfy most CEL presence rules, some broken at one place,
names from every DNS-1123 subdomain shape) is sent to the local kube-apiserver with server-side dry-run
(``dryRun=All``, ``fieldValidation=Strict``): schema, defaulting, CEL and the root rule on metadata.name
all run, nothing is stored. Then:

* whatever the apiserver accepts, the model accepts too (the operator never meets an object it cannot
  parse) -- with one documented exception: ``trainer.hyperparameters`` keys and value types, which no CRD
  can check (see ``Hyperparameters`` in api/v1alpha1/trainingjob.py); the model refuses those with a
  ValidationError located there, which the controller reports as Valid=False;
* the object the apiserver returns (defaults applied) parses to the same model as the body that was sent:
  the CRD's defaults and the models' defaults are the same;
* whatever the model accepts, the apiserver accepts (the CRD is not stricter than the operator).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from mlops_operator.api.v1alpha1 import RESOURCES
from mlops_operator.api.v1alpha1.common import DNS1123_SUBDOMAIN_PATTERN
from tests.support.kube import Kube
from tests.support.schema_strategies import from_schema, mutated, spec_schema

GROUP, VERSION = "mlops.dev", "v1alpha1"
PLURALS = {
    "TrainingJob": "trainingjobs",
    "ModelDeployment": "modeldeployments",
    "DriftPolicy": "driftpolicies",
}
KINDS = sorted(PLURALS)
SPECS = {kind: from_schema(spec_schema(kind)) for kind in KINDS}
#: Names of every shape the apiserver allows for a custom resource, and a few it does not.
NAMES = st.one_of(
    st.from_regex(r"\A[a-z]([-a-z0-9]{0,20}[a-z0-9])?\Z"),
    st.sampled_from(["model.v2", "9lives", "a" * 63, "a" * 64, "b" * 253, "x-", "UPPER", "a_b", "a..b"]),
    st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}\Z"),
)
EXAMPLES = 300
SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_PATTERN)
pytestmark = pytest.mark.usefixtures("crds")


def only_hyperparameters(error: ValidationError) -> bool:
    """Whether every error is about trainer.hyperparameters (what no CRD can check)."""
    return all("hyperparameters" in error_item["loc"] for error_item in error.errors())


def model_of(kind: str, body: dict[str, Any]) -> BaseModel | ValidationError:
    try:
        return RESOURCES[kind].model_validate(body)
    except ValidationError as error:
        return error


def test_the_apiserver_and_the_models_agree_on_generated_objects(kube: Kube, namespace: str) -> None:
    outcomes: Counter[str] = Counter()
    disagreements: list[str] = []
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data(), kind=st.sampled_from(KINDS), name=NAMES, broken=st.integers(0, 3))
    def check(data: st.DataObject, kind: str, name: str, broken: int) -> None:
        spec = data.draw(mutated(SPECS[kind]) if broken == 3 else SPECS[kind], label="spec")
        if isinstance(spec, tuple):
            spec = spec[0]
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
        try:
            stored = kube.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], body, dry_run="All", field_validation="Strict"
            )
            server_error = None
        except ApiException as error:
            if error.status != 422 and not (error.status == 400 and "strict decoding" in str(error.body)):
                raise AssertionError(f"apiserver: {error.status} {error.reason}: {error.body}") from error
            stored, server_error = None, error
        model = model_of(kind, json.loads(json.dumps(body)))
        where = f"{kind} {name!r} {json.dumps(spec)[:2000]}"
        if server_error is None:
            assert stored is not None
            if isinstance(model, ValidationError):
                if kind != "ModelDeployment" and only_hyperparameters(model):
                    outcomes["apiserver accepts, model refuses hyperparameters (documented)"] += 1
                    return
                disagreements.append(f"apiserver accepts, model refuses: {where}\n  {model}")
                return
            outcomes[f"{kind} accepted by both"] += 1
            again = model_of(kind, {**stored, "status": None})
            if not isinstance(again, BaseModel) or again.spec != model.spec:  # type: ignore[attr-defined]
                disagreements.append(
                    f"defaults differ: {where}\n  stored: {json.dumps(stored['spec'])[:2000]}\n  {again}"
                )
        elif isinstance(model, BaseModel) and SUBDOMAIN.fullmatch(name) and len(name) <= 253:
            # (the model does not check that a name is a DNS-1123 subdomain: the apiserver always does)
            disagreements.append(f"model accepts, apiserver refuses: {where}\n  {server_error.body[:1000]}")
        else:
            outcomes[f"{kind} refused by both"] += 1

    check()
    elapsed = time.monotonic() - started
    print(f"{sum(outcomes.values()) + len(disagreements)} objects in {elapsed:.1f}s: {dict(outcomes)}")
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n".join(disagreements[:8])
    # the sample exercises both sides of every kind
    for kind in KINDS:
        assert outcomes[f"{kind} accepted by both"] >= 10, outcomes
        assert outcomes[f"{kind} refused by both"] >= 5, outcomes


MINIMAL_SPECS: dict[str, dict[str, Any]] = {
    "TrainingJob": {
        "model": {"name": "iris"},
        "dataset": {"uri": "pvc://data/iris.csv", "target": "species"},
        "trainer": {"builtin": {"task": "classification"}},
    },
    "ModelDeployment": {"model": {"name": "iris", "alias": "champion"}},
}


@pytest.mark.parametrize("kind", sorted(MINIMAL_SPECS))
def test_a_name_that_cannot_name_a_service_is_refused_by_the_apiserver_naming_metadata_name(
    kube: Kube, namespace: str, kind: str
) -> None:
    """``model.v2`` and ``9lives`` are valid custom resource names, but not Service names (DNS-1035
    labels): the apiserver would refuse the children, so it refuses the object, like the model."""
    for name, valid in [("model.v2", False), ("9lives", False), ("a" * 64, False), ("a" * 63, True)]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": MINIMAL_SPECS[kind],
        }
        model = model_of(kind, body)
        try:
            kube.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], body, dry_run="All"
            )
        except ApiException as error:
            assert not valid, f"{name!r}: {error.body}"
            assert error.status == 422 and "metadata.name" in error.body and "DNS-1035" in error.body
            assert isinstance(model, ValidationError) and "metadata.name" in str(model)
        else:
            assert valid, f"{kind} {name!r} accepted"
            assert isinstance(model, BaseModel)
