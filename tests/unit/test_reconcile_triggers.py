"""When parents are reconciled and when children are (re)applied: the rules that keep the operator at zero
writes for objects that did not change."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from mlops_operator.config import OperatorConfig
from mlops_operator.controllers.modeldeployment.controller import ROLLBACK_ANNOTATION
from mlops_operator.controllers.trainingjob.controller import TrainingJobController
from mlops_operator.kube import client as kube
from mlops_operator.kube.client import KubeClient
from mlops_operator.kube.connection import ApiError, ApiServer
from mlops_operator.machinery import triggers
from mlops_operator.machinery.publishing import StatusPublisher
from mlops_operator.machinery.versions import KnownVersions


def body(
    uid: str = "u1", generation: int = 1, observed: int | None = None, **annotations: str
) -> dict[str, Any]:
    status = {"observedGeneration": observed} if observed is not None else {}
    return {
        "metadata": {
            "uid": uid,
            "name": "x",
            "namespace": "ns",
            "generation": generation,
            "annotations": annotations,
        },
        "status": status,
    }


# ------------------------------------------------------------------------------------------ parent triggers


def test_a_new_object_is_due_until_handled_then_only_spec_changes_are() -> None:
    t = triggers.ParentTriggers()
    assert t.due(body(), "ADDED")
    t.handled(body())
    assert not t.due(body(observed=1), "MODIFIED")  # our own status patch
    assert t.due(body(generation=2, observed=1), "MODIFIED")  # a spec edit


def test_on_start_objects_whose_status_records_the_generation_are_not_reconciled_again() -> None:
    t = triggers.ParentTriggers()
    assert not t.due(body(generation=3, observed=3), None)
    assert t.due(body(uid="u2", generation=4, observed=3), None)  # edited while the operator was down
    assert not t.due(body(generation=3, observed=3), "MODIFIED")  # remembered


def test_deleted_objects_are_forgotten() -> None:
    t = triggers.ParentTriggers()
    t.handled(body())
    assert len(t) == 1
    assert not t.due(body(), "DELETED")
    assert len(t) == 0
    deleting = body()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not t.due(deleting, "MODIFIED")


def test_a_rollback_annotation_or_a_nudge_triggers_a_modeldeployment_reconcile() -> None:
    t = triggers.ParentTriggers(triggers.generation_and_annotations_key)
    t.handled(body(observed=1))
    assert not t.due(body(observed=1), "MODIFIED")  # our status patch
    assert t.due(body(observed=1, **{ROLLBACK_ANNOTATION: "2"}), "MODIFIED")
    assert t.due(body(observed=1, nudge="now"), "MODIFIED")  # docs/user-guide.md: an annotation is a nudge


def test_a_failed_reconcile_is_not_remembered_and_is_retried() -> None:
    calls: list[str] = []
    done = threading.Event()

    def reconcile(obj: Any) -> None:
        calls.append(obj["metadata"]["name"])
        if len(calls) == 1:
            raise RuntimeError("apiserver hiccup")
        done.set()

    rails = triggers.Rails(
        "mlops.dev/v1alpha1",
        "X",
        reconcile,
        lambda ns, name: body(),
        triggers.Scheduler(),
        retry_seconds=0.05,
    )
    t = rails.triggers
    asyncio.run(rails.on_parent_event(body(), "ADDED"))
    assert t.due(body(), "MODIFIED")  # not handled yet
    assert done.wait(5)
    deadline = time.monotonic() + 2
    while t.due(body(), "MODIFIED") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not t.due(body(), "MODIFIED")
    assert calls == ["x", "x"]


def test_child_event_bursts_are_coalesced_into_one_reconcile() -> None:
    runs: list[Any] = []
    ran = threading.Event()
    coalescer = triggers.Coalescer(lambda key: (runs.append(key), ran.set()), triggers.Scheduler(), delay=0.1)
    for _ in range(20):
        coalescer.schedule(("ns", "a"))
    coalescer.schedule(("ns", "b"))
    assert ran.wait(5)
    time.sleep(0.3)
    assert sorted(runs) == [("ns", "a"), ("ns", "b")]
    coalescer.schedule(("ns", "a"))  # a later event runs it again
    time.sleep(0.4)
    assert runs.count(("ns", "a")) == 2


async def test_only_due_events_take_a_handler_thread() -> None:
    """Echoes of our own status patches are decided on the event loop; a due event reconciles in the pool,
    with a plain copy of the body."""
    from concurrent.futures import ThreadPoolExecutor

    threads: list[str] = []
    reconciled: list[dict[str, Any]] = []

    def reconcile(obj: Any) -> None:
        threads.append(threading.current_thread().name)
        reconciled.append(obj)

    with ThreadPoolExecutor(1, thread_name_prefix="handlers") as pool:
        rails = triggers.Rails(
            "mlops.dev/v1alpha1",
            "X",
            reconcile,
            lambda _n, _m: None,
            triggers.Scheduler(),
            executor=lambda: pool,
        )
        created = body()
        await rails.on_parent_event(created, "ADDED")
        echo = body(observed=1)  # our status patch came back: same generation
        await rails.on_parent_event(echo, "MODIFIED")
        edited = body(generation=2, observed=1)
        await rails.on_parent_event(edited, "MODIFIED")
    assert [obj["metadata"]["generation"] for obj in reconciled] == [1, 2]
    assert threads == ["handlers_0", "handlers_0"]
    assert reconciled[0] == created and reconciled[0] is not created


def test_an_object_reconciled_within_the_interval_is_left_to_the_next_resync_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(triggers.time, "monotonic", lambda: clock[0])
    rails = triggers.Rails(
        "mlops.dev/v1alpha1", "X", lambda _body: "done", lambda _ns, _name: None, triggers.Scheduler()
    )
    serialized = rails.serialized
    obj = body()
    assert not serialized.reconciled_within(obj, 10)
    assert serialized(obj) == "done"
    clock[0] += 9.5
    assert serialized.reconciled_within(obj, 10)
    clock[0] += 1
    assert not serialized.reconciled_within(obj, 10)
    serialized(obj)
    asyncio.run(rails.on_parent_event(obj, "DELETED"))
    assert not serialized.reconciled_within(obj, 10)  # deleted: forgotten


def test_a_failed_reconcile_does_not_count_as_a_look() -> None:
    def fail(_body: Any) -> None:
        raise RuntimeError("apiserver down")

    serialized = triggers.Serialized(fail, lambda _ns, _name: None)
    with pytest.raises(RuntimeError):
        serialized(body())
    assert not serialized.reconciled_within(body(), 10)


def test_the_resync_listing_is_paged_and_an_expired_token_starts_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[tuple[str, str]]] = []
    pages = {None: (["a", "b"], "t1"), "t1": (["c"], "t2"), "t2": (["d"], None)}

    def fake_call(method: str, path: str, body: Any = None, query: Any = None, **_: Any) -> Any:
        calls.append(query)
        token = dict(query).get("continue")
        if token == "t2" and sum(1 for q in calls if dict(q).get("continue") == "t2") == 1:
            raise ApiError(410, "Gone", '{"message": "continue token expired"}')
        names, following = pages[token]
        items = [{"metadata": {"name": n, "namespace": "ns"}} for n in names]
        return {"items": items, "metadata": {"continue": following} if following else {}}

    api = ApiServer()
    monkeypatch.setattr(api, "request", fake_call)
    client = KubeClient(api, field_manager="test", annotation_prefix="test/")
    items, token = client.list_page("batch/v1", "Job", 2)
    assert ([i["metadata"]["name"] for i in items], token) == (["a", "b"], "t1")
    assert items[0]["kind"] == "Job" and items[0]["apiVersion"] == "batch/v1"
    items, token = client.list_page("batch/v1", "Job", 2, "t1")
    assert ([i["metadata"]["name"] for i in items], token) == (["c"], "t2")
    items, token = client.list_page("batch/v1", "Job", 2, "t2")  # expired: the first page again
    assert ([i["metadata"]["name"] for i in items], token) == (["a", "b"], "t1")
    assert calls[0] == [("limit", "2")]
    assert calls[-1] == [("limit", "2")]


def test_running_single_pod_jobs_without_mlflow_are_left_to_job_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = KubeClient(ApiServer(), field_manager="test", annotation_prefix="test/")
    config = OperatorConfig.from_env({})
    needs_resync = TrainingJobController(
        client, StatusPublisher(client, KnownVersions()), config
    ).needs_resync

    def tj(phase: str | None, **spec: Any) -> dict[str, Any]:
        return {"spec": spec, "status": {"phase": phase} if phase else {}}

    assert needs_resync(tj(None))
    assert needs_resync(tj("Pending"))  # may be unschedulable: the scheduler's message comes by resync
    assert not needs_resync(tj("Running"))
    assert needs_resync(tj("Running", resources={"nodes": 2}))
    assert needs_resync(tj("Running", mlflow={"trackingUri": "http://mlflow:5000"}))  # progress
    assert not needs_resync(tj("Succeeded", mlflow={"trackingUri": "http://mlflow:5000"}))


# --------------------------------------------------------------------------------------- apply if changed


def service(port: int = 80, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "ns", "labels": {"a": "1", **labels}},
        "spec": {
            "selector": {"app": "s"},
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
            "type": None,
        },
    }


def live_from(applied: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver would return: our fields plus defaults and fields of other managers."""
    live = {
        **applied,
        "metadata": {**applied["metadata"], "uid": "x", "labels": {**applied["metadata"]["labels"]}},
    }
    live["metadata"]["labels"]["other-manager"] = "yes"
    live["spec"] = {
        **{k: v for k, v in applied["spec"].items() if v is not None},
        "clusterIP": "10.96.0.7",
        "type": "ClusterIP",
        "ports": [{**applied["spec"]["ports"][0], "protocol": "TCP"}],
    }
    return live


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_apply(manifest: dict[str, Any]) -> dict[str, Any]:
        calls.append(manifest)
        return live_from(manifest)

    monkeypatch.setattr(CLIENT, "apply", fake_apply)
    return calls


