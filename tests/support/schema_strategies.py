"""Hypothesis strategies generated from the CRDs' openAPIV3 schemas, plus mutations of what they generate.

:func:`from_schema` walks a structural schema node (types, enums, minimum/maximum with their exclusive
flags, minLength/maxLength, patterns, required, maxItems/maxProperties, ``x-kubernetes-list-type`` set/map
uniqueness, int-or-string, preserve-unknown-fields) and returns a strategy of JSON values the schema
accepts. ``x-kubernetes-validations`` (CEL) are ignored: the generated objects are schema-valid, and a
good share of them break a cross-field rule, which is what the model must then reject naming the field.

:func:`mutated` takes such an object and breaks it at one place (wrong JSON type, null, out-of-range or
huge number, over-long or odd unicode string, unknown key, deleted key), returning the object and the
path of the change, so a test can check that the model's error names that place.

Presence rules of the simple shapes (exactly one of, at most one of, at least one of, a field allowed only
under a condition) are read from the CEL text and most generated objects are steered to satisfy them, so
that a good share of the specs are valid; one object in eight is left as generated, to break them.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from hypothesis import settings
from hypothesis import strategies as st

REPO: Final = Path(__file__).resolve().parents[2]


def examples(budget: int, **overrides: Any) -> settings:
    """Settings of one property test: ``budget`` examples under the default ``ci`` profile (registered and
    loaded by tests/unit/conftest.py), ten times that under ``HYPOTHESIS_PROFILE=dev``."""
    scale = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "dev" else 1
    return settings(max_examples=budget * scale, **overrides)


#: Characters the generated strings are made of: any Unicode scalar value but surrogates (JSON cannot carry
#: a lone surrogate to the apiserver).
ALPHABET: Final = st.characters(codec="utf-8")
#: Largest collection a generated list/map has (the schema's maxItems/maxProperties may allow more).
MAX_COLLECTION: Final = 3
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def load_crd_schemas() -> dict[str, dict[str, Any]]:
    """Kind -> openAPIV3Schema of every committed CRD."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        out[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return out


def spec_schema(kind: str) -> dict[str, Any]:
    """The ``spec`` node of a kind's CRD schema."""
    schema: dict[str, Any] = load_crd_schemas()[kind]["properties"]["spec"]
    return schema


# ----------------------------------------------------------------------------------------------------------
# schema -> strategy
# ----------------------------------------------------------------------------------------------------------


def _string(node: Mapping[str, Any], alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    if "enum" in node:
        return st.sampled_from(list(node["enum"]))
    lo = int(node.get("minLength", 0))
    hi = int(node.get("maxLength", 40))
    pattern = node.get("pattern")
    if pattern is None:
        return st.text(alphabet, min_size=lo, max_size=min(hi, max(lo, 24)))
    compiled = re.compile(pattern)
    return st.from_regex(compiled, fullmatch=True, alphabet=alphabet).filter(lambda s: lo <= len(s) <= hi)


def _integer(node: Mapping[str, Any]) -> st.SearchStrategy[int]:
    lo = node.get("minimum", INT64_MIN)
    hi = node.get("maximum", INT64_MAX)
    lo = math.ceil(lo) + (1 if node.get("exclusiveMinimum") and lo == math.ceil(lo) else 0)
    hi = math.floor(hi) - (1 if node.get("exclusiveMaximum") and hi == math.floor(hi) else 0)
    edges = [v for v in (lo, hi, 0, 1) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi)) if edges else st.integers(lo, hi)


def _number(node: Mapping[str, Any]) -> st.SearchStrategy[float | int]:
    lo = node.get("minimum")
    hi = node.get("maximum")
    floats = st.floats(
        min_value=lo,
        max_value=hi,
        exclude_min=bool(node.get("exclusiveMinimum")) and lo is not None,
        exclude_max=bool(node.get("exclusiveMaximum")) and hi is not None,
        allow_nan=False,
        allow_infinity=False,
    )
    ints = _integer(
        {**node, "minimum": lo if lo is not None else -(2**53), "maximum": hi if hi is not None else 2**53}
    )
    return st.one_of(floats, ints.filter(lambda v: lo is None or v != lo or not node.get("exclusiveMinimum")))


def _scalar(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(alphabet, max_size=12),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
    )


def _map_keys(node: Mapping[str, Any]) -> list[str] | None:
    if node.get("x-kubernetes-list-type") == "map":
        return list(node.get("x-kubernetes-list-map-keys", []))
    return None


