"""Runs the kopf operator with every mlops.dev handler registered (used by ``mlops-operator run``)."""

import asyncio
import logging
from collections.abc import Sequence

import kopf

import mlops_operator.controllers  # noqa: F401  (registers the handlers)


def run(
    namespaces: Sequence[str] = (),
    standalone: bool = True,
    liveness_endpoint: str | None = None,
    verbose: bool = False,
) -> None:
    """Block running the operator: cluster-wide unless ``namespaces`` lists the ones to watch."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("kopf.objects").setLevel(logging.INFO)
    asyncio.run(
        kopf.operator(
            standalone=standalone,
            namespaces=list(namespaces),
            clusterwide=not namespaces,
            liveness_endpoint=liveness_endpoint,
        )
    )
