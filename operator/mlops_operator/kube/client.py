"""The operator's Kubernetes operations: server-side apply with one field manager, status patches, reads
of children and events, with retries on transient apiserver errors (429, 5xx, connection resets, 409).

:class:`KubeClient` is synchronous, over a :class:`~mlops_operator.kube.connection.ApiServer`'s connection
pool (kopf runs reconciles in its thread pool). It knows the URL paths of the standard kinds it may touch
(``STANDARD_PATHS``); the runner adds the operator's own kinds, its field manager and its annotation prefix.
The comparison of a desired manifest with a live object (``contains``, ``stamped``) is pure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import urllib3

from mlops_operator.kube.connection import METADATA_ONLY, ApiError, ApiServer

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: (apiVersion, kind) -> (URL prefix, plural).
Paths = Mapping[tuple[str, str], tuple[str, str]]

#: URL path segments of the standard kinds the operator manages.
STANDARD_PATHS: Final[Paths] = {
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    # optional children, used only when their CRDs are served (kube/discovery.py)
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    ("keda.sh/v1alpha1", "ScaledObject"): ("/apis/keda.sh/v1alpha1", "scaledobjects"),
}
#: Name (after the operator's annotation prefix) of the hash of the desired manifest a child was last
#: applied from (see apply_if_changed).
APPLIED_HASH_NAME: Final = "applied-hash"
RETRIABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
#: Conflicts are retried too, except on create, where 409 means "already exists".
RETRIABLE_CONFLICT: Final = 409


def custom_resource_paths(
    group: str, version: str, plurals: Mapping[str, str]
) -> dict[tuple[str, str], tuple[str, str]]:
    """The paths of a group's kinds, ``plurals`` mapping kind -> plural."""
    prefix = f"/apis/{group}/{version}"
    return {(f"{group}/{version}", kind): (prefix, plural) for kind, plural in plurals.items()}


def with_retries(
    call: Callable[[], T], attempts: int = 5, base_delay: float = 0.2, retry_conflicts: bool = True
) -> T:
    """Run ``call``, retrying transient apiserver failures with exponential backoff and jitter
    (honouring Retry-After on 429)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except ApiError as error:
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


def desired_hash(manifest: Mapping[str, Any]) -> str:
    """A digest of a desired manifest (canonical JSON): changes exactly when what we would apply changes."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def stamped(manifest: Mapping[str, Any], annotation: str) -> dict[str, Any]:
    """``manifest`` with the ``annotation`` holding the hash of itself (applied with it, so owned by our
    field manager)."""
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {**(metadata.get("annotations") or {}), annotation: desired_hash(manifest)}
    return {**manifest, "metadata": metadata}


