"""The Helm chart (charts/mlops-operator) against the real control plane: lint, render, schema, install,
upgrade, uninstall, and -- the point of least-privilege RBAC -- the real operator running with nothing but
the chart ServiceAccount's token reconciles all three kinds, while that token can do nothing else.

kwok runs no containers, so the chart's own Deployment never runs the operator image; the test runs the
operator (``mlops-operator run``) as a subprocess authenticated as the chart's ServiceAccount instead.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from local_cluster import ClusterInfo
from tests.conftest import ISOLATED_PREFIX, REPO
from tests.support.kube import Kube, create_namespace, delete_namespace, wait_until
from tests.support.operator import OperatorProcess

CHART = REPO / "charts" / "mlops-operator"
GROUP, VERSION = "mlops.dev", "v1alpha1"

#: Values sets rendered by lint/template/dry-run (the ServiceMonitor needs the Prometheus Operator CRDs,
#: absent here, so it is rendered but not dry-run).
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "ha": ["--set", "replicas=2", "--set", "podDisruptionBudget.enabled=true"],
    "mlflow": ["--set", "mlflow.server.enabled=true", "--set", "logLevel=debug"],
    "everything": [
        "--set", "replicas=3",
        "--set", "watchNamespaces={team-a}",
        "--set", "mlflow.server.enabled=true",
        "--set", "mlflow.server.persistence.enabled=false",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "podDisruptionBudget.enabled=true",
        "--set", "image.digest=sha256:" + "a" * 64,
    ],
}  # fmt: skip

BAD_VALUES: dict[str, list[str]] = {
    "negative replicas": ["--set", "replicas=-1"],
    "replicas not a number": ["--set", "replicas=two"],
    "unknown log level": ["--set", "logLevel=trace"],
    "invalid namespace name": ["--set", "watchNamespaces={Team_A}"],
    "privilege escalation": ["--set", "securityContext.allowPrivilegeEscalation=true"],
    "root pod": ["--set", "podSecurityContext.runAsNonRoot=false"],
    "unknown key": ["--set", "replicaCount=2"],
    "bad tracking uri": ["--set", "mlflow.trackingUri=ftp://mlflow"],
    "bad pull policy": ["--set", "image.pullPolicy=Sometimes"],
    "privileged metrics port": ["--set", "metrics.port=80"],
    "same health and metrics port": ["--set", "metrics.port=8080"],
}


# ------------------------------------------------------------------------------------------------ helpers


def helm(cluster: ClusterInfo, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [cluster.binaries["helm"], f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def render(cluster: ClusterInfo, namespace: str, *values: str, hooks: bool = True) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", namespace, *values]
    if not hooks:
        args.append("--no-hooks")
    text = helm(cluster, *args).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def status_of(kube: Kube, namespace: str, plural: str, name: str) -> dict[str, Any]:
    obj = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    return dict(obj.get("status") or {})


def create(kube: Kube, namespace: str, plural: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def service_account_kubeconfig(kube: Kube, cluster: ClusterInfo, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ``namespace/sa`` with a short-lived token (TokenRequest API)."""
    token = kube.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    cluster_entry = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster_entry}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "local", "user": sa, "namespace": namespace}}],
        "current-context": sa,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def can_i(kube: Kube, subject: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    """A SubjectAccessReview for ``resource`` written as ``plural.group/subresource``. Unlike ``kubectl auth
    can-i`` it needs no API discovery: it answers for kinds whose CRDs are not installed (HTTPRoute, KEDA)."""
    from kubernetes import client

    groups = ["system:authenticated"]
    if subject.startswith("system:serviceaccount:"):
        groups += ["system:serviceaccounts", "system:serviceaccounts:" + subject.split(":")[2]]

    base, _, subresource = resource.partition("/")
    plural, _, group = base.partition(".")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=subject,
            groups=groups,
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=plural,
                subresource=subresource or None,
                namespace=namespace or "",
            ),
        )
    )
    answer = client.AuthorizationV1Api(kube.api_client).create_subject_access_review(review)
    return bool(answer.status.allowed)


def granted_rules(kube: Kube, subject: str, namespace: str) -> list[tuple[str, str]]:
    """(resource, verbs) rows of ``kubectl auth can-i --list`` (namespace-scoped view), minus the rows every
    authenticated user gets (self-reviews, discovery and other non-resource URLs)."""
    out = kube.kubectl("auth", "can-i", "--list", f"--as={subject}", "-n", namespace).stdout
    rows = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if not parts or parts[0].startswith("selfsubject") or parts[0].startswith("["):
            continue
        resource = parts[0]
        verbs = line[line.rindex("[") :]
        rows.append((resource, verbs))
    return rows