def from_schema(
    node: Mapping[str, Any], *, alphabet: st.SearchStrategy[str] = ALPHABET, optional_share: bool = True
) -> st.SearchStrategy[Any]:
    """Values of a structural schema node (CEL rules ignored). Optional properties are present or absent
    independently; collections stay small."""
    if node.get("x-kubernetes-int-or-string"):
        return st.one_of(
            _integer({"minimum": node.get("minimum", 0), "maximum": 2**40}),
            _string({k: v for k, v in node.items() if k in ("pattern", "maxLength", "minLength")}, alphabet),
        )
    kind = node.get("type")
    if kind is None and node.get("x-kubernetes-preserve-unknown-fields"):
        return _scalar(alphabet)
    if kind == "object":
        props: Mapping[str, Any] = node.get("properties", {})
        if props:
            required = set(node.get("required", ()))
            fixed = {k: from_schema(v, alphabet=alphabet) for k, v in props.items() if k in required}
            optional = {k: from_schema(v, alphabet=alphabet) for k, v in props.items() if k not in required}
            plain = st.fixed_dictionaries(fixed, optional=optional)
            steering = _steering(node)
            if steering.empty:
                return plain
            return _steered(plain, steering, {k: from_schema(v, alphabet=alphabet) for k, v in props.items()})
        if "additionalProperties" in node:
            values = from_schema(node["additionalProperties"], alphabet=alphabet)
            keys = st.one_of(KEYS, st.text(alphabet, min_size=0, max_size=16))
            hi = min(int(node.get("maxProperties", MAX_COLLECTION)), MAX_COLLECTION)
            return st.dictionaries(keys, values, max_size=hi)
        return st.fixed_dictionaries({})
    if kind == "array":
        items = from_schema(node["items"], alphabet=alphabet)
        lo = int(node.get("minItems", 0))
        hi = max(lo, min(int(node.get("maxItems", MAX_COLLECTION)), MAX_COLLECTION))
        map_keys = _map_keys(node)
        if node.get("x-kubernetes-list-type") == "set":
            return st.lists(items, min_size=lo, max_size=hi, unique_by=_freeze)
        if map_keys:
            return st.lists(
                items,
                min_size=lo,
                max_size=hi,
                unique_by=lambda v: tuple(_freeze(v.get(k)) for k in map_keys),
            )
        return st.lists(items, min_size=lo, max_size=hi)
    if kind == "string":
        return _string(node, alphabet)
    if kind == "integer":
        return _integer(node)
    if kind == "number":
        return _number(node)
    if kind == "boolean":
        return st.booleans()
    raise ValueError(f"schema node the generator does not know: {dict(node)!r}")


# ----------------------------------------------------------------------------------------------------------
# steering: most generated objects satisfy the simple presence rules (CEL), a few are left to break them
# ----------------------------------------------------------------------------------------------------------

#: Map keys: names most maps accept (label keys, parameter names), besides arbitrary text.
KEYS: Final = st.from_regex(r"\A[a-z][a-z0-9_.-]{0,14}\Z")
_HAS = r"has\(self\.(\w+)\)"
#: ``has(self.a) != has(self.b)`` and ``has(self.a) != (has(self.b) || has(self.c))``: exactly one group.
_EXACTLY_ONE = re.compile(rf"^{_HAS} != \(?({_HAS}(?: \|\| {_HAS})*)\)?$")
#: ``!(has(self.a) && has(self.b))`` and ``!has(self.a) || !has(self.b)``: at most one.
_AT_MOST_ONE = (re.compile(rf"^!\({_HAS} && {_HAS}\)$"), re.compile(rf"^!{_HAS} \|\| !{_HAS}$"))
#: ``(has(self.a) && size(self.a) > 0) || has(self.b)``: at least one.
_AT_LEAST_ONE = re.compile(rf"^\({_HAS} && size\(self\.\w+\) > 0\) \|\| {_HAS}$")
#: ``!has(self.a) || <condition>``: a field only allowed under a condition (dropping it always helps).
_CONDITIONAL = re.compile(rf"^!{_HAS} \|\| (?!!has)")


class _Steering:
    def __init__(self) -> None:
        self.exactly_one: list[list[list[str]]] = []
        self.at_most_one: list[tuple[str, str]] = []
        self.at_least_one: list[tuple[str, str]] = []
        self.conditional: list[str] = []

    @property
    def empty(self) -> bool:
        return not (self.exactly_one or self.at_most_one or self.at_least_one or self.conditional)


def _steering(node: Mapping[str, Any]) -> _Steering:
    """What the node's presence rules (the simple CEL shapes above) ask for."""
    out = _Steering()
    optional = set(node.get("properties", {})) - set(node.get("required", ()))
    for entry in node.get("x-kubernetes-validations", ()):
        rule = entry["rule"]
        if match := _EXACTLY_ONE.match(rule):
            out.exactly_one.append([[match.group(1)], re.findall(_HAS, match.group(2))])
        elif match := next((m for p in _AT_MOST_ONE if (m := p.match(rule))), None):
            out.at_most_one.append((match.group(1), match.group(2)))
        elif match := _AT_LEAST_ONE.match(rule):
            out.at_least_one.append((match.group(1), match.group(2)))
        elif (match := _CONDITIONAL.match(rule)) and match.group(1) in optional:
            out.conditional.append(match.group(1))
    return out