def contains(live: Any, desired: Any) -> bool:
    """Every field of ``desired`` has the same value in ``live`` (what the apiserver added is ignored).
    Lists of named items (containers, env, ports, volumes) match by name, as server-side apply merges them;
    other lists must match item by item."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            value is None or (key in live and contains(live[key], value))  # None: not applied by us
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list):
            return False
        if desired and all(isinstance(item, Mapping) and "name" in item for item in desired):
            by_name = {item.get("name"): item for item in live if isinstance(item, Mapping)}
            return all(item["name"] in by_name and contains(by_name[item["name"]], item) for item in desired)
        return len(live) == len(desired) and all(contains(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)


def _with_type(items: list[dict[str, Any]], api_version: str, kind: str) -> list[dict[str, Any]]:
    for item in items:  # list items carry no apiVersion/kind
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
    return items


class KubeClient:
    """The operator's typed access to the apiserver: one field manager for every apply, retries on
    transient errors, the URL paths of the kinds in ``paths`` (others are refused)."""

    def __init__(
        self,
        api: ApiServer,
        *,
        field_manager: str,
        annotation_prefix: str,
        paths: Paths = STANDARD_PATHS,
        component: str = "mlops-operator",
    ) -> None:
        self.api = api
        self.field_manager = field_manager
        self.applied_hash_annotation = f"{annotation_prefix}{APPLIED_HASH_NAME}"
        self.component = component
        self._paths = dict(paths)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request with the transient failures retried (``with_retries``)."""
        return with_retries(lambda: self.api.request(method, path, **kwargs))

    def path(self, api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
        """The URL path of a collection (``namespace`` None: in every namespace) or of one object."""
        try:
            prefix, plural = self._paths[(api_version, kind)]
        except KeyError:
            raise ValueError(f"the operator does not manage {api_version} {kind}") from None
        path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace is not None else f"{prefix}/{plural}"
        return f"{path}/{name}" if name else path

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``manifest`` with the operator's field manager (force: the operator owns its
        children's fields). Idempotent: applying the same manifest twice changes nothing."""
        metadata = manifest["metadata"]
        path = self.path(manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"])
        query = [("fieldManager", self.field_manager), ("force", "true")]
        result: dict[str, Any] = self.request(
            "PATCH", path, body=dict(manifest), query=query, content_type="application/apply-patch+yaml"
        )
        return result

    def stamped(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """``manifest`` with the applied-hash annotation of itself."""
        return stamped(manifest, self.applied_hash_annotation)

    def apply_if_changed(
        self, manifest: Mapping[str, Any], live: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply ``manifest`` unless ``live`` (the child as last read) already is what it would
        make: it carries the hash of this very manifest (so nothing we want was added, changed or removed
        since the last apply) and every field of the manifest still has our value (nobody changed a field we
        own). An unchanged child then costs no write. Returns (the child, whether it was applied)."""
        desired = self.stamped(manifest)
        if live is not None and contains(live, desired):
            return dict(live), False
        if logger.isEnabledFor(logging.DEBUG):
            metadata = manifest["metadata"]
            why = "absent" if live is None else "changed"
            kind = manifest["kind"]
            logger.debug("applying %s %s/%s (%s)", kind, metadata["namespace"], metadata["name"], why)
        return self.apply(desired), True

    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object (409 Conflict when it exists: callers that want create-once semantics rely on
        it)."""
        metadata = manifest["metadata"]
        path = self.path(manifest["apiVersion"], manifest["kind"], metadata["namespace"])
        result: dict[str, Any] = with_retries(
            lambda: self.api.request("POST", path, dict(manifest)), retry_conflicts=False
        )
        return result

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            result: dict[str, Any] = self.request("GET", self.path(api_version, kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return result

    def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        path = self.path(api_version, kind, namespace)
        result = self.request("GET", path, query=[("labelSelector", label_selector)])
        return _with_type(result.get("items") or [], api_version, kind)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete with background propagation; already gone is fine."""
        path = self.path(api_version, kind, namespace, name)
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self.request("DELETE", path, body=body)
        except ApiError as error:
            if error.status != 404:
                raise

    def post_event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about ``obj`` (what ``kubectl describe`` shows), from the operator's component.
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
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        path = f"/api/v1/namespaces/{metadata['namespace']}/events"
        try:
            with_retries(lambda: self.api.request("POST", path, event, accept=METADATA_ONLY), attempts=3)
        except (ApiError, urllib3.exceptions.HTTPError, ConnectionError) as error:
            # an Event is best effort: never fail a reconcile for it (nor for a connection lost while posting)
            why = error.reason if isinstance(error, ApiError) else error
            logger.warning("could not post event %s on %s: %s", reason, metadata["name"], why)

    def list_page(
        self, api_version: str, kind: str, limit: int, token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the objects of a kind in every namespace: (items, the token of the next page or
        None). A token that expired (410: the listing fell out of etcd's compaction window) starts over."""
        query = [("limit", str(limit)), *([("continue", token)] if token else [])]
        try:
            result = self.request("GET", self.path(api_version, kind, None), query=query)
        except ApiError as error:
            if error.status != 410 or not token:
                raise
            return self.list_page(api_version, kind, limit)
        items = _with_type(result.get("items") or [], api_version, kind)
        return items, (result.get("metadata") or {}).get("continue") or None

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource (lists such as conditions are replaced whole); returns the
        object's metadata (what a caller needs: its new resourceVersion)."""
        path = self.path(api_version, kind, namespace, name) + "/status"
        result: dict[str, Any] = self.request(
            "PATCH",
            path,
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
            accept=METADATA_ONLY,
        )
        return result

    def scheduler_messages(self, namespace: str, pod_names: list[str]) -> dict[str, str]:
        """Latest FailedScheduling message per pod (what the scheduler said about why it cannot place it)."""
        if not pod_names:
            return {}
        wanted = set(pod_names)
        selector = "reason=FailedScheduling,involvedObject.kind=Pod"
        path = f"/api/v1/namespaces/{namespace}/events"
        events = self.request("GET", path, query=[("fieldSelector", selector)])
        latest: dict[str, tuple[str, str]] = {}
        for event in events.get("items") or ():
            name = (event.get("involvedObject") or {}).get("name")
            if name not in wanted:
                continue
            metadata = event.get("metadata") or {}
            stamp = str(
                event.get("lastTimestamp")
                or event.get("eventTime")
                or metadata.get("creationTimestamp")
                or ""
            )
            if name not in latest or stamp >= latest[name][0]:
                latest[name] = (stamp, event.get("message") or "")
        return {name: message for name, (_, message) in latest.items()}