@pytest.fixture
def release(kube: Kube, namespace: str, cluster: ClusterInfo) -> Iterator[str]:
    """A unique release name in the test namespace, uninstalled afterwards (cluster-scoped RBAC too)."""
    name = f"mo-{secrets.token_hex(3)}"
    yield name
    helm(cluster, "uninstall", name, "-n", namespace, "--wait", "--timeout=60s", check=False)


@pytest.fixture
def watched_namespace(kube: Kube, crds: list[str]) -> Iterator[str]:
    """An ``isolated-`` namespace (the session operator ignores it) that the chart's operator watches."""
    name = f"{ISOLATED_PREFIX}helm-{secrets.token_hex(3)}"
    yield create_namespace(kube, name)
    delete_namespace(kube, name)


# -------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("values", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_lint_and_template(cluster: ClusterInfo, values: str) -> None:
    helm(cluster, "lint", "--strict", str(CHART), *VALUE_SETS[values])
    objects = render(cluster, "mlops-system", *VALUE_SETS[values])
    [deployment] = [
        d for d in by_kind(objects, "Deployment") if d["metadata"]["name"] == "rel-mlops-operator"
    ]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert args[0] == "run" and "--liveness=http://0.0.0.0:8080/healthz" in args
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLOPS_RUNTIME_IMAGE"] == "ghcr.io/mlops-operator/runtime:0.1.0"
    # No wildcard anywhere in RBAC; no access to secrets or pod exec.
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert not {"secrets", "pods/exec", "configmaps"} & set(rule["resources"]), rule
    # Everything but the CRDs carries an Argo CD sync wave; hooks run after the sync.
    for obj in objects:
        annotations = obj["metadata"].get("annotations") or {}
        assert "argocd.argoproj.io/sync-wave" in annotations or "helm.sh/hook" in annotations, obj["kind"]

    namespaces = [a.split("=", 1)[1] for a in args if a.startswith("--namespace=")]
    roles = by_kind(objects, "Role")
    if values in ("namespaced", "everything"):
        assert namespaces == sorted({r["metadata"]["namespace"] for r in roles}) and namespaces
        assert len(by_kind(objects, "RoleBinding")) == len(namespaces)
    else:
        assert not namespaces and not roles
    replicas = deployment["spec"]["replicas"]
    assert ("--peering" in args) == (replicas > 1)
    peering_crds = {c["metadata"]["name"] for c in by_kind(objects, "CustomResourceDefinition")}
    assert peering_crds == (
        {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} if replicas > 1 else set()
    )
    if values == "mlflow":
        assert env["MLOPS_MLFLOW_TRACKING_URI"] == "http://rel-mlops-operator-mlflow.mlops-system.svc:5000"
        assert "--verbose" in args
        assert by_kind(objects, "PersistentVolumeClaim")
    if values == "everything":
        assert container["image"] == "ghcr.io/mlops-operator/operator@sha256:" + "a" * 64
        assert by_kind(objects, "ServiceMonitor") and by_kind(objects, "PodDisruptionBudget")
        assert len(by_kind(objects, "KopfPeering")) == 1 and not by_kind(objects, "ClusterKopfPeering")


@pytest.mark.parametrize("bad", list(BAD_VALUES), ids=list(BAD_VALUES))
def test_schema_rejects_bad_values(cluster: ClusterInfo, bad: str) -> None:
    result = helm(cluster, "template", "rel", str(CHART), *BAD_VALUES[bad], check=False)
    assert result.returncode != 0, f"{bad} was accepted"
    assert "schema" in result.stderr or "must differ" in result.stderr, result.stderr


def test_rendered_objects_pass_server_side_dry_run(kube: Kube, cluster: ClusterInfo, namespace: str) -> None:
    for values in VALUE_SETS:
        extra = [
            "--set", "metrics.serviceMonitor.enabled=false",
            "--set", f"watchNamespaces={{{namespace}}}" if "watchNamespaces" in str(VALUE_SETS[values])
            else "logLevel=info",
        ]  # fmt: skip
        text = helm(
            cluster, "template", "rel", str(CHART), "-n", namespace, "--no-hooks", *VALUE_SETS[values], *extra
        ).stdout
        result = kube.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", input_text=text, check=False
        )
        assert result.returncode == 0, f"{values}: {result.stderr}"


