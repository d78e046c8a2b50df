"""The standby rule of controllers/peering.py (what pauses the resync loop on a standby replica): kopf's own
rule, applied to the peering object's status."""

from __future__ import annotations

import datetime as dt

from mlops_operator.machinery.peering import _live_rivals

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def peer(priority: int, seconds_ago: float, lifetime: int = 60) -> dict[str, object]:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - dt.timedelta(seconds=seconds_ago)).isoformat(),
    }


def test_alone_is_active() -> None:
    assert _live_rivals({"me": peer(100, 1)}, 100, NOW) == []


def test_a_live_higher_priority_peer_makes_a_standby() -> None:
    assert _live_rivals({"me": peer(100, 1), "boss": peer(200, 5)}, 100, NOW) == ["boss"]


def test_a_lower_priority_peer_does_not() -> None:
    assert _live_rivals({"me": peer(200, 1), "other": peer(100, 1)}, 200, NOW) == []


def test_a_dead_peer_does_not_count() -> None:
    """A SIGKILLed replica leaves its entry behind: it stops counting once its lifetime has passed."""
    assert _live_rivals({"me": peer(100, 1), "killed": peer(200, 16, lifetime=15)}, 100, NOW) == []


def test_an_equal_priority_peer_pauses_both_as_kopf_does() -> None:
    assert _live_rivals({"me": peer(100, 1), "twin": peer(100, 1)}, 100, NOW) == ["twin"]


def test_malformed_entries_are_ignored() -> None:
    assert _live_rivals({"me": peer(100, 1), "junk": {"priority": "x"}, "str": "y"}, 100, NOW) == []
