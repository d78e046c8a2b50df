"""Generate ``docs/api.md``, the API reference, from the same structural schemas as the CRDs.

``python -m mlops_operator.api.generate`` regenerates it together with the CRDs; ``check_docs`` tells
whether the committed file is current.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from . import crdgen
from .v1alpha1 import API_VERSION, CATEGORY, KINDS, KindInfo

DEFAULT_PATH: Final = Path("docs/api.md")

#: Example manifests (in examples/) per kind, linked from the reference.
EXAMPLES: Final[dict[str, tuple[str, ...]]] = {
    "TrainingJob": ("trainingjob-iris.yaml", "trainingjob-multinode-gpu.yaml"),
    "ModelDeployment": ("modeldeployment.yaml", "modeldeployment-canary.yaml"),
    "DriftPolicy": ("driftpolicy.yaml",),
}


def _cell(text: str) -> str:
    """Text for a table cell: no pipes, no raw HTML, one line."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return text.replace("\n\n", "<br><br>").replace("\n", " ")


def _code(text: str) -> str:
    """A code span for a table cell (GFM keeps ``\\|`` inside code spans as a pipe)."""
    return "`" + " ".join(text.split()).replace("|", "\\|") + "`"


def _value(value: Any) -> str:
    return "`" + json.dumps(value, ensure_ascii=False).replace("|", "\\|") + "`"


def type_name(node: dict[str, Any]) -> str:
    """Human-readable type of a structural schema node."""
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = node.get("type")
    if kind is None and node.get("x-kubernetes-preserve-unknown-fields"):
        return "any"
    if kind == "array":
        return f"[]{type_name(node['items'])}"
    if kind == "object" and "additionalProperties" in node and "properties" not in node:
        return f"map[string]{type_name(node['additionalProperties'])}"
    if kind == "string" and node.get("format"):
        return f"string ({node['format']})"
    return str(kind)


def constraints(node: dict[str, Any]) -> list[str]:
    """Value constraints of a node, in words."""
    out: list[str] = []
    if "enum" in node:
        out.append("one of " + ", ".join(_value(v) for v in node["enum"]))
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None or high is not None:
        left = "" if low is None else f"{low} {'<' if node.get('exclusiveMinimum') else '≤'} "
        right = "" if high is None else f" {'<' if node.get('exclusiveMaximum') else '≤'} {high}"
        out.append(f"{left}x{right}")
    if "maxItems" in node:
        out.append(f"at most {node['maxItems']} items")
    if "maxProperties" in node:
        out.append(f"at most {node['maxProperties']} entries")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(f"`{k}`" for k in node.get("x-kubernetes-list-map-keys", []))
        out.append(f"list keyed by {keys}")
    if node.get("x-kubernetes-list-type") == "set":
        out.append("distinct values")
    return out


def _walk(node: dict[str, Any], path: str, required: bool) -> Iterator[tuple[str, dict[str, Any], bool]]:
    yield path, node, required
    target = node
    if node.get("type") == "array":
        target = node["items"]
        path = f"{path}[]"
    props = target.get("properties", {})
    req = set(target.get("required", []))
    for name in props:  # model field order
        yield from _walk(props[name], f"{path}.{name}", name in req)


