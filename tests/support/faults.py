"""Helpers of the fault tests (tests/cluster/test_fault_*.py): the objects they create, the end state they
compare, and the peering CRDs kopf needs. Everything reads the real apiserver; nothing is mocked."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from tests.support.kube import Kube, wait_until

GROUP, VERSION = "mlops.dev", "v1alpha1"
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlops-operator"
PEERING_NAME = "mlops-operator"


def trainingjob(name: str, duration: str = "2s", nodes: int = 2) -> dict[str, Any]:
    """A small multi-node TrainingJob: its children are one Job and one headless Service."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "iris"},
            "dataset": {"uri": "https://data.example/iris.csv", "target": "species"},
            "trainer": {"builtin": {"task": "classification", "epochs": 1}},
            "resources": {"cpu": "100m", "memory": "128Mi", "nodes": nodes},
            "podMetadata": {"annotations": {"fake.mlops.dev/duration": duration}},
        },
    }


def modeldeployment(name: str, model: str, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": model, "alias": "champion"},
        "replicas": {"min": replicas, "max": replicas},
        "resources": {"cpu": "100m", "memory": "128Mi"},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def create(kube: Kube, namespace: str, manifest: dict[str, Any]) -> None:
    plural = manifest["kind"].lower() + "s"
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, manifest)


def items(kube: Kube, namespace: str, plural: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = kube.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural
    )["items"]
    return result


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def register_model(tracking_uri: str, versions: int = 2, prefix: str = "fault-model") -> str:
    """A registered model with ``versions`` placeholder versions and alias champion -> 1."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name = f"{prefix}-{secrets.token_hex(3)}"
    client.create_registered_model(name)
    for index in range(versions):
        client.create_model_version(name, source=f"s3://placeholder-bucket/{name}/{index + 1}")
    client.set_registered_model_alias(name, "champion", "1")
    return name


# --------------------------------------------------------------------------------------- end state


def owned_children(kube: Kube, namespace: str) -> Counter[tuple[str, str, str]]:
    """(owner kind, owner name, child kind) -> count, over a namespace's Jobs/Services/Deployments/HPAs."""
    counts: Counter[tuple[str, str, str]] = Counter()
    listings: list[tuple[str, Iterable[Any]]] = [
        ("Job", kube.batch.list_namespaced_job(namespace).items),
        ("Service", kube.core.list_namespaced_service(namespace).items),
        ("Deployment", kube.apps.list_namespaced_deployment(namespace).items),
    ]
    hpas = json.loads(kube.kubectl("get", "hpa", "-n", namespace, "-o", "json").stdout)["items"]
    for kind, objects in listings:
        for obj in objects:
            for ref in obj.metadata.owner_references or ():
                if ref.controller:
                    counts[(ref.kind, ref.name, kind)] += 1
    for hpa in hpas:
        for ref in hpa["metadata"].get("ownerReferences") or ():
            if ref.get("controller"):
                counts[(ref["kind"], ref["name"], "HorizontalPodAutoscaler")] += 1
    return counts


