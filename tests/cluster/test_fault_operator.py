"""Fault tests of the operator process and what it depends on, against the real control plane: the operator
SIGKILLed during a burst of creates, two peered replicas and a failover, a serving pod killed mid-rollout,
MLflow down for a while. Each asserts the end state: everything converged, no duplicate children, no status
lost. See docs/reliability.md.

Tests that kill an operator run their own in an ``isolated-`` namespace (the session operator ignores it).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlflow_server import MlflowServer
from tests.support import faults
from tests.support.fault_proxy import FaultProxy
from tests.support.kube import Kube, wait_until
from tests.support.operator import OperatorProcess


def _no_traceback(operator: OperatorProcess) -> None:
    log = operator.log_text()
    index = log.find("Traceback")
    assert index < 0, log[max(0, index - 2000) : index + 3000]


# ------------------------------------------------------------------------------ SIGKILL during a burst


@pytest.mark.timeout(300)
def test_operator_sigkilled_twice_during_a_burst_of_creates_converges_without_duplicates(
    kube: Kube, isolated_namespace: str, cluster: Any, mlflow_server: str, tmp_path: Path
) -> None:
    namespace = isolated_namespace
    model = faults.register_model(mlflow_server)
    env = {"MLOPS_MLFLOW_TRACKING_URI": mlflow_server}
    operator = OperatorProcess(cluster, [namespace], tmp_path / "operator.log", env).start()
    tj_names = [f"burst-{i:02d}" for i in range(30)]
    md_names = [f"serve-{i}" for i in range(3)]
    try:
        # early TrainingJobs get to finish before the first kill: their status must survive it untouched
        for name in tj_names[:5]:
            faults.create(kube, namespace, faults.trainingjob(name, duration="1s"))
        wait_until(
            lambda: all(faults.succeeded(o) for o in faults.items(kube, namespace, "trainingjobs")),
            timeout=90,
            message="the first five TrainingJobs to succeed",
        )
        before = {o["metadata"]["name"]: o["status"] for o in faults.items(kube, namespace, "trainingjobs")}

        for index, name in enumerate(tj_names[5:], start=5):
            faults.create(kube, namespace, faults.trainingjob(name, duration="3s"))
            if index in (12, 22):
                operator.kill()  # SIGKILL mid-burst: reconciles in flight are cut short
            if index in (17, 27):
                operator.start()
            if index == 20:
                for md in md_names:
                    faults.create(kube, namespace, faults.modeldeployment(md, model, replicas=2))
        state = faults.wait_converged(kube, namespace, len(tj_names), len(md_names), detail=operator.tail)
    finally:
        operator.stop()

    faults.assert_no_duplicate_children(kube, namespace, tj_names, md_names)
    after = {o["metadata"]["name"]: o["status"] for o in faults.items(kube, namespace, "trainingjobs")}
    for name, status in before.items():  # finished before the kills: not one field rewritten
        assert after[name] == status, name
    for name in tj_names:
        summary = state["trainingjobs"][name]
        assert summary["started"] and summary["completed"] and summary["podsSucceeded"] == 2, (name, summary)
        assert summary["observedGeneration"] == 1
    for md in md_names:  # exactly one rollout recorded: a restart re-adopts, it does not roll out again
        assert state["modeldeployments"][md]["revisions"] == [(1, 1, "Initial")], state["modeldeployments"][
            md
        ]
    _no_traceback(operator)


# ----------------------------------------------------------------------------------------- peering


@pytest.mark.timeout(300)
def test_two_peered_replicas_only_one_acts_and_the_standby_takes_over_after_sigkill(
    kube: Kube, isolated_namespace: str, cluster: Any, tmp_path: Path
) -> None:
    namespace = isolated_namespace
    faults.ensure_peering_crds(kube, str(Path(cluster.state_dir) / "bin" / "helm"))
    faults.create_peering_object(kube, namespace)
    env = {"MLOPS_PEERING_LIFETIME": "15"}
    # The standby talks to the apiserver through a (fault-free) proxy that records every request it makes.
    with FaultProxy(cluster) as recorder:
        standby_cluster = dataclasses.replace(
            cluster, kubeconfig=str(recorder.write_kubeconfig(tmp_path / "standby.kubeconfig"))
        )
        active = OperatorProcess(
            cluster,
            [namespace],
            tmp_path / "active.log",
            {**env, "MLOPS_PEERING_PRIORITY": "200"},
            ["--peering"],
        ).start()
        standby = OperatorProcess(
            standby_cluster,
            [namespace],
            tmp_path / "standby.log",
            {**env, "MLOPS_PEERING_PRIORITY": "100"},
            ["--peering"],
        )
        try:
            wait_until(lambda: len(faults.peers(kube, namespace)) == 1, timeout=30, message="the active peer")
            standby.start()
            wait_until(
                lambda: "Pausing operations in favour of" in standby.log_text(),
                timeout=60,
                message=lambda: f"the standby to pause; its log:\n{standby.tail()}",
            )
            paused_at = time.monotonic()
            # while both run: the active one does all the work, the standby writes nothing at all
            names = [f"peer-{i}" for i in range(6)]
            for name in names:
                faults.create(kube, namespace, faults.trainingjob(name, duration="6s"))
            faults.wait_converged(kube, namespace, len(names), detail=standby.tail)
            written = recorder.writes(since=paused_at)
            assert written == [], f"the standby wrote while paused: {written[:5]}"

            # SIGKILL the active replica: no goodbye in the peering object; the standby waits out its
            # lifetime, resumes and handles what is created after the kill
            active.kill()
            later = [f"after-kill-{i}" for i in range(4)]
            for name in later:
                faults.create(kube, namespace, faults.trainingjob(name, duration="1s"))
            faults.wait_converged(kube, namespace, len(names) + len(later), timeout=120, detail=standby.tail)
            assert "Resuming operations after the pause" in standby.log_text()
            assert recorder.writes(since=paused_at), "the standby took over without writing anything?"
        finally:
            active.stop()
            standby.stop()
    faults.assert_no_duplicate_children(kube, namespace, names + later, [])
    _no_traceback(active)
    _no_traceback(standby)


# ----------------------------------------------------------------------- serving pod killed mid-rollout


@pytest.mark.usefixtures("operator")
@pytest.mark.timeout(180)
def test_serving_pods_killed_during_a_rollout_the_rollout_completes_and_stays_available(
    kube: Kube, namespace: str, mlflow_server: str
) -> None:
    from mlflow import MlflowClient

    model = faults.register_model(mlflow_server)
    faults.create(kube, namespace, faults.modeldeployment("rolling", model, replicas=4))
    wait_until(
        lambda: faults.md_ready(_md(kube, namespace, "rolling"), 1),
        timeout=60,
        message=lambda: f"v1 Ready: {_md(kube, namespace, 'rolling').get('status')}",
    )
    available_since = faults.condition(_md(kube, namespace, "rolling"), "Available")["lastTransitionTime"]
    events_before = {e.metadata.name for e in kube.events_for(namespace, "rolling")}

    killed: list[tuple[str, str]] = []
    stop = threading.Event()

    def killer() -> None:
        """Delete pods of the Deployment mid-rollout: as soon as the first pod of the new version exists,
        one pod of the old version, then the first three pods of the new version as they appear (kwok makes
        them Ready at once: killing them holds the rollout back)."""
        while not stop.is_set() and len(killed) < 4:
            pods = kube.core.list_namespaced_pod(
                namespace, label_selector="mlops.dev/modeldeployment=rolling"
            )
            live = [p for p in pods.items if p.metadata.deletion_timestamp is None]
            new = [p for p in live if p.metadata.annotations.get("mlops.dev/model-uri", "").endswith("/2")]
            old = [p for p in live if p not in new and p.status.phase == "Running"]
            victim, which = None, ""
            if new and not killed and old:
                victim, which = old[0], "old"
            elif new and killed:
                victim, which = new[0], "new"
            if victim is not None:
                kube.core.delete_namespaced_pod(victim.metadata.name, namespace, grace_period_seconds=0)
                killed.append((which, victim.metadata.name))
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    client.set_registered_model_alias(model, "champion", "2")
    try:
        wait_until(
            lambda: faults.md_ready(_md(kube, namespace, "rolling"), 2) and not thread.is_alive(),
            timeout=90,
            message=lambda: (
                f"v2 rolled out (killed {killed}): {_md(kube, namespace, 'rolling').get('status')}"
            ),
        )
    finally:
        stop.set()
        thread.join(5)
    assert [which for which, _ in killed] == ["old", "new", "new", "new"], killed
    md = _md(kube, namespace, "rolling")
    state = faults.modeldeployment_summary(md)
    assert state["revisions"] == [(2, 2, "AliasMoved"), (1, 1, "Initial")]
    assert faults.condition(md, "Available")["status"] == "True"
    # stayed Available: the condition never transitioned during the rollout, and no Warning was posted
    warnings = [
        (e.reason, e.message)
        for e in kube.events_for(namespace, "rolling")
        if e.type == "Warning" and e.metadata.name not in events_before
    ]
    assert warnings == [], (warnings, killed)
    assert faults.condition(md, "Available")["lastTransitionTime"] == available_since
    deployment = kube.apps.read_namespaced_deployment("rolling", namespace)
    assert deployment.status.updated_replicas == deployment.status.available_replicas == 4
    pods = kube.core.list_namespaced_pod(namespace, label_selector="mlops.dev/modeldeployment=rolling").items
    uris = {
        p.metadata.annotations["mlops.dev/model-uri"] for p in pods if p.metadata.deletion_timestamp is None
    }
    assert uris == {f"models:/{model}/2"}


def _md(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        faults.GROUP, faults.VERSION, namespace, "modeldeployments", name
    )
    return result


# --------------------------------------------------------------------------------------- MLflow down


@pytest.mark.timeout(300)
def test_mlflow_down_for_a_while_is_reported_retried_and_everything_completes_when_it_returns(
    kube: Kube, isolated_namespace: str, cluster: Any, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    namespace = isolated_namespace
    server = MlflowServer(tmp_path / "mlflow").start()
    operator = OperatorProcess(
        cluster, [namespace], tmp_path / "operator.log", {"MLOPS_MLFLOW_TRACKING_URI": server.tracking_uri}
    )
    try:
        model = faults.register_model(server.tracking_uri, versions=2)
        client = MlflowClient(tracking_uri=server.tracking_uri, registry_uri=server.tracking_uri)
        operator.start()
        faults.create(kube, namespace, faults.modeldeployment("steady", model))
        faults.create(kube, namespace, faults.trainingjob("training", duration="600s"))
        wait_until(
            lambda: faults.md_ready(_md(kube, namespace, "steady"), 1), timeout=60, message="steady Ready"
        )
        wait_until(
            lambda: _tj(kube, namespace, "training").get("status", {}).get("phase") == "Running",
            timeout=60,
            message="training Running",
        )
        versions_before = len(client.search_model_versions(f"name='{model}'"))
        tj_before = _tj(kube, namespace, "training")["status"]

        server.stop()  # --- MLflow is down ------------------------------------------------------------
        down_at, log_offset = time.monotonic(), len(operator.log_text())
        faults.create(kube, namespace, faults.modeldeployment("newcomer", model))
        steady = wait_until(
            lambda: (
                (md := _md(kube, namespace, "steady"))
                and faults.condition(md, "ModelResolved").get("reason") == "RegistryUnavailable"
                and md
            ),
            timeout=60,
            message=lambda: f"steady to report the outage: {_md(kube, namespace, 'steady').get('status')}",
        )
        newcomer = wait_until(
            lambda: (
                (md := _md(kube, namespace, "newcomer"))
                and faults.condition(md, "ModelResolved").get("reason") == "RegistryUnavailable"
                and md
            ),
            timeout=60,
            message=lambda: (
                f"newcomer to report the outage: {_md(kube, namespace, 'newcomer').get('status')}"
            ),
        )
        # what serves keeps serving the last version it resolved, and says so
        assert faults.condition(steady, "ModelResolved")["status"] == "False"
        assert faults.condition(steady, "Ready")["status"] == "True"
        assert faults.condition(steady, "Ready")["reason"] == "ServingLastKnownVersion"
        assert steady["status"]["resolvedVersion"] == 1
        assert kube.apps.read_namespaced_deployment("steady", namespace).status.ready_replicas == 1
        # what never resolved is not deployed, and says why
        assert faults.condition(newcomer, "Ready")["status"] == "False"
        assert faults.condition(newcomer, "Ready")["reason"] == "RegistryUnavailable"
        assert (
            kube.apps.list_namespaced_deployment(namespace, field_selector="metadata.name=newcomer").items
            == []
        )
        # the operator keeps retrying (a few resolutions, not a hot loop) and the TrainingJob's status
        # keeps what it knew (phase, conditions): MLflow being down loses nothing
        wait_until(
            lambda: operator.log_text().count("reading MLflow run of") >= 3,
            timeout=60,
            message=lambda: f"the operator to retry reading MLflow:\n{operator.tail()}",
        )
        assert _tj(kube, namespace, "training")["status"]["phase"] == tj_before["phase"]

        server.start()  # --- MLflow is back, same port and backend --------------------------------------
        outage = time.monotonic() - down_at
        # retried on the resync interval (2 s here), each attempt waiting out the MLflow client's own retries:
        # a handful per outage, not a hot loop
        attempts = operator.log_text()[log_offset:].count("reading MLflow run of")
        assert 3 <= attempts <= outage + 5, (attempts, outage)
        client.set_registered_model_alias(model, "champion", "2")
        wait_until(
            lambda: (
                faults.md_ready(_md(kube, namespace, "steady"), 2)
                and faults.md_ready(_md(kube, namespace, "newcomer"), 2)
            ),
            timeout=90,
            message=lambda: (
                f"both on v2: {faults.modeldeployment_summary(_md(kube, namespace, 'steady'))} "
                f"{faults.modeldeployment_summary(_md(kube, namespace, 'newcomer'))}"
            ),
        )
        # nothing registered or rolled out twice: the operator never writes to the registry, and the outage
        # left no rollout entry of its own
        assert len(client.search_model_versions(f"name='{model}'")) == versions_before
        assert faults.modeldeployment_summary(_md(kube, namespace, "steady"))["revisions"] == [
            (2, 2, "AliasMoved"),
            (1, 1, "Initial"),
        ]
        # the newcomer resolves v1 or v2 first (a race with the alias move): each version rolled out once
        newcomer_revisions = faults.modeldeployment_summary(_md(kube, namespace, "newcomer"))["revisions"]
        assert newcomer_revisions in ([(1, 2, "Initial")], [(2, 2, "AliasMoved"), (1, 1, "Initial")])
        assert faults.condition(_md(kube, namespace, "steady"), "ModelResolved")["reason"] == "Resolved"
    finally:
        operator.stop()
        server.stop()
    faults.assert_no_duplicate_children(kube, namespace, ["training"], ["steady", "newcomer"])
    kube.batch.read_namespaced_job("training", namespace)


def _tj(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        faults.GROUP, faults.VERSION, namespace, "trainingjobs", name
    )
    return result
