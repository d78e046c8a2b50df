"""Runs the kopf operator with every mlops.dev handler registered (used by ``mlops-operator run``)."""

import asyncio
import ctypes
import logging
import os
from collections.abc import Sequence

import kopf
import prometheus_client

import mlops_operator.controllers  # noqa: F401  (registers the handlers)
from mlops_operator.controllers import resync
from mlops_operator.controllers.drift_evaluation import metrics_registry

#: glibc mallopt parameter: the most malloc arenas. Default 8 per core; every thread that allocates while
#: another holds an arena gets its own, and freed memory in one arena is not reusable by the others.
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Keep the operator's many reconcile threads on a few malloc arenas (``MALLOC_ARENA_MAX``, set at run
    time): the RSS a burst of reconciles leaves behind shrinks. A no-op off glibc or when the environment
    already sets it."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, int(os.environ.get("MLOPS_MALLOC_ARENAS") or arenas))
    except (OSError, AttributeError):
        pass


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
    limit_malloc_arenas()
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
