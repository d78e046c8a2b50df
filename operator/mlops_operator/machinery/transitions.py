"""Transitions: what changed in a status and deserves a Kubernetes Event on the object, shared by every
kind. A kind's status module decides which condition changes are worth telling (and as Normal or Warning);
:func:`changed_conditions` is how all three find the changes. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mlops_operator.api.v1alpha1.common import Condition

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Transition:
    """Something that changed and deserves a Kubernetes Event on the object."""

    type: EventType
    reason: str
    message: str

    @classmethod
    def of(cls, condition: Condition, warning: bool) -> Transition:
        """The Event telling ``condition``'s new state."""
        return cls("Warning" if warning else "Normal", condition.reason, condition.message)


def condition_changed(before: Condition | None, after: Condition) -> bool:
    """A condition is new, or its status or reason changed (a new message alone is no transition)."""
    return before is None or (before.status, before.reason) != (after.status, after.reason)


def changed_conditions(
    previous: Sequence[Condition], current: Sequence[Condition]
) -> list[tuple[Condition | None, Condition]]:
    """(before, after) for every condition of ``current`` that is new or changed status or reason, in
    ``current``'s order."""
    before = {c.type: c for c in previous}
    return [(before.get(c.type), c) for c in current if condition_changed(before.get(c.type), c)]
