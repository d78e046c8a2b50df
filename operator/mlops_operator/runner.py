"""The operator entry (``mlops-operator run``): builds every object the operator is made of from one
:class:`~mlops_operator.config.OperatorConfig`, registers their handlers with a kopf registry of its own
(nothing is registered by importing a module), and runs kopf.

Who holds what:

- one :class:`~mlops_operator.kube.connection.ApiServer` (the identity, shared with kopf's login) and one
  :class:`~mlops_operator.kube.client.KubeClient` over it;
- per kind, a controller (its I/O and reconcile), :class:`~mlops_operator.machinery.triggers.Rails` (when it
  reconciles) and a :class:`~mlops_operator.machinery.publishing.StatusPublisher`;
- one :class:`~mlops_operator.machinery.resync.ResyncLoop` for the kinds whose state changes outside
  Kubernetes, paused on a standby replica (:class:`~mlops_operator.machinery.peering.Peering`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf
import prometheus_client

from mlops_operator.api.v1alpha1 import FIELD_MANAGER, GROUP, KINDS, LABEL_PREFIX, VERSION
from mlops_operator.api.v1alpha1 import driftpolicy as dp_api
from mlops_operator.api.v1alpha1 import modeldeployment as md_api
from mlops_operator.api.v1alpha1 import trainingjob as tj_api
from mlops_operator.config import OperatorConfig
from mlops_operator.controllers.driftpolicy.controller import OWNER_LABEL as DP_OWNER_LABEL
from mlops_operator.controllers.driftpolicy.controller import DriftPolicyController
from mlops_operator.controllers.driftpolicy.evaluation import DriftMetrics
from mlops_operator.controllers.modeldeployment.controller import OWNER_LABEL as MD_OWNER_LABEL
from mlops_operator.controllers.modeldeployment.controller import ModelDeploymentController
from mlops_operator.controllers.trainingjob.controller import OWNER_LABEL as TJ_OWNER_LABEL
from mlops_operator.controllers.trainingjob.controller import TrainingJobController
from mlops_operator.kube.client import STANDARD_PATHS, KubeClient, custom_resource_paths
from mlops_operator.kube.connection import ApiServer
from mlops_operator.kube.discovery import Discovery, kinds_served_by
from mlops_operator.machinery.peering import Peering
from mlops_operator.machinery.publishing import StatusPublisher
from mlops_operator.machinery.resync import ResyncLoop
from mlops_operator.machinery.settings import KopfSettings
from mlops_operator.machinery.triggers import Rails, Scheduler, generation_and_annotations_key
from mlops_operator.machinery.versions import KnownVersions

#: glibc mallopt parameter: the most malloc arenas. Default 8 per core; every thread that allocates while
#: another holds an arena gets its own, and freed memory in one arena is not reusable by the others.
_M_ARENA_MAX = -8
#: Name of the kopf peering object used when several replicas run (one acts, the others wait).
PEERING_NAME = "mlops-operator"


def limit_malloc_arenas(arenas: int) -> None:
    """Keep the operator's many reconcile threads on a few malloc arenas (``MALLOC_ARENA_MAX``, set at run
    time): the RSS a burst of reconciles leaves behind shrinks. A no-op off glibc or when the environment
    already sets it."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


