"""Cluster-tier fixtures. The session operator (tests/conftest.py) watches every namespace except
``isolated-*``: tests that need an operator of their own (restarts, kills) create an ``isolated-`` namespace
and start one there."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.conftest import ISOLATED_PREFIX
from tests.support.kube import Kube, create_namespace, delete_namespace


@pytest.fixture
def isolated_namespace(kube: Kube, crds: list[str]) -> Iterator[str]:
    """A namespace the session operator ignores, for tests that run an operator of their own."""
    name = f"{ISOLATED_PREFIX}{secrets.token_hex(4)}"
    yield create_namespace(kube, name)
    delete_namespace(kube, name)
