"""Status publishing, shared by every kind: readable validation errors, the status patch sent only when the
status changed, an Event per transition, and the one way an invalid spec is reported.

Kind-agnostic: a status is any pydantic model with ``conditions`` and ``observed_generation`` (all three
kinds' statuses are); :class:`StatusPublisher` talks to the apiserver through a
:class:`~mlops_operator.kube.client.KubeClient`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from mlops_operator.api.v1alpha1.common import READY, VALID, Condition, set_condition
from mlops_operator.kube.client import KubeClient
from mlops_operator.machinery.transitions import Transition
from mlops_operator.machinery.versions import KnownVersions


class Status(Protocol):
    """What publishing needs of a kind's status model."""

    conditions: list[Condition]
    observed_generation: int | None

    def to_dict(self) -> dict[str, Any]: ...

    def model_copy(self: S, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> S: ...


S = TypeVar("S", bound=Status)


def describe_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    """``spec.dataset.target: Field required; spec.trainer: ...`` with the wire (camelCase) field paths."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in (prefix, *item["loc"]))
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def invalid_spec_status(previous: S, message: str, generation: int | None, **update: Any) -> S:
    """``previous`` with ``Valid=False`` and ``Ready=False`` (reason InvalidSpec) for the current generation,
    plus the kind's own ``update`` (e.g. a TrainingJob's phase and failure)."""
    conditions = set_condition(previous.conditions, VALID, "False", "InvalidSpec", message, generation)
    conditions = set_condition(conditions, READY, "False", "InvalidSpec", message, generation)
    return previous.model_copy(update={"conditions": conditions, "observed_generation": generation, **update})


class StatusPublisher:
    """Writes what a reconcile decided: the status subresource when it changed, then the Events."""

    def __init__(self, client: KubeClient, versions: KnownVersions) -> None:
        self.client = client
        self.versions = versions

    def publish(
        self, body: Mapping[str, Any], previous: Status, new: Status, transitions: Sequence[Transition]
    ) -> bool:
        """Patch the status subresource when ``new`` differs from ``previous`` (fields that disappeared are
        nulled: a merge patch keeps what it does not mention), then post an Event per transition.
        Returns whether a patch was sent."""
        before, after = previous.to_dict(), new.to_dict()
        changed = after != before
        if changed:
            metadata = body["metadata"]
            patch = {**after, **{key: None for key in before if key not in after}}
            written = self.client.patch_status(
                body["apiVersion"], body["kind"], metadata["namespace"], metadata["name"], patch
            )
            self.versions.note(written or {})
        for transition in transitions:
            self.client.post_event(body, transition.type, transition.reason, transition.message)
        return changed

    def report_invalid(
        self, body: Mapping[str, Any], previous: S, message: str, generation: int | None, **update: Any
    ) -> S:
        """The spec does not parse: say so in conditions and with one Warning Event (never a crash loop)."""
        status = invalid_spec_status(previous, message, generation, **update)
        said = any(
            (c.type, c.status, c.reason, c.message) == (VALID, "False", "InvalidSpec", message)
            for c in previous.conditions
        )
        self.publish(body, previous, status, [] if said else [Transition("Warning", "InvalidSpec", message)])
        return status