def trainingjob_summary(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    return {
        "phase": status.get("phase"),
        "observedGeneration": status.get("observedGeneration"),
        "conditions": sorted(
            (c["type"], c["status"], c["reason"])
            for c in status.get("conditions") or ()
            if c["type"] != "SpecApplied"
        ),
        "started": bool(status.get("startTime")),
        "completed": bool(status.get("completionTime")),
        "podsSucceeded": (status.get("pods") or {}).get("succeeded"),
    }


def modeldeployment_summary(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    rollout = status.get("rollout") or {}
    return {
        "resolvedVersion": status.get("resolvedVersion"),
        "readyReplicas": status.get("readyReplicas"),
        "conditions": sorted((c["type"], c["status"], c["reason"]) for c in status.get("conditions") or ()),
        "revisions": [(r["revision"], r["version"], r["reason"]) for r in rollout.get("history") or ()],
    }


def end_state(kube: Kube, namespace: str) -> dict[str, Any]:
    """What a namespace converged to, free of names' randomness, uids and times: comparable across runs."""
    return {
        "trainingjobs": {
            o["metadata"]["name"]: trainingjob_summary(o) for o in items(kube, namespace, "trainingjobs")
        },
        "modeldeployments": {
            o["metadata"]["name"]: modeldeployment_summary(o)
            for o in items(kube, namespace, "modeldeployments")
        },
        "children": sorted(owned_children(kube, namespace).items()),
    }


def succeeded(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") == "Succeeded"


def md_ready(obj: dict[str, Any], version: int) -> bool:
    status = obj.get("status") or {}
    return (
        condition(obj, "Ready").get("status") == "True"
        and status.get("resolvedVersion") == version
        and condition(obj, "Progressing").get("reason") == "RolloutComplete"
    )


def wait_converged(
    kube: Kube,
    namespace: str,
    trainingjobs: int,
    modeldeployments: int = 0,
    version: int = 1,
    timeout: float = 180,
    detail: Any = None,
) -> dict[str, Any]:
    """Every TrainingJob Succeeded and every ModelDeployment Ready on ``version``; returns the end state."""

    def done() -> bool:
        tjs = items(kube, namespace, "trainingjobs")
        mds = items(kube, namespace, "modeldeployments")
        return (
            len(tjs) == trainingjobs
            and all(succeeded(o) for o in tjs)
            and len(mds) == modeldeployments
            and all(md_ready(o, version) for o in mds)
        )

    def explain() -> str:
        tjs = Counter((o.get("status") or {}).get("phase") for o in items(kube, namespace, "trainingjobs"))
        mds = {
            o["metadata"]["name"]: modeldeployment_summary(o)
            for o in items(kube, namespace, "modeldeployments")
        }
        extra = detail() if callable(detail) else ""
        return f"convergence in {namespace}: trainingjob phases {dict(tjs)}, modeldeployments {mds}\n{extra}"

    wait_until(done, timeout=timeout, interval=1, message=explain)
    return end_state(kube, namespace)


def assert_no_duplicate_children(
    kube: Kube, namespace: str, tj_names: Iterable[str], md_names: Iterable[str]
) -> None:
    """Exactly one Job + one Service per TrainingJob; one Deployment, one HPA, two Services per
    ModelDeployment (the stable one and the primary's); nothing else owned."""
    counts = owned_children(kube, namespace)
    expected: Counter[tuple[str, str, str]] = Counter()
    for name in tj_names:
        expected[("TrainingJob", name, "Job")] = 1
        expected[("TrainingJob", name, "Service")] = 1
    for name in md_names:
        expected[("ModelDeployment", name, "Deployment")] = 1
        expected[("ModelDeployment", name, "Service")] = 2
    actual = {key: value for key, value in counts.items() if key[2] != "HorizontalPodAutoscaler"}
    assert actual == dict(expected), f"children differ: {sorted(set(actual.items()) ^ set(expected.items()))}"
    jobs = [j.metadata.name for j in kube.batch.list_namespaced_job(namespace).items]
    assert sorted(jobs) == sorted(tj_names), "a Job without a TrainingJob (or a duplicate) exists"


# ----------------------------------------------------------------------------------------- peering


def ensure_peering_crds(kube: Kube, helm: str) -> None:
    """kopf's peering CRDs as the chart ships them (rendered with replicas=2), created if missing."""
    rendered = subprocess.run(
        [
            helm,
            "template",
            "peering",
            str(CHART),
            "--set",
            "replicas=2",
            "--show-only",
            "templates/peering.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for doc in rendered.split("\n---"):
        if "kind: CustomResourceDefinition" not in doc:
            continue
        result = kube.kubectl("create", "-f", "-", input_text=doc, check=False)
        assert result.returncode == 0 or "AlreadyExists" in result.stderr, result.stderr
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/kopfpeerings.kopf.dev")


def create_peering_object(kube: Kube, namespace: str) -> None:
    """The namespaced KopfPeering the replicas meet in (the chart creates it as a post-install hook)."""
    body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING_NAME}}
    kube.custom.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", body)


def peers(kube: Kube, namespace: str) -> dict[str, Any]:
    try:
        obj = kube.custom.get_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", PEERING_NAME
        )
    except ApiException:
        return {}
    return dict(obj.get("status") or {})