CLIENT = KubeClient(ApiServer(), field_manager="test", annotation_prefix="mlops.dev/")


def test_an_unchanged_child_is_not_applied_again(applied: list[dict[str, Any]]) -> None:
    live, wrote = CLIENT.apply_if_changed(service(), None)
    assert wrote and len(applied) == 1
    assert live["metadata"]["annotations"][CLIENT.applied_hash_annotation] == kube.desired_hash(service())
    again, wrote = CLIENT.apply_if_changed(service(), live)
    assert not wrote and len(applied) == 1
    assert again == live


def test_a_changed_desired_manifest_is_applied(applied: list[dict[str, Any]]) -> None:
    live, _ = CLIENT.apply_if_changed(service(), None)
    _, wrote = CLIENT.apply_if_changed(service(port=81), live)
    assert wrote and applied[-1]["spec"]["ports"][0]["port"] == 81


def test_a_removed_field_is_applied_although_the_live_object_still_has_it(
    applied: list[dict[str, Any]],
) -> None:
    live, _ = CLIENT.apply_if_changed(service(extra="1"), None)
    _, wrote = CLIENT.apply_if_changed(service(), live)  # "extra" is now unwanted: apply drops our ownership
    assert wrote


def test_a_child_edited_by_someone_else_is_applied_again(applied: list[dict[str, Any]]) -> None:
    live, _ = CLIENT.apply_if_changed(service(), None)
    edited = {**live, "spec": {**live["spec"], "selector": {"app": "hijacked"}}}
    _, wrote = CLIENT.apply_if_changed(service(), edited)
    assert wrote
    unlabelled = {**live, "metadata": {**live["metadata"], "labels": {"other-manager": "yes"}}}
    _, wrote = CLIENT.apply_if_changed(service(), unlabelled)
    assert wrote


def test_contains_matches_named_lists_by_name_and_other_lists_item_by_item() -> None:
    desired = {"containers": [{"name": "a", "image": "i"}], "args": ["x", "y"]}
    live = {"containers": [{"name": "sidecar"}, {"name": "a", "image": "i", "imagePullPolicy": "Always"}]}
    assert kube.contains({**live, "args": ["x", "y"]}, desired)
    assert not kube.contains({**live, "args": ["x"]}, desired)
    assert not kube.contains({**live, "args": ["y", "x"]}, desired)
    assert not kube.contains({"containers": [{"name": "a", "image": "j"}], "args": ["x", "y"]}, desired)
