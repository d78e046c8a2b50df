"""Hypothesis settings profiles of the unit tier.

``ci`` (the default): derandomized and without an example database, so every run (and CI) draws the same
examples and a failure reproduces as it is; no deadline (a shared 2-core machine has slow moments). Each
property test sets its own ``max_examples`` budget through ``tests.support.schema_strategies.examples``.
``dev``: random, ten times the examples; select it with ``HYPOTHESIS_PROFILE=dev``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "dev",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