@dataclass
class Operator:
    """Everything one operator process is made of, wired together; :meth:`register` hands it to kopf."""

    config: OperatorConfig
    api: ApiServer
    client: KubeClient
    kopf_settings: KopfSettings
    resync: ResyncLoop
    drift_metrics: DriftMetrics
    trainingjobs: TrainingJobController
    modeldeployments: ModelDeploymentController
    driftpolicies: DriftPolicyController
    rails: Mapping[str, Rails]

    @classmethod
    def build(cls, config: OperatorConfig, namespaces: Sequence[str] = ()) -> Operator:
        api = ApiServer()
        paths = {
            **STANDARD_PATHS,
            **custom_resource_paths(GROUP, VERSION, {info.kind: info.plural for info in KINDS}),
        }
        client = KubeClient(api, field_manager=FIELD_MANAGER, annotation_prefix=LABEL_PREFIX, paths=paths)
        kopf_settings = KopfSettings(config, prefix=GROUP, peering_name=PEERING_NAME)
        peering = Peering(api, kopf_settings.current)
        scheduler = Scheduler()
        drift_metrics = DriftMetrics()
        versions = {info.kind: KnownVersions() for info in KINDS}

        def publisher(kind: str) -> StatusPublisher:
            return StatusPublisher(client, versions[kind])

        trainingjobs = TrainingJobController(client, publisher(tj_api.KIND), config)
        discovery = Discovery(kinds_served_by(client), ttl=config.discovery_ttl_seconds)
        modeldeployments = ModelDeploymentController(client, publisher(md_api.KIND), discovery, config)
        driftpolicies = DriftPolicyController(client, publisher(dp_api.KIND), config, drift_metrics)

        def rails(
            kind: str,
            reconcile: Callable[[Mapping[str, Any]], Any],
            reread: Callable[[str, str], Mapping[str, Any] | None],
            **options: Any,
        ) -> Rails:
            api_version = f"{GROUP}/{VERSION}"
            return Rails(
                api_version,
                kind,
                reconcile,
                reread,
                scheduler,
                versions=versions[kind],
                executor=kopf_settings.handler_executor,
                **options,
            )

        all_rails = {
            tj_api.KIND: rails(tj_api.KIND, trainingjobs.reconcile, trainingjobs.read),
            # an annotation is a request (rollback) or a nudge to re-resolve now
            md_api.KIND: rails(
                md_api.KIND,
                modeldeployments.reconcile,
                modeldeployments.read,
                trigger_key=generation_and_annotations_key,
            ),
            # an annotation is an approval
            dp_api.KIND: rails(
                dp_api.KIND,
                driftpolicies.reconcile,
                driftpolicies.read,
                trigger_key=generation_and_annotations_key,
                forget=driftpolicies.forget,
            ),
        }
        resync = ResyncLoop(client, namespaces, peering.standby)
        return cls(
            config=config,
            api=api,
            client=client,
            kopf_settings=kopf_settings,
            resync=resync,
            drift_metrics=drift_metrics,
            trainingjobs=trainingjobs,
            modeldeployments=modeldeployments,
            driftpolicies=driftpolicies,
            rails=all_rails,
        )

    def register(self, registry: kopf.OperatorRegistry) -> None:
        """Every handler of the operator, in one place."""
        kopf.on.startup(registry=registry)(self.kopf_settings.configure)
        kopf.on.login(registry=registry)(self.api.login_for_kopf)
        kopf.on.startup(registry=registry)(self.resync.start)
        kopf.on.cleanup(registry=registry)(self.resync.stop)
        config = self.config

        tj = self.rails[tj_api.KIND]
        self._parent_events(registry, tj_api.INFO.plural, tj)
        self.resync.register(
            tj.api_version,
            tj.kind,
            interval=config.progress_interval_seconds,
            reconcile=tj,
            when=lambda body: (
                self.trainingjobs.needs_resync(body)
                and not tj.reconciled_within(body, config.progress_interval_seconds)
            ),
        )

        # Pods are not watched: the Job's status summarises them (TrainingJobController.job_event_matters).
        @kopf.on.event("batch/v1", "jobs", labels={TJ_OWNER_LABEL: kopf.PRESENT}, registry=registry)
        async def job_event(body: kopf.Body, type: str | None, **_: Any) -> None:
            if self.trainingjobs.job_event_matters(body, type):
                tj.on_child_event(body)

        md = self.rails[md_api.KIND]
        self._parent_events(registry, md_api.INFO.plural, md)
        # aliases move in MLflow, not in Kubernetes: look again periodically and roll out when they do
        self.resync.register(
            md.api_version,
            md.kind,
            interval=config.resolve_interval_seconds,
            reconcile=md,
            when=lambda body: not md.reconciled_within(body, config.resolve_interval_seconds),
        )

        @kopf.on.event("apps/v1", "deployments", labels={MD_OWNER_LABEL: kopf.PRESENT}, registry=registry)
        async def deployment_event(body: kopf.Body, type: str | None, **_: Any) -> None:
            if type is not None:  # the initial listing: parents come with their own listing and resync
                md.on_child_event(body)

        dp = self.rails[dp_api.KIND]
        self._parent_events(registry, dp_api.INFO.plural, dp)
        # the scrape interval: each pass scrapes the model servers; evaluations follow spec.intervalSeconds
        self.resync.register(
            dp.api_version, dp.kind, interval=config.drift_scrape_interval_seconds, reconcile=dp
        )

        @kopf.on.event(
            GROUP, VERSION, tj_api.INFO.plural, labels={DP_OWNER_LABEL: kopf.PRESENT}, registry=registry
        )
        async def retrain_event(body: kopf.Body, type: str | None, **_: Any) -> None:
            if type is not None and self.driftpolicies.retrain_event_matters(body):
                dp.on_child_event(body)

    @staticmethod
    def _parent_events(registry: kopf.OperatorRegistry, plural: str, rails: Rails) -> None:
        # A coroutine: decided on kopf's event loop; only a due reconcile takes one of kopf's handler threads
        # (most events are the echoes of our own writes).
        @kopf.on.event(GROUP, VERSION, plural, registry=registry)
        async def parent_event(body: kopf.Body, type: str | None, **_: Any) -> None:
            await rails.on_parent_event(body, type)


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
    config = OperatorConfig.from_env()
    limit_malloc_arenas(config.malloc_arenas)
    operator = Operator.build(config, namespaces)
    registry = kopf.OperatorRegistry()
    operator.register(registry)
    if metrics_port is not None:
        prometheus_client.start_http_server(metrics_port, registry=operator.drift_metrics.registry)
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("kopf.objects").setLevel(logging.INFO)
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=standalone,
            namespaces=list(namespaces),
            clusterwide=not namespaces,
            liveness_endpoint=liveness_endpoint,
        )
    )
