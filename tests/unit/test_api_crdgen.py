"""The generated CRDs: names, columns, structural-schema rules, CEL rules, determinism and drift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from mlops_operator.api import crdgen, generate
from mlops_operator.api.v1alpha1 import KINDS
from mlops_operator.api.v1alpha1.common import Rule

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = (ROOT / "crds", ROOT / "charts" / "mlops-operator" / "crds")
FILES = ("trainingjobs.mlops.dev.yaml", "modeldeployments.mlops.dev.yaml", "driftpolicies.mlops.dev.yaml")

#: Where a schema may keep unknown fields: only these intended free maps.
PRESERVE_UNKNOWN_ALLOWED = {
    "trainingjobs.mlops.dev.yaml": {"spec.trainer.hyperparameters.*"},
    "modeldeployments.mlops.dev.yaml": set(),
    "driftpolicies.mlops.dev.yaml": {"spec.action.retrain.template.spec.trainer.hyperparameters.*"},
}


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    return crdgen.generate_crds()


def version(crd: dict[str, Any]) -> dict[str, Any]:
    (v,) = crd["spec"]["versions"]
    assert isinstance(v, dict)
    return v


def schema(crd: dict[str, Any]) -> dict[str, Any]:
    s = version(crd)["schema"]["openAPIV3Schema"]
    assert isinstance(s, dict)
    return s


def walk_schema(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with a dotted path (``[]`` for items, ``*`` for map values)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk_schema(sub, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from walk_schema(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk_schema(node["additionalProperties"], f"{path}.*")


def walk_any(obj: Any) -> Iterator[tuple[Any, Any]]:
    """Every (key, value) of every dict anywhere in obj."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from walk_any(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_any(v)


def node_at(root: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = root
    for part in dotted.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


# ---------------------------------------------------------------------------------------------------------
# names and shape
# ---------------------------------------------------------------------------------------------------------


def test_one_file_per_kind(crds: dict[str, dict[str, Any]]) -> None:
    assert sorted(crds) == sorted(FILES)


@pytest.mark.parametrize(
    ("filename", "kind", "plural", "short"),
    [
        ("trainingjobs.mlops.dev.yaml", "TrainingJob", "trainingjobs", "tj"),
        ("modeldeployments.mlops.dev.yaml", "ModelDeployment", "modeldeployments", "md"),
        ("driftpolicies.mlops.dev.yaml", "DriftPolicy", "driftpolicies", "dp"),
    ],
)
def test_names(crds: dict[str, dict[str, Any]], filename: str, kind: str, plural: str, short: str) -> None:
    crd = crds[filename]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.mlops.dev"
    spec = crd["spec"]
    assert spec["group"] == "mlops.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": [short],
        "categories": ["mlops"],
    }
    v = version(crd)
    assert v["name"] == "v1alpha1"
    assert v["served"] is True
    assert v["storage"] is True
    assert v["subresources"] == {"status": {}}
    root = schema(crd)
    assert root["type"] == "object"
    assert root["required"] == ["spec"]
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}


