"""The generated CRDs in a real kube-apiserver: examples apply, `kubectl explain` shows the models' docs,
bad manifests are refused naming the field, status is a subresource, immutable fields stay immutable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.support.kube import Kube
from tests.unit.test_api_validation import INVALID_CASES, Case, invalid_manifest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
GROUP, VERSION = "mlops.dev", "v1alpha1"
pytestmark = pytest.mark.usefixtures("crds")


def apply(kube: Kube, namespace: str, manifest: dict[str, Any], dry_run: bool = False) -> Any:
    args = ["apply", "--server-side", "--field-manager=mlops-tests", "-n", namespace, "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    return kube.kubectl(*args, input_text=json.dumps(manifest), check=False)


def test_every_example_applies_with_server_side_apply_and_lists_under_mlops(
    kube: Kube, namespace: str
) -> None:
    names = []
    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text()):
            result = apply(kube, namespace, document)
            assert result.returncode == 0, f"{path.name}: {result.stderr}"
            names.append(f"{document['kind'].lower()}.{GROUP}/{document['metadata']['name']}")
    listed = kube.kubectl("get", "mlops", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == sorted(names)
    assert {"trainingjob", "modeldeployment", "driftpolicy"} == {n.split(".")[0] for n in names}


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("tj", ["NAME", "MODEL", "PHASE", "NODES", "GPUS", "PROGRESS", "VERSION", "AGE"]),
        ("md", ["NAME", "MODEL", "VERSION", "READY", "REPLICAS", "URL", "AGE"]),
        ("dp", ["NAME", "TARGET", "DRIFTED", "SCORE", "LAST", "RETRAIN", "AGE"]),
    ],
)
def test_printer_columns(kube: Kube, namespace: str, kind: str, columns: list[str]) -> None:
    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text()):
            apply(kube, namespace, document)
    header = kube.kubectl("get", kind, "-n", namespace).stdout.splitlines()[0].split()
    assert header == columns


def test_kubectl_explain_shows_the_models_descriptions(kube: Kube) -> None:
    spec = kube.kubectl("explain", "trainingjob.spec").stdout
    assert "Desired state of a TrainingJob." in spec
    for field in ("dataset", "trainer", "resources", "scheduling", "runPolicy", "gate", "mlflow"):
        assert f"  {field}\t" in spec or f"  {field} " in spec, field
    uri = kube.kubectl("explain", "trainingjob.spec.dataset.uri").stdout
    assert "pvc://" in uri
    gpus = kube.kubectl("explain", "trainingjob.spec.resources.gpus").stdout
    assert "nvidia.com/gpu" in gpus
    assert "ModelDeployment" in kube.kubectl("explain", "modeldeployment").stdout
    assert "DriftPolicy" in kube.kubectl("explain", "driftpolicy").stdout


APISERVER_CASES = [case for case in INVALID_CASES if case.apiserver]


def test_the_invalid_table_is_large() -> None:
    assert len(APISERVER_CASES) >= 20


@pytest.mark.parametrize("case", APISERVER_CASES, ids=[case.id for case in APISERVER_CASES])
def test_invalid_manifest_is_refused_by_the_apiserver_naming_the_field(
    kube: Kube, namespace: str, case: Case
) -> None:
    result = apply(kube, namespace, invalid_manifest(case), dry_run=True)
    assert result.returncode != 0, f"{case.id} was accepted"
    assert case.expected in result.stderr, result.stderr


@pytest.mark.parametrize("case", [c for c in INVALID_CASES if not c.apiserver], ids=lambda c: c.id)
def test_what_only_the_operator_can_check_is_accepted_by_the_apiserver(
    kube: Kube, namespace: str, case: Case
) -> None:
    # Documented limitation (the operator reports it as Valid=False; see the TrainingJob controller tests).
    assert apply(kube, namespace, invalid_manifest(case), dry_run=True).returncode == 0


def _example(kind: str) -> dict[str, Any]:
    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text()):
            if document["kind"] == kind:
                return dict(document)
    raise AssertionError(kind)


def test_status_is_a_subresource_and_cannot_be_written_through_the_object(kube: Kube, namespace: str) -> None:
    manifest = _example("TrainingJob")
    manifest["spec"]["scheduling"] = {"suspend": True}
    manifest["status"] = {"phase": "Succeeded"}
    name = manifest["metadata"]["name"]
    created = kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", manifest)
    assert "phase" not in (created.get("status") or {})
    patched = kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "trainingjobs", name, {"status": {"phase": "Succeeded"}}
    )
    assert (patched.get("status") or {}).get("phase") != "Succeeded"
    status = kube.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "trainingjobs", name, {"status": {"modelVersion": 7}}
    )
    assert status["status"]["modelVersion"] == 7


def test_fields_that_define_the_model_are_immutable_but_scheduling_is_not(kube: Kube, namespace: str) -> None:
    manifest = _example("TrainingJob")
    manifest["spec"]["scheduling"] = {"suspend": True}
    name = manifest["metadata"]["name"]
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", manifest)
    with pytest.raises(ApiException) as raised:
        kube.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "trainingjobs",
            name,
            {"spec": {"dataset": {"uri": "s3://other/data.csv"}}},
        )
    assert raised.value.status == 422
    assert "spec.dataset is immutable" in raised.value.body
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "trainingjobs", name, {"spec": {"scheduling": {"suspend": False}}}
    )
