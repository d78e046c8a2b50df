"""Runs the kopf operator with every mlops.dev handler registered (used by ``mlops-operator run``)."""

import asyncio
import logging
import os
from collections.abc import Sequence

import kopf

import mlops_operator.controllers  # noqa: F401  (registers the handlers)
from mlops_operator.controllers import resync


def run(
    namespaces: Sequence[str] = (),
    standalone: bool = True,
    liveness_endpoint: str | None = None,
    verbose: bool = False,
) -> None:
    """Block running the operator: cluster-wide unless ``namespaces`` lists the ones to watch."""
    # The MLflow client retries for minutes by default; a reconcile must not hang on a dead server.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    resync.set_namespaces(namespaces)
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