def test_install_least_privilege_rbac_reconciles_every_kind_upgrade_uninstall(
    kube: Kube, cluster: ClusterInfo, namespace: str, watched_namespace: str, release: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    # --- install, watching one namespace (namespaced Roles: the strictest mode) -------------------------
    helm(
        cluster, "install", release, str(CHART), "-n", namespace,
        "--set", f"watchNamespaces={{{watched_namespace}}}",
        "--set", "image.tag=test", "--set", "runtimeImage.tag=test",
    )  # fmt: skip
    sa = f"{release}-mlops-operator"
    kube.kubectl("get", f"serviceaccount/{sa}", f"deployment/{sa}", f"service/{sa}-metrics", "-n", namespace)
    kube.kubectl("get", f"clusterrole/{sa}-cluster", f"clusterrolebinding/{sa}-cluster")
    kube.kubectl("get", f"role/{sa}", f"rolebinding/{sa}", "-n", watched_namespace)
    deployment: Any = kube.apps.read_namespaced_deployment(sa, namespace)
    assert deployment.spec.template.spec.service_account_name == sa
    assert f"--namespace={watched_namespace}" in deployment.spec.template.spec.containers[0].args

    # --- what the ServiceAccount may do: the chart's grants and nothing more -----------------------------
    subject = f"system:serviceaccount:{namespace}:{sa}"
    assert can_i(kube, subject, "patch", "trainingjobs.mlops.dev/status", watched_namespace)
    assert can_i(kube, subject, "patch", "deployments.apps", watched_namespace)
    for optional in ("httproutes.gateway.networking.k8s.io", "scaledobjects.keda.sh"):
        for verb in ("list", "create", "patch", "delete"):
            assert can_i(kube, subject, verb, optional, watched_namespace), (verb, optional)
        assert not can_i(kube, subject, "patch", optional, namespace)
    assert not can_i(kube, subject, "patch", "deployments.apps", namespace)  # not watched: no writes
    assert not can_i(kube, subject, "create", "pods/exec", watched_namespace)
    assert not can_i(kube, subject, "get", "secrets", watched_namespace)
    assert not can_i(kube, subject, "list", "secrets")
    assert not can_i(kube, subject, "list", "configmaps")
    assert not can_i(kube, subject, "create", "pods", watched_namespace)
    assert not can_i(kube, subject, "delete", "trainingjobs.mlops.dev", watched_namespace)
    assert not can_i(kube, subject, "update", "customresourcedefinitions.apiextensions.k8s.io")
    listed = granted_rules(kube, subject, watched_namespace)
    resources = {resource for resource, _ in listed}
    assert "*" not in resources and "*.*" not in resources, listed
    expected = {
        "trainingjobs.mlops.dev",
        "modeldeployments.mlops.dev",
        "driftpolicies.mlops.dev",
        "trainingjobs.mlops.dev/status",
        "modeldeployments.mlops.dev/status",
        "driftpolicies.mlops.dev/status",
        "jobs.batch",
        "pods",
        "services",
        "deployments.apps",
        "horizontalpodautoscalers.autoscaling",
        "httproutes.gateway.networking.k8s.io",
        "scaledobjects.keda.sh",
        "events",
        "namespaces",
        "customresourcedefinitions.apiextensions.k8s.io",
    }
    assert resources == expected, listed
    for resource, verbs in listed:
        assert "*" not in verbs and "update" not in verbs, (resource, verbs)

    # --- the real operator, authenticated as that ServiceAccount, reconciles all three kinds ----------------
    kubeconfig = service_account_kubeconfig(kube, cluster, namespace, sa, tmp_path / "sa.kubeconfig")
    as_sa = dataclasses.replace(cluster, kubeconfig=str(kubeconfig))
    operator = OperatorProcess(as_sa, [watched_namespace], tmp_path / "operator.log").start()
    try:
        create(
            kube, watched_namespace, "trainingjobs", "TrainingJob", "iris",
            {
                "model": {"name": "iris"},
                "dataset": {"uri": "https://data.example/iris.csv", "target": "species"},
                "trainer": {"builtin": {"task": "classification", "epochs": 1}},
                "podMetadata": {"annotations": {"fake.mlops.dev/duration": "1s"}},
            },
        )  # fmt: skip
        create(
            kube, watched_namespace, "modeldeployments", "ModelDeployment", "iris",
            {"model": {"name": "iris", "version": 1}, "mlflow": {"trackingUri": "http://127.0.0.1:9"}},
        )  # fmt: skip
        create(
            kube, watched_namespace, "driftpolicies", "DriftPolicy", "iris", {"targetRef": {"name": "iris"}}
        )

        done = wait_until(
            lambda: (
                (s := status_of(kube, watched_namespace, "trainingjobs", "iris")).get("phase") == "Succeeded"
                and s
            ),
            timeout=60,
            message=lambda: f"TrainingJob Succeeded; log:\n{operator.tail()}",
        )
        assert condition(done, "Ready")["status"] == "True"
        job = kube.batch.read_namespaced_job("iris", watched_namespace)
        assert job.metadata.managed_fields[0].manager == "mlops-operator"
        md = wait_until(
            lambda: (
                condition(
                    s := status_of(kube, watched_namespace, "modeldeployments", "iris"), "ModelResolved"
                )
                and s
            ),
            timeout=60,
            message=lambda: f"ModelDeployment ModelResolved; log:\n{operator.tail()}",
        )
        assert condition(md, "ModelResolved")["status"] == "False"
        assert condition(md, "ModelResolved")["reason"] == "RegistryUnavailable"
        dp = wait_until(
            lambda: (
                condition(s := status_of(kube, watched_namespace, "driftpolicies", "iris"), "Ready") and s
            ),
            timeout=60,
            message=lambda: f"DriftPolicy Ready condition; log:\n{operator.tail()}",
        )
        assert condition(dp, "Ready")["message"], dp
        reasons = {e.reason for e in kube.core.list_namespaced_event(watched_namespace).items}
        assert reasons, "the operator posted no events"
        log = operator.log_text()
        assert "403" not in log and "Forbidden" not in log and "Not enough permissions" not in log, (
            operator.tail(80)
        )
    finally:
        operator.stop()

    # --- upgrade with changed values: cluster-wide, debug, an MLflow URI ----------------------------------
    helm(
        cluster, "upgrade", release, str(CHART), "-n", namespace, "--reuse-values",
        "--set-json", "watchNamespaces=[]", "--set", "logLevel=debug",
        "--set", "mlflow.trackingUri=http://mlflow.mlops.svc:5000",
    )  # fmt: skip
    container: Any = kube.apps.read_namespaced_deployment(sa, namespace).spec.template.spec.containers[0]
    assert "--verbose" in container.args and not any(a.startswith("--namespace") for a in container.args)
    env = {e.name: e.value for e in container.env}
    assert env["MLOPS_MLFLOW_TRACKING_URI"] == "http://mlflow.mlops.svc:5000"
    assert kube.kubectl("get", "role", "-n", watched_namespace, "-o", "name").stdout.strip() == ""
    assert can_i(kube, subject, "patch", "deployments.apps")  # cluster-wide now
    assert not can_i(kube, subject, "list", "secrets")
    assert not can_i(kube, subject, "create", "pods/exec")
    assert not can_i(kube, subject, "list", "namespaces")  # only needed in namespaced mode
    # The cluster-wide grants suffice too (run in the isolated namespace: no fight with the session operator).
    operator = OperatorProcess(as_sa, [watched_namespace], tmp_path / "operator-clusterwide.log").start()
    try:
        create(
            kube, watched_namespace, "modeldeployments", "ModelDeployment", "iris-2",
            {"model": {"name": "iris", "alias": "champion"}, "mlflow": {"trackingUri": "http://127.0.0.1:9"}},
        )  # fmt: skip
        wait_until(
            lambda: condition(
                status_of(kube, watched_namespace, "modeldeployments", "iris-2"), "ModelResolved"
            ),
            timeout=60,
            message=lambda: f"iris-2 ModelResolved; log:\n{operator.tail()}",
        )
        # The chart runs this mode without -n (kopf then never lists namespaces); this test process has to
        # pass -n, so kopf's namespace listing is refused -- expected here -- and nothing else may be.
        forbidden = [
            line for line in operator.log_text().splitlines()
            if "Forbidden" in line and 'resource "namespaces"' not in line
        ]  # fmt: skip
        assert not forbidden, "\n".join(forbidden[:5])
    finally:
        operator.stop()
    history = json.loads(helm(cluster, "history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]

    # --- uninstall keeps the CRDs (and so every user object) ----------------------------------------------
    helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout=60s")
    assert kube.kubectl("get", f"clusterrole/{sa}-cluster", check=False).returncode != 0
    for crd in ("trainingjobs.mlops.dev", "modeldeployments.mlops.dev", "driftpolicies.mlops.dev"):
        kube.kubectl("get", "crd", crd)
    assert status_of(kube, watched_namespace, "trainingjobs", "iris")["phase"] == "Succeeded"
    print(f"install -> reconcile -> upgrade -> uninstall took {time.monotonic() - started:.1f}s")