def _steered(
    plain: st.SearchStrategy[dict[str, Any]], steering: _Steering, props: Mapping[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        obj: dict[str, Any] = draw(plain)
        if draw(st.integers(0, 7)) == 7:  # one in eight is left as generated: the rules get broken too
            return obj
        for name in steering.conditional:
            if name in obj and draw(st.booleans()):
                del obj[name]
        protected: set[str] = set()
        for groups in steering.exactly_one:
            chosen = groups[draw(st.integers(0, len(groups) - 1))]
            for group in groups:
                if group is not chosen:
                    for name in group:
                        obj.pop(name, None)
            present = [name for name in chosen if name in obj]
            if not present:
                name = draw(st.sampled_from(chosen))
                obj[name] = draw(props[name])
                present = [name]
            protected.update(present)
        for a, b in steering.at_most_one:
            if a in obj and b in obj:
                drop = b if a in protected else a if b in protected else draw(st.sampled_from([a, b]))
                del obj[drop]
        for a, b in steering.at_least_one:
            if not obj.get(a) and b not in obj:
                name = draw(st.sampled_from([a, b]))
                obj[name] = draw(props[name])
        return obj

    return build()


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return (type(value).__name__, value)


# ----------------------------------------------------------------------------------------------------------
# mutations
# ----------------------------------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def paths(value: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every path into a JSON value (the root included)."""
    yield prefix
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from paths(sub, (*prefix, i))


def get_path(value: Any, path: Path_) -> Any:
    for step in path:
        value = value[step]
    return value


#: Values put in place of whatever was there: every JSON type, nulls, edges of number ranges, odd strings.
ODD_VALUES: Final[list[Any]] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    2**31,
    2**63,
    -(2**63) - 1,
    2**70,
    1e308,
    -1e308,
    5e-324,
    "",
    " ",
    "0",
    "true",
    "null",
    "1e3",
    "500m",
    "\u0000",
    "\n",
    "é",
    "\U0001f600" * 3,
    "\u202e\u200b",
    "x" * 300,
    "a" * 5000,
    [],
    [None],
    [[]],
    {},
    {"": None},
]


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> tuple[dict[str, Any], Path_, str]:
    """(object, path, what) with the object broken at ``path``: replaced, deleted, or given an unknown key."""
    obj = copy.deepcopy(draw(base))
    candidates = [p for p in paths(obj) if p]
    operation = draw(st.sampled_from(["replace", "replace", "replace", "delete", "unknown"]))
    if operation == "unknown" or not candidates:
        dicts = [p for p in paths(obj) if isinstance(get_path(obj, p), dict)]
        where = draw(st.sampled_from(dicts))
        key = draw(st.sampled_from(["unknownField", "Name", "", "spec", "x-kubernetes", "\u00e9t\u00e9"]))
        target = get_path(obj, where)
        if key in target:
            key = f"{key}_unknown"
        target[key] = draw(st.sampled_from(ODD_VALUES))
        return obj, (*where, key), "unknown"
    path = draw(st.sampled_from(candidates))
    parent = get_path(obj, path[:-1])
    if operation == "delete":
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])  # type: ignore[arg-type]
        return obj, path, "delete"
    parent[path[-1]] = draw(st.one_of(st.sampled_from(ODD_VALUES), st.text(ALPHABET, max_size=8)))
    return obj, path, "replace"


def prune_nulls(value: Any) -> Any:
    """What the apiserver stores for a body: nulls of non-nullable fields are dropped (then defaulted)."""
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def data_path(data: Any, loc: tuple[Any, ...]) -> Path_:
    """The part of a pydantic error ``loc`` that is a path into ``data`` (union tags such as ``int`` or
    ``function-after[...]`` are skipped)."""
    out: list[str | int] = []
    node = data
    for step in loc:
        in_dict = isinstance(node, dict) and isinstance(step, str) and step in node
        in_list = isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
        if in_dict or in_list:
            out.append(step)
            node = node[step]
    return tuple(out)


def schema_at(schema: Mapping[str, Any], path: Path_) -> Mapping[str, Any] | None:
    """The schema node of ``path`` (None when the path leaves the schema: an unknown field)."""
    node: Mapping[str, Any] = schema
    for step in path:
        if isinstance(step, int):
            if "items" not in node:
                return None
            node = node["items"]
        elif step in node.get("properties", {}):
            node = node["properties"][step]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node
