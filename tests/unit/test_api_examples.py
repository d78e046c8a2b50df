"""Every manifest under examples/ is valid, namespace-less, round-trips, and every kind has one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_operator.api import docgen
from mlops_operator.api.v1alpha1 import API_VERSION, KINDS, RESOURCES, ModelDeployment, TrainingJob

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def load(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs, path
    return docs


def test_examples_exist_for_every_kind() -> None:
    kinds = {doc["kind"] for path in EXAMPLES for doc in load(path)}
    assert kinds == {info.kind for info in KINDS}
    names = {p.name for p in EXAMPLES}
    for kind, files in docgen.EXAMPLES.items():
        assert set(files) <= names, kind
    assert {
        "trainingjob-iris.yaml",
        "trainingjob-multinode-gpu.yaml",
        "modeldeployment.yaml",
        "modeldeployment-canary.yaml",
        "driftpolicy.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_round_trips(path: Path) -> None:
    for doc in load(path):
        assert doc["apiVersion"] == API_VERSION
        assert "namespace" not in doc["metadata"], "examples apply into the current namespace"
        assert "status" not in doc
        model = RESOURCES[doc["kind"]].model_validate(doc)
        again = RESOURCES[doc["kind"]].model_validate(model.to_dict())
        assert again == model
        # Everything the example says survives (dumping only adds defaults).
        dumped = model.to_dict()
        assert_subset(doc["spec"], dumped["spec"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_commented(path: Path) -> None:
    assert path.read_text(encoding="utf-8").startswith("#"), "start with a comment saying what it shows"


def assert_subset(small: Any, big: Any, path: str = "spec") -> None:
    if isinstance(small, dict):
        assert isinstance(big, dict), path
        for key, value in small.items():
            assert key in big, f"{path}.{key} lost"
            assert_subset(value, big[key], f"{path}.{key}")
    elif isinstance(small, list):
        assert isinstance(big, list) and len(small) == len(big), path
        for i, (a, b) in enumerate(zip(small, big, strict=True)):
            assert_subset(a, b, f"{path}[{i}]")
    else:
        assert small == big, path


def test_multinode_example_is_two_nodes_of_four_gpus() -> None:
    (doc,) = load(ROOT / "examples" / "trainingjob-multinode-gpu.yaml")
    tj = TrainingJob.model_validate(doc)
    assert (tj.spec.resources.nodes, tj.spec.resources.gpus, tj.spec.resources.world_size) == (2, 4, 8)
    assert tj.spec.resources.gpu_type


def test_canary_example_sends_ten_percent_to_the_challenger() -> None:
    (doc,) = load(ROOT / "examples" / "modeldeployment-canary.yaml")
    challenger = ModelDeployment.model_validate(doc).spec.challenger
    assert challenger is not None
    assert (challenger.alias, challenger.traffic_percent, challenger.mode) == ("challenger", 10, "canary")
