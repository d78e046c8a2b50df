"""The operator's Kubernetes client: server-side apply with one field manager, status patches, reads of
children and events, with retries on transient apiserver errors (429, 5xx, connection resets, 409).

Synchronous (the kubernetes client); kopf runs sync handlers in its thread pool.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mlops_operator.api.v1alpha1 import FIELD_MANAGER, GROUP, VERSION

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: URL path segments of the kinds the operator manages: (api prefix, plural).
_PATHS: Final = {
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    # optional ModelDeployment children, used only when their CRDs are served (controllers/discovery.py)
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    ("keda.sh/v1alpha1", "ScaledObject"): ("/apis/keda.sh/v1alpha1", "scaledobjects"),
    (f"{GROUP}/{VERSION}", "TrainingJob"): (f"/apis/{GROUP}/{VERSION}", "trainingjobs"),
    (f"{GROUP}/{VERSION}", "ModelDeployment"): (f"/apis/{GROUP}/{VERSION}", "modeldeployments"),
    (f"{GROUP}/{VERSION}", "DriftPolicy"): (f"/apis/{GROUP}/{VERSION}", "driftpolicies"),
}
RETRIABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
#: Conflicts are retried too, except on create, where 409 means "already exists".
RETRIABLE_CONFLICT: Final = 409

_client_lock = threading.Lock()
_client: client.ApiClient | None = None


def api_client() -> client.ApiClient:
    """One shared ApiClient: in-cluster config when running in a pod, else the kubeconfig."""
    global _client
    with _client_lock:
        if _client is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            _client = client.ApiClient()
        return _client


def with_retries(
    call: Callable[[], T], attempts: int = 5, base_delay: float = 0.2, retry_conflicts: bool = True
) -> T:
    """Run ``call``, retrying transient apiserver failures with exponential backoff and jitter
    (honouring Retry-After on 429)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except ApiException as error:
            conflict = retry_conflicts and error.status == RETRIABLE_CONFLICT
            if (error.status not in RETRIABLE_STATUS and not conflict) or attempt == attempts:
                raise
            retry_after = (error.headers or {}).get("Retry-After") if error.status == 429 else None
            delay = float(retry_after) if retry_after else base_delay * 2 ** (attempt - 1)
        except (urllib3.exceptions.HTTPError, ConnectionError) as error:
            if attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            logger.debug("transient error %s, retrying", error)
        time.sleep(delay * (1 + random.random() / 4))
    raise AssertionError("unreachable")


def _path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    try:
        prefix, plural = _PATHS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {api_version} {kind}") from None
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def _call(
    method: str,
    path: str,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
) -> Any:
    api = api_client()
    serialized = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*serialized)
    response.read()  # type: ignore[no-untyped-call]
    text = response.data.decode() if response.data else ""
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=text, data=None)
    return json.loads(text) if text else None


def apply(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply ``manifest`` with the operator's field manager (force: the operator owns its
    children's fields). Idempotent: applying the same manifest twice changes nothing."""
    metadata = manifest["metadata"]
    path = _path(manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"])
    query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
    result: dict[str, Any] = with_retries(
        lambda: _call("PATCH", path, dict(manifest), query, "application/apply-patch+yaml")
    )
    return result


def create(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Create an object (409 Conflict when it exists: callers that want create-once semantics rely on it)."""
    metadata = manifest["metadata"]
    path = _path(manifest["apiVersion"], manifest["kind"], metadata["namespace"])
    result: dict[str, Any] = with_retries(lambda: _call("POST", path, dict(manifest)), retry_conflicts=False)
    return result


def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    try:
        result: dict[str, Any] = with_retries(lambda: _call("GET", _path(api_version, kind, namespace, name)))
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return result


def list_objects(api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    path = _path(api_version, kind, namespace)
    result = with_retries(lambda: _call("GET", path, query=[("labelSelector", label_selector)]))
    return list(result.get("items") or [])


def delete(api_version: str, kind: str, namespace: str, name: str) -> None:
    """Delete with background propagation; already gone is fine."""
    path = _path(api_version, kind, namespace, name)
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    try:
        with_retries(lambda: _call("DELETE", path, body))
    except ApiException as error:
        if error.status != 404:
            raise


def post_event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """A core/v1 Event about ``obj`` (what ``kubectl describe`` shows), from component mlops-operator.
    Works from any thread (kopf.event needs kopf's task context)."""
    metadata = obj["metadata"]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{metadata['name']}.{secrets.token_hex(8)}",
            "namespace": metadata["namespace"],
        },
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "mlops-operator"},
        "reportingComponent": "mlops-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    path = f"/api/v1/namespaces/{metadata['namespace']}/events"
    try:
        with_retries(lambda: _call("POST", path, event), attempts=3)
    except (ApiException, urllib3.exceptions.HTTPError, ConnectionError) as error:
        # an Event is best effort: never fail a reconcile for it (nor for a connection lost while posting)
        why = error.reason if isinstance(error, ApiException) else error
        logger.warning("could not post event %s on %s: %s", reason, metadata["name"], why)


def list_all(api_version: str, kind: str) -> list[dict[str, Any]]:
    """Every object of a kind in every namespace."""
    prefix, plural = _PATHS[(api_version, kind)]
    result = with_retries(lambda: _call("GET", f"{prefix}/{plural}"))
    items: list[dict[str, Any]] = result.get("items") or []
    for item in items:  # list items carry no apiVersion/kind
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
    return items


def patch_status(api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """Merge-patch the status subresource (lists such as conditions are replaced whole)."""
    path = _path(api_version, kind, namespace, name) + "/status"
    with_retries(
        lambda: _call("PATCH", path, {"status": dict(status)}, content_type="application/merge-patch+json")
    )


def scheduler_messages(namespace: str, pod_names: list[str]) -> dict[str, str]:
    """Latest FailedScheduling message per pod (what the scheduler said about why it cannot place it)."""
    if not pod_names:
        return {}
    core = client.CoreV1Api(api_client())
    wanted = set(pod_names)
    events = with_retries(
        lambda: core.list_namespaced_event(
            namespace, field_selector="reason=FailedScheduling,involvedObject.kind=Pod"
        )
    )
    latest: dict[str, tuple[str, str]] = {}
    for event in events.items:
        name = event.involved_object.name
        if name not in wanted:
            continue
        stamp = str(event.last_timestamp or event.event_time or event.metadata.creation_timestamp or "")
        if name not in latest or stamp >= latest[name][0]:
            latest[name] = (stamp, event.message or "")
    return {name: message for name, (_, message) in latest.items()}
