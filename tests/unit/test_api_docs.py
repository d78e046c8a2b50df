"""docs/api.md is generated from the models and up to date."""

from __future__ import annotations

from pathlib import Path

from mlops_operator.api import crdgen, docgen
from mlops_operator.api.v1alpha1 import KINDS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"


def test_committed_api_reference_is_up_to_date() -> None:
    assert docgen.check_docs(DOC), "docs/api.md is out of date; run `make crds`"


def test_every_field_is_documented_with_its_default() -> None:
    text = docgen.generate_docs()
    for info in KINDS:
        assert f"\n## {info.kind}\n" in text
        section = text.split(f"\n## {info.kind}\n", 1)[1].split("\n## ", 1)[0]
        for root, model in (("spec", info.spec), ("status", info.status)):
            schema = crdgen.model_schema(model)
            for path, node, _required in docgen._walk(schema, root, True):
                if path == root:
                    continue
                row = next(line for line in section.splitlines() if line.startswith(f"| `{path}` |"))
                if "default" in node:
                    assert docgen._value(node["default"]) in row, path


def test_rules_are_listed() -> None:
    text = docgen.generate_docs()
    assert "set exactly one of trainer.builtin" in text
    assert "spec.dataset is immutable" in text
    assert "replicas.min must be less than or equal to replicas.max" in text


def test_type_names() -> None:
    assert docgen.type_name({"x-kubernetes-int-or-string": True}) == "int-or-string"
    assert docgen.type_name({"x-kubernetes-preserve-unknown-fields": True}) == "any"
    assert docgen.type_name({"type": "array", "items": {"type": "string"}}) == "[]string"
    assert (
        docgen.type_name({"type": "object", "additionalProperties": {"type": "string"}})
        == "map[string]string"
    )
    assert docgen.type_name({"type": "string", "format": "date-time"}) == "string (date-time)"


def test_cells_escape_markdown() -> None:
    assert docgen._cell("a | b <c>\nd") == "a \\| b &lt;c&gt; d"
    assert docgen._code("x || y") == "`x \\|\\| y`"


def test_write_docs(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "api.md"
    assert not docgen.check_docs(path)
    assert docgen.write_docs(path) == path
    assert docgen.check_docs(path)