def columns(crd: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [
        (c["name"], c["jsonPath"], c["type"], c.get("priority", 0))
        for c in version(crd)["additionalPrinterColumns"]
    ]


def test_trainingjob_printer_columns(crds: dict[str, dict[str, Any]]) -> None:
    assert columns(crds["trainingjobs.mlops.dev.yaml"]) == [
        ("Model", ".spec.model.name", "string", 0),
        ("Phase", ".status.phase", "string", 0),
        ("Nodes", ".spec.resources.nodes", "integer", 0),
        ("GPUs", ".spec.resources.gpus", "integer", 0),
        ("Progress", ".status.progress.summary", "string", 0),
        ("Version", ".status.modelVersion", "integer", 0),
        ("Reason", ".status.failure.reason", "string", 1),
        ("Run", ".status.mlflowRunId", "string", 1),
        ("Age", ".metadata.creationTimestamp", "date", 0),
    ]


def test_modeldeployment_printer_columns(crds: dict[str, dict[str, Any]]) -> None:
    assert columns(crds["modeldeployments.mlops.dev.yaml"]) == [
        ("Model", ".spec.model.name", "string", 0),
        ("Alias", ".spec.model.alias", "string", 1),
        ("Version", ".status.resolvedVersion", "integer", 0),
        ("Challenger", ".status.challengerVersion", "integer", 1),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status', "string", 0),
        ("Replicas", ".status.readyReplicas", "integer", 0),
        ("URL", ".status.url", "string", 0),
        ("Age", ".metadata.creationTimestamp", "date", 0),
    ]


def test_driftpolicy_printer_columns(crds: dict[str, dict[str, Any]]) -> None:
    assert columns(crds["driftpolicies.mlops.dev.yaml"]) == [
        ("Target", ".spec.targetRef.name", "string", 0),
        ("Drifted", ".status.drifted", "boolean", 0),
        ("Score", ".status.lastEvaluation.driftedShare", "number", 0),
        ("Samples", ".status.lastEvaluation.samples", "integer", 1),
        ("Last Retrain", ".status.lastRetrain.name", "string", 0),
        ("Age", ".metadata.creationTimestamp", "date", 0),
    ]


@pytest.mark.parametrize("filename", FILES)
def test_printer_columns_and_selectable_fields_exist_in_schema(
    crds: dict[str, dict[str, Any]], filename: str
) -> None:
    """A column pointing at a field that does not exist would just stay empty: catch typos here."""
    crd = crds[filename]
    root = schema(crd)
    type_of = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
    for _name, path, kind, _prio in columns(crd):
        if path.startswith(".metadata."):
            continue
        plain_path = path.split("[", 1)[0].lstrip(".")
        node = node_at(root, plain_path)
        if "[" in path:  # .status.conditions[?(@.type=="Ready")].status
            node = node["items"]["properties"][path.rsplit(".", 1)[1]]
        assert node.get("type") == type_of[kind], (path, node)
    for selectable in version(crd).get("selectableFields", []):
        node = node_at(root, selectable["jsonPath"].lstrip("."))
        assert node["type"] in ("string", "integer", "boolean")


# ---------------------------------------------------------------------------------------------------------
# structural schema
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", FILES)
def test_no_json_schema_leftovers_anywhere(crds: dict[str, dict[str, Any]], filename: str) -> None:
    forbidden = {
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "$ref",
        "$defs",
        "definitions",
        "title",
        "examples",
        "const",
    }
    for key, value in walk_any(crds[filename]):
        assert key not in forbidden, key
        if key == "additionalProperties":
            assert isinstance(value, dict), "additionalProperties must be a schema, never true/false"
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert value is True, "OpenAPI v3.0 uses boolean exclusive bounds next to minimum/maximum"
        if key == "default":
            assert value is not None
        if key == "nullable":
            raise AssertionError("no nullable fields expected: an absent field means unset")


@pytest.mark.parametrize("filename", FILES)
def test_schema_is_structural(crds: dict[str, dict[str, Any]], filename: str) -> None:
    root = schema(crds[filename])
    for path, node in walk_schema(root):
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
        if not int_or_string and not preserve:
            assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("type") == "array":
            assert "items" in node, path
        if int_or_string:
            assert "type" not in node, path
        if preserve:
            assert path in PRESERVE_UNKNOWN_ALLOWED[filename], f"unintended preserve-unknown-fields at {path}"
        for required in node.get("required", []):
            assert required in node.get("properties", {}), (path, required)


@pytest.mark.parametrize("filename", FILES)
def test_preserve_unknown_fields_only_where_intended(crds: dict[str, dict[str, Any]], filename: str) -> None:
    found = {
        path
        for path, node in walk_schema(schema(crds[filename]))
        if node.get("x-kubernetes-preserve-unknown-fields")
    }
    assert found == PRESERVE_UNKNOWN_ALLOWED[filename]


@pytest.mark.parametrize("filename", FILES)
def test_every_string_list_and_map_is_bounded(crds: dict[str, dict[str, Any]], filename: str) -> None:
    """Bounds keep CEL cost estimates within the apiserver's budget and objects small."""
    for path, node in walk_schema(schema(crds[filename])):
        if path in ("apiVersion", "kind", "metadata"):
            continue
        kind = node.get("type")
        if kind == "string" and "enum" not in node and node.get("format") not in ("date-time", "date"):
            assert "maxLength" in node, path
        if kind == "array":
            assert "maxItems" in node, path
        if kind == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path


@pytest.mark.parametrize("filename", FILES)
def test_list_types(crds: dict[str, dict[str, Any]], filename: str) -> None:
    for path, node in walk_schema(schema(crds[filename])):
        list_type = node.get("x-kubernetes-list-type")
        if list_type is None:
            continue
        assert node["type"] == "array", path
        if list_type == "set":
            assert node["items"]["type"] in ("string", "integer", "number", "boolean"), path
        if list_type == "map":
            keys = node["x-kubernetes-list-map-keys"]
            item = node["items"]
            for key in keys:
                # The apiserver demands map keys be required or defaulted scalars.
                assert key in item.get("required", []) or "default" in item["properties"][key], (path, key)


@pytest.mark.parametrize("filename", FILES)
def test_conditions_are_metav1_conditions_keyed_by_type(
    crds: dict[str, dict[str, Any]], filename: str
) -> None:
    conditions = schema(crds[filename])["properties"]["status"]["properties"]["conditions"]
    assert conditions["type"] == "array"
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert sorted(item["required"]) == ["lastTransitionTime", "message", "reason", "status", "type"]
    props = item["properties"]
    assert props["status"]["enum"] == ["True", "False", "Unknown"]
    assert props["lastTransitionTime"] == {
        "type": "string",
        "format": "date-time",
        "description": "The last time the condition transitioned from one status to another.",
    }
    assert props["reason"]["pattern"] == "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    assert props["reason"]["maxLength"] == 1024
    assert props["reason"]["minLength"] == 1
    assert props["message"]["maxLength"] == 32768
    assert props["type"]["maxLength"] == 316
    assert props["observedGeneration"] == {
        "type": "integer",
        "format": "int64",
        "minimum": 0,
        "description": "The .metadata.generation that the condition was set based upon.",
    }


def test_quantities_are_int_or_string(crds: dict[str, dict[str, Any]]) -> None:
    root = schema(crds["trainingjobs.mlops.dev.yaml"])
    for field in ("cpu", "memory"):
        node = node_at(root, f"spec.resources.{field}")
        assert node["x-kubernetes-int-or-string"] is True
        assert "type" not in node
        assert node["pattern"].startswith("^(([0-9]+")
        assert node["minimum"] == 0
    assert node_at(root, "spec.resources.cpu")["default"] == "1"
    assert node_at(root, "spec.resources.memory")["default"] == "2Gi"


def test_optional_fields_are_plain_and_not_required(crds: dict[str, dict[str, Any]]) -> None:
    root = schema(crds["trainingjobs.mlops.dev.yaml"])
    spec = root["properties"]["spec"]
    assert sorted(spec["required"]) == ["dataset", "model", "trainer"]
    gate = spec["properties"]["gate"]
    assert gate["type"] == "object"
    assert "default" not in gate
    assert node_at(root, "spec.runPolicy.activeDeadlineSeconds") == {
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": 2**53 - 1,
        "description": "Fail the job when it has run longer than this (counted from its first start).",
    }


def test_exclusive_bounds_are_openapi_v3(crds: dict[str, dict[str, Any]]) -> None:
    root = schema(crds["driftpolicies.mlops.dev.yaml"])
    share = node_at(root, "spec.driftShare")
    assert (share["minimum"], share.get("exclusiveMinimum"), share["maximum"]) == (0, True, 1)
    assert share["default"] == 0.5
    lr = node_at(root, "spec.action.retrain.template.spec.trainer.builtin.lr")
    assert (lr["minimum"], lr["exclusiveMinimum"], lr["maximum"]) == (0, True, 10)


def test_object_defaults_are_complete(crds: dict[str, dict[str, Any]]) -> None:
    """An object default is checked against CEL without nested defaulting, so it must be complete."""
    root = schema(crds["trainingjobs.mlops.dev.yaml"])
    assert node_at(root, "spec.dataset.split")["default"] == {"validation": 0.2, "test": 0.0, "seed": 42}
    assert node_at(root, "spec.resources")["default"] == {"cpu": "1", "memory": "2Gi", "gpus": 0, "nodes": 1}
    assert node_at(root, "spec.scheduling")["default"] == {"suspend": False}
    assert node_at(root, "spec.runPolicy")["default"] == {"backoffLimit": 3}


# ---------------------------------------------------------------------------------------------------------
# CEL
# ---------------------------------------------------------------------------------------------------------


def rules_at(root: dict[str, Any], dotted: str) -> list[dict[str, str]]:
    rules = node_at(root, dotted).get("x-kubernetes-validations", [])
    assert isinstance(rules, list)
    return rules


def test_trainer_exactly_one_rule(crds: dict[str, dict[str, Any]]) -> None:
    rules = rules_at(schema(crds["trainingjobs.mlops.dev.yaml"]), "spec.trainer")
    assert rules[0] == {
        "rule": "has(self.builtin) != (has(self.command) || has(self.script))",
        "message": "trainer: set exactly one of trainer.builtin (the built-in trainer) or user code "
        "(trainer.command or trainer.script)",
    }
    assert {r.get("fieldPath") for r in rules[1:]} == {".script", ".image", ".args"}


def test_modeldeployment_rules(crds: dict[str, dict[str, Any]]) -> None:
    root = schema(crds["modeldeployments.mlops.dev.yaml"])
    assert rules_at(root, "spec.model") == [
        {
            "rule": "has(self.alias) != has(self.version)",
            "message": "model: set exactly one of model.alias (follow an alias, e.g. champion) or "
            "model.version (pin a version)",
        }
    ]
    assert rules_at(root, "spec.replicas") == [
        {
            "rule": "!has(self.max) || self.min <= self.max",
            "message": "replicas.min must be less than or equal to replicas.max",
            "fieldPath": ".min",
        }
    ]
    traffic = node_at(root, "spec.challenger.trafficPercent")
    assert (traffic["minimum"], traffic["maximum"], traffic["default"]) == (0, 100, 10)
    sample = node_at(root, "spec.logging.sampleRate")
    assert (sample["minimum"], sample["maximum"]) == (0, 1)


def test_trainingjob_immutability_rules_only_on_the_trainingjob(crds: dict[str, dict[str, Any]]) -> None:
    spec_rules = rules_at(schema(crds["trainingjobs.mlops.dev.yaml"]), "spec")
    transition = {r["fieldPath"]: r for r in spec_rules if "oldSelf" in r["rule"]}
    assert set(transition) == {
        ".model",
        ".dataset",
        ".trainer",
        ".resources",
        ".image",
        ".gate",
        ".registration",
        ".mlflow",
    }
    assert transition[".dataset"] == {
        "rule": "self.dataset == oldSelf.dataset",
        "message": "spec.dataset is immutable: create a new TrainingJob instead",
        "fieldPath": ".dataset",
        "reason": "FieldValueForbidden",
    }
    assert transition[".image"]["rule"] == (
        "has(self.image) == has(oldSelf.image) && (!has(self.image) || self.image == oldSelf.image)"
    )
    # The same spec embedded as a DriftPolicy template stays editable.
    dp = crds["driftpolicies.mlops.dev.yaml"]
    assert not [r for k, r in walk_any(dp) if k == "rule" and "oldSelf" in r]


@pytest.mark.parametrize("filename", FILES)
def test_every_rule_is_well_formed(crds: dict[str, dict[str, Any]], filename: str) -> None:
    count = 0
    for path, node in walk_schema(schema(crds[filename])):
        for rule in node.get("x-kubernetes-validations", []):
            count += 1
            assert set(rule) <= {"rule", "message", "fieldPath", "reason"}, (path, rule)
            assert rule["rule"].strip() and rule["message"].strip(), path
            assert len(rule["message"]) < 300
            if "fieldPath" in rule:
                assert rule["fieldPath"].startswith("."), path
                # fieldPath must name a field below the node the rule is on
                target = node
                for part in rule["fieldPath"].lstrip(".").split("."):
                    target = target["properties"][part]
            if "reason" in rule:
                assert rule["reason"] in (
                    "FieldValueInvalid",
                    "FieldValueForbidden",
                    "FieldValueRequired",
                    "FieldValueDuplicate",
                )
    assert count > 0


def test_every_model_rule_has_a_python_mirror() -> None:
    """CEL rules in the models also run in Python; only transition rules are apiserver-only."""
    seen: set[type[Any]] = set()

    def visit(model: type[Any]) -> None:
        if model in seen or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return
        seen.add(model)
        for rule in getattr(model, "cel_rules", ()):
            assert isinstance(rule, Rule)
            assert rule.check is not None, (model, rule.rule)
            assert not rule.is_transition_rule
        for field in model.model_fields.values():
            for arg in _types_in(field.annotation):
                visit(arg)

    for info in KINDS:
        visit(info.spec)
        for rule in info.spec_transition_rules:
            assert rule.is_transition_rule and rule.check is None
    assert len(seen) > 15


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _types_in(arg)


# ---------------------------------------------------------------------------------------------------------
# the JSON schema -> structural conversion itself
# ---------------------------------------------------------------------------------------------------------


class _Inner(BaseModel):
    """Inner doc."""

    x: int = 1


class _Outer(BaseModel):
    """Outer doc.

    Second paragraph
    over two lines."""

    inner: _Inner | None = Field(None, description="The inner one.")
    share: float = Field(0.5, gt=0, le=1)
    kind: str = Field("a", json_schema_extra={"const": "a"})


def test_to_structural_inlines_refs_and_drops_optional() -> None:
    out = crdgen.model_schema(_Outer)
    assert out == {
        "type": "object",
        "description": "Outer doc.\n\nSecond paragraph over two lines.",
        "properties": {
            "inner": {
                "type": "object",
                "description": "The inner one.",
                "properties": {"x": {"type": "integer", "default": 1}},
            },
            "share": {"type": "number", "default": 0.5, "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
            "kind": {"type": "string", "default": "a", "enum": ["a"]},
        },
    }


def test_to_structural_rejects_what_a_crd_cannot_say() -> None:
    class Union(BaseModel):
        v: int | str

    class Anything(BaseModel):
        v: dict[str, Any]

    with pytest.raises(crdgen.SchemaError, match="union of 2 non-null types"):
        crdgen.model_schema(Union)
    with pytest.raises(crdgen.SchemaError, match="additionalProperties: true"):
        crdgen.model_schema(Anything)
    with pytest.raises(crdgen.SchemaError, match="has no CRD equivalent"):
        crdgen.to_structural({"type": "string", "contentEncoding": "base64"}, {})
    with pytest.raises(crdgen.SchemaError, match="unresolvable"):
        crdgen.to_structural({"$ref": "#/$defs/Missing"}, {})


# ---------------------------------------------------------------------------------------------------------
# output files
# ---------------------------------------------------------------------------------------------------------


def test_rendering_is_deterministic() -> None:
    assert crdgen.rendered_crds() == crdgen.rendered_crds()
    for text in crdgen.rendered_crds().values():
        assert text.startswith("# Generated by `make crds`")
        assert "DO NOT EDIT" in text.splitlines()[1]
        assert "&id" not in text and "*id" not in text  # no YAML anchors/aliases


def test_rendered_yaml_parses_back_to_the_manifest(crds: dict[str, dict[str, Any]]) -> None:
    for name, text in crdgen.rendered_crds().items():
        assert yaml.safe_load(text) == crds[name]


def test_committed_crds_are_up_to_date() -> None:
    problems = crdgen.check_crds(*COMMITTED)
    assert problems == [], f"out of date: {problems}; run `make crds`"


def test_chart_crds_are_identical_to_crds() -> None:
    for name in FILES:
        assert (COMMITTED[0] / name).read_bytes() == (COMMITTED[1] / name).read_bytes()


def test_write_then_check_detects_changes_missing_and_stale_files(tmp_path: Path) -> None:
    a, b = tmp_path / "crds", tmp_path / "chart" / "crds"
    written = crdgen.write_crds(a, b)
    assert sorted(p.name for p in written) == sorted(FILES * 2)
    assert crdgen.check_crds(a, b) == []

    (a / FILES[0]).write_text("edited\n", encoding="utf-8")
    (b / FILES[1]).unlink()
    (b / "oldkinds.mlops.dev.yaml").write_text("stale\n", encoding="utf-8")
    (b / "unrelated.yaml").write_text("kept\n", encoding="utf-8")
    assert sorted(crdgen.check_crds(a, b)) == sorted(
        [str(a / FILES[0]), str(b / FILES[1]), str(b / "oldkinds.mlops.dev.yaml")]
    )

    crdgen.write_crds(a, b)
    assert crdgen.check_crds(a, b) == []
    assert not (b / "oldkinds.mlops.dev.yaml").exists()
    assert (b / "unrelated.yaml").exists()


def test_write_is_a_noop_when_nothing_changed(tmp_path: Path) -> None:
    crdgen.write_crds(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    crdgen.write_crds(tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_main_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "api.md"
    assert generate.main([str(tmp_path / "out"), "--check", "--docs", str(docs)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert generate.main([str(tmp_path / "out"), "--docs", str(docs)]) == 0
    assert generate.main([str(tmp_path / "out"), "--check", "--docs", str(docs)]) == 0
    assert docs.read_text(encoding="utf-8").startswith("<!-- Generated by `make crds`")