def field_table(schema: dict[str, Any], root: str) -> list[str]:
    """Markdown table of every field below ``schema`` (rows start at its properties)."""
    lines = [
        "| Field | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    rows = _walk(schema, root, True)
    next(rows)  # the root itself
    for path, node, required in rows:
        desc = _cell(node.get("description", ""))
        extra = constraints(node)
        if required:
            extra.insert(0, "**required**")
        if node.get("examples"):
            extra.append("example: " + ", ".join(_value(e) for e in node["examples"]))
        if extra:
            desc = f"{desc}<br>{'; '.join(extra)}" if desc else "; ".join(extra)
        default = _value(node["default"]) if "default" in node else ""
        lines.append(f"| `{path}` | {type_name(node)} | {default} | {desc} |")
    return lines


def _rules(schema: dict[str, Any], root: str) -> Iterator[tuple[str, dict[str, str]]]:
    for path, node, _ in _walk(schema, root, True):
        target = node["items"] if node.get("type") == "array" else node
        for rule in target.get("x-kubernetes-validations", []):
            yield (f"{path}[]" if target is not node else path), rule


def kind_section(info: KindInfo) -> list[str]:
    """The reference of one kind."""
    spec = crdgen.model_schema(info.spec, keep_examples=True)
    status = crdgen.model_schema(info.status, keep_examples=True)
    lines = [
        f"## {info.kind}",
        "",
        crdgen.normalize_description(info.description),
        "",
        f"`apiVersion: {API_VERSION}`, `kind: {info.kind}`, plural `{info.plural}`, "
        f"short name{'s' if len(info.short_names) > 1 else ''} "
        + ", ".join(f"`{s}`" for s in info.short_names)
        + f", category `{CATEGORY}`, namespaced, with a status subresource.",
        "",
        "Examples: " + ", ".join(f"[`examples/{f}`](../examples/{f})" for f in EXAMPLES.get(info.kind, ())),
        "",
        "`kubectl get` columns: "
        + ", ".join(f"{c.name}{' (wide)' if c.priority else ''}" for c in info.printer_columns)
        + ".",
        "",
    ]
    if info.selectable_fields:
        lines += [
            "Field selectors (`kubectl get --field-selector`): "
            + ", ".join(f"`{p.lstrip('.')}`" for p in info.selectable_fields)
            + ".",
            "",
        ]
    lines += [f"### {info.kind} spec", "", *field_table(spec, "spec"), ""]

    rules = list(_rules(spec, "spec"))
    transition = [r.to_schema() for r in info.spec_transition_rules]
    root = [r.to_schema() for r in info.root_rules]
    if rules or transition or root:
        lines += [
            f"### {info.kind} validation rules",
            "",
            "Checked by the apiserver (CEL `x-kubernetes-validations`) and, with the same messages, by the "
            "operator when it parses an object; rules marked *on update* compare with the stored object.",
            "",
            "| Where | Rule | Message |",
            "|---|---|---|",
        ]
        for rule in root:
            lines.append(f"| `metadata.name` | {_code(rule['rule'])} | {_cell(rule['message'])} |")
        for path, rule in rules:
            lines.append(f"| `{path}` | {_code(rule['rule'])} | {_cell(rule['message'])} |")
        for rule in transition:
            lines.append(f"| `spec` (on update) | {_code(rule['rule'])} | {_cell(rule['message'])} |")
        lines.append("")

    lines += [f"### {info.kind} status", "", *field_table(status, "status"), ""]
    return lines


def generate_docs() -> str:
    """The whole API reference (Markdown)."""
    lines = [
        "<!-- Generated by `make crds` (python -m mlops_operator.api.generate) from the pydantic models in",
        "     operator/mlops_operator/api/v1alpha1/. DO NOT EDIT: change the models and regenerate. -->",
        "",
        f"# API reference: `{API_VERSION}`",
        "",
        "Three namespaced kinds run the ML lifecycle: a **TrainingJob** trains and registers a model "
        "version, a **ModelDeployment** serves a version (pinned, or followed through an MLflow alias such "
        "as `champion`), and a **DriftPolicy** watches a deployment's live inputs and retrains on sustained "
        f"drift. `kubectl get {CATEGORY}` lists all three; `kubectl explain <kind>.spec` shows the "
        "descriptions below.",
        "",
        "Conventions: field names are camelCase; durations are integer `...Seconds`; CPU and memory are "
        "Kubernetes quantities (`500m`, `4Gi`, or an integer); secrets are only referenced, never "
        "inlined; `conditions` have the shape of `metav1.Condition` and are keyed by `type`. The operator "
        "never writes `spec`: everything it decides is in `status`.",
        "",
        "Contents: " + ", ".join(f"[{i.kind}](#{i.kind.lower()})" for i in KINDS),
        "",
    ]
    for info in KINDS:
        lines += kind_section(info)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_docs(path: Path = DEFAULT_PATH) -> Path:
    """Write the API reference to ``path`` (only when it changed); return the path."""
    text = generate_docs()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def check_docs(path: Path = DEFAULT_PATH) -> bool:
    """Whether ``path`` holds the current API reference."""
    return path.is_file() and path.read_text(encoding="utf-8") == generate_docs()
