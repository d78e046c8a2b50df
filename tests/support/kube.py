"""Test helpers for talking to the real local control plane: API clients, polling, events."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client, config

T = TypeVar("T")


@dataclass
class Kube:
    """Typed API groups over one ApiClient bound to the local cluster's admin kubeconfig."""

    api_client: client.ApiClient
    kubeconfig: str
    kubectl_binary: str

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str, kubectl_binary: str) -> Kube:
        return cls(config.new_client_from_config(config_file=kubeconfig), kubeconfig, kubectl_binary)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api_client)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)

    def kubectl(
        self, *args: str, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def events_for(self, namespace: str, name: str) -> list[Any]:
        events = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        return list(events.items)


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.25,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {text}")
        time.sleep(interval)


def create_namespace(kube: Kube, name: str, labels: dict[str, str] | None = None) -> str:
    """Create a namespace and wait for its default ServiceAccount (pods cannot be admitted before it)."""
    from kubernetes.client.exceptions import ApiException

    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))

    def default_sa_exists() -> bool:
        try:
            kube.core.read_namespaced_service_account("default", name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    wait_until(default_sa_exists, timeout=30, message=f"default ServiceAccount in {name}")
    return name


def delete_namespace(kube: Kube, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        kube.core.delete_namespace(name, propagation_policy="Background")
    except ApiException as error:
        if error.status != 404:
            raise
