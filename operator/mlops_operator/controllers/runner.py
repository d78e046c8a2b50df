"""Runs the kopf operator with every mlops.dev handler registered (used by ``mlops-operator run``)."""

import asyncio
import logging
import os
from collections.abc import Sequence

import kopf
import prometheus_client

import mlops_operator.controllers  # noqa: F401  (registers the handlers)
from mlops_operator.controllers import resync
from mlops_operator.controllers.drift_evaluation import metrics_registry


def run(
    namespaces: Sequence[str] = (),
    standalone: bool = True,
    liveness_endpoint: str | None = None,
    verbose: bool = False,
    metrics_port: int | None = None,
) -> None:
    """Block running the operator: cluster-wide unless ``namespaces`` lists the ones to watch."""
    # The MLflow client retries for minutes by default; a reconcile must not hang on a dead server.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    resync.set_namespaces(namespaces)
    if metrics_port is not None:
        prometheus_client.start_http_server(metrics_port, registry=metrics_registry())
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
