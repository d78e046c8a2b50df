"""The resync loop's namespace filter follows kopf's pattern syntax."""

from __future__ import annotations

import pytest

from mlops_operator.machinery import resync


@pytest.mark.parametrize(
    ("patterns", "namespace", "expected"),
    [
        ([], "anything", True),
        (["team-a"], "team-a", True),
        (["team-a"], "team-b", False),
        (["!isolated-*"], "isolated-1", False),
        (["!isolated-*"], "default", True),
        (["myapp-*, !*-pr-*, *pr-123"], "myapp-pr-123", True),
        (["myapp-*, !*-pr-*, *pr-123"], "myapp-pr-456", False),
        (["myapp-*, !*-pr-*, *pr-123"], "otherapp-pr-123", False),
        (["team-a", "team-b"], "team-b", True),
    ],
)
def test_watched_namespaces(patterns: list[str], namespace: str, expected: bool) -> None:
    assert resync.watched(namespace, patterns) is expected
