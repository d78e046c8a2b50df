#!/usr/bin/env python3
"""A development node that really runs pods, as local processes: a small kubelet for the local cluster.

kwok (``hack/local_cluster.py``) makes pods *look* Running and runs nothing. This node registers itself
with the control plane like a kubelet (Node object, Lease in ``kube-node-lease``, Ready condition),
watches the pods bound to it (``spec.nodeName=<its name>``, nothing else) and runs every container's
``command`` + ``args`` as a process of this machine, in the project's virtualenv. The image is ignored.
Pod status is reported like the kubelet does (phase, container states, restarts, probes, conditions), so
Jobs complete, Deployments roll out and EndpointSlices fill for real.

What a container gets (see docs/development.md, "The process node"):

- a sandbox ``<state-dir>/pods/<namespace>_<pod>_<uid>/`` as its working directory; emptyDir volumes
  are directories in it, PVCs are ``<state-dir>/pvc/<namespace>/<claim>``; environment values and
  arguments that name a volume's ``mountPath`` (``HOME=/tmp``, ``--out=/tmp/x``) are rewritten to the
  host directory of that volume (a host process cannot mount anything);
- its own pod IP (``198.19.N.x`` on a local route, or ``127.N.x.y`` when no route can be added), and
  ``POD_IP`` / ``MLOPS_SERVER_HOST`` set to it so servers bind to it and replicas share a port;
- ``MLOPS_TERMINATION_LOG`` pointing at a sandbox file copied into ``terminated.message`` on exit;
- logs in ``<state-dir>/logs/<namespace>_<pod>_<container>.log`` (``kubectl logs`` works as well).

CLI::

    python hack/process_node.py [run] --kubeconfig .cluster/kubeconfig --name process-node-0 \
        --state-dir .cluster/process-nodes/process-node-0 [--cpu 2 --memory 8Gi --gpus 0 --pods 20]
    python hack/process_node.py logs --state-dir DIR NAMESPACE/POD [-c CONTAINER] [-f] [--tail N]

Python::

    node = ProcessNode(NodeConfig(kubeconfig=..., name="process-node-0", state_dir=Path(...))).start()
    ...
    node.stop()

Resource limits are not enforced, images are not pulled, Service names and ClusterIPs do not resolve or
route (no DNS, no kube-proxy), lifecycle hooks are not run. It is a development tool, not part of the
operator.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import http.server
import ipaddress
import json
import logging
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("process-node")

REPO_ROOT: Final = Path(__file__).resolve().parent.parent

# --- labels, annotations, resources ---------------------------------------------------------------------
NODE_KIND_LABEL: Final = "mlops.dev/node-kind"
VIRTUAL_GPU_LABEL: Final = "mlops.dev/virtual-gpu"
GPU_RESOURCE: Final = "nvidia.com/gpu"
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
GPU_COUNT_LABEL: Final = "nvidia.com/gpu.count"
VIRTUAL_GPU_PRODUCT: Final = "virtual-cpu"
POD_CIDR_ANNOTATION: Final = "mlops.dev/process-node-pod-cidr"
STATE_DIR_ANNOTATION: Final = "mlops.dev/process-node-state-dir"
JOB_COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
KUBE_VERSION: Final = "v1.33.13"

# --- what the node puts into every container's environment ----------------------------------------------
#: Same name as ``pod_contract.ENV_TERMINATION_LOG`` (a test checks they agree).
ENV_TERMINATION_LOG: Final = "MLOPS_TERMINATION_LOG"
#: The address servers bind to (the model server reads it): the pod's own IP on this node.
ENV_SERVER_HOST: Final = "MLOPS_SERVER_HOST"
ENV_POD_IP: Final = "POD_IP"
#: GPUs a container asked for on a node whose GPUs are virtual (they run on the CPU).
ENV_VIRTUAL_GPUS: Final = "MLOPS_VIRTUAL_GPUS"
#: Markers that find every process a node started (also the grandchildren that left its process group).
ENV_MARK_NODE: Final = "MLOPS_PROCESS_NODE"
ENV_MARK_POD: Final = "MLOPS_PROCESS_NODE_POD_UID"
ENV_MARK_CONTAINER: Final = "MLOPS_PROCESS_NODE_CONTAINER"

#: Pod IPs: a local route for this range makes every address in it bindable, like 127/8 (RFC 2544's
#: benchmarking range: never routed on the internet, and, unlike 127/8, accepted in EndpointSlices).
ROUTED_POD_NETWORK: Final = ipaddress.IPv4Network("198.19.0.0/16")

#: Kubelet limits on the termination message.
MAX_TERMINATION_MESSAGE: Final = 4096
FALLBACK_LOG_LINES: Final = 80
FALLBACK_LOG_BYTES: Final = 2048

TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})
SHUTDOWN_MESSAGE: Final = "Pod was terminated in response to imminent node shutdown."


class ConfigError(Exception):
    """A container cannot be created yet (missing Secret/ConfigMap key, ...): reported, retried."""


# ---------------------------------------------------------------------------------------------- helpers


def rfc3339(timestamp: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """The kubelet's ``$(VAR)`` expansion: ``$$`` is ``$``, unknown references stay as they are."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end == -1:
                    out.append(text[i:])
                    break
                value = lookup(text[i + 2 : end]) if end > i + 2 else None
                out.append(value if value is not None else text[i : end + 1])
                i = end + 1
                continue
        out.append(char)
        i += 1
    return "".join(out)


_QUANTITY_SUFFIXES: Final = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


def parse_quantity(quantity: str | int | float) -> Decimal:
    """A Kubernetes quantity (``500m``, ``8Gi``, ``1e3``) as a number."""
    text = str(quantity).strip()
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            with contextlib.suppress(InvalidOperation):
                return Decimal(text[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    return Decimal(text)


@dataclass(frozen=True)
class Mount:
    """Where a container path lives on this machine."""

    container_path: str
    host_path: Path


def rewrite_path(value: str, mounts: Sequence[Mount]) -> str:
    """``value`` with a leading mount path (also after ``file://``) replaced by the host directory."""
    for prefix in ("", "file://"):
        if not value.startswith(prefix):
            continue
        rest = value[len(prefix) :]
        for mount in mounts:
            path = mount.container_path.rstrip("/")
            if path and (rest == path or rest.startswith(path + "/")):
                return f"{prefix}{mount.host_path}{rest[len(path) :]}"
    return value


def rewrite_argument(argument: str, mounts: Sequence[Mount]) -> str:
    """A command-line argument: a path, or ``--flag=path``."""
    if argument.startswith("-") and "=" in argument:
        flag, value = argument.split("=", 1)
        return f"{flag}={rewrite_path(value, mounts)}"
    return rewrite_path(argument, mounts)


def process_ids_with_env(markers: Mapping[str, str]) -> list[int]:
    """Processes of this machine whose environment holds all ``markers`` (KEY=VALUE)."""
    needles = [f"{key}={value}".encode() for key, value in markers.items()]
    own = os.getpid()
    found: list[int] = []
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        variables = set(environ.split(b"\0"))
        if all(needle in variables for needle in needles):
            found.append(int(entry.name))
    return found


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def oom_kill_count() -> int:
    """The kernel's OOM-kill counter (/proc/vmstat), to tell an OOM kill from another SIGKILL."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tail_text(path: Path, start: int, max_lines: int, max_bytes: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            begin = max(start, end - max_bytes * 4)
            handle.seek(begin)
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()[-max_lines:]
    text = "\n".join(lines)
    encoded = text.encode()
    if len(encoded) > max_bytes:
        text = encoded[-max_bytes:].decode(errors="ignore")
    return text


def log_file_name(namespace: str, pod: str, container: str) -> str:
    return f"{namespace}_{pod}_{container}.log"


# --------------------------------------------------------------------------------------------- config


@dataclass
class NodeConfig:
    """Everything ``ProcessNode`` needs; the CLI flags map 1:1."""

    kubeconfig: str
    name: str = "process-node-0"
    state_dir: Path | None = None
    cpu: str = "2"
    memory: str = "8Gi"
    gpus: int = 0
    pods: int = 20
    #: None: automatic (a /24 of 198.19.0.0/16 on a local route, else 127.N.0.0/16).
    pod_cidr: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: Taints as ``{"key", "value", "effect"}``.
    taints: list[dict[str, str]] = field(default_factory=list)
    #: The virtualenv whose ``bin`` goes first on PATH (default: the one running this program).
    venv: Path | None = None
    #: Variables of this process's environment passed on to containers (PATH and LANG always are).
    pass_env: list[str] = field(default_factory=list)
    lease_duration_seconds: int = 40
    renew_interval: float = 10.0
    status_interval: float = 60.0
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    #: Upper bound of the grace period pods get when the node shuts down.
    shutdown_grace: float = 10.0
    delete_node_on_exit: bool = True
    keep_sandboxes: bool = False
    #: Serve /containerLogs so ``kubectl logs`` works (needs the ``cryptography`` package).
    log_server: bool = True

    @property
    def root(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir.resolve()
        base = Path(os.environ.get("MLOPS_CLUSTER_DIR", REPO_ROOT / ".cluster"))
        return (base / "process-nodes" / self.name).resolve()

    @property
    def venv_bin(self) -> Path:
        return (self.venv if self.venv is not None else Path(sys.prefix)) / "bin"


# ------------------------------------------------------------------------------------------------ API


class Api:
    """Plain JSON requests over the kubernetes client's ApiClient (dict bodies in, dicts out)."""

    def __init__(self, kubeconfig: str) -> None:
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
        configuration.connection_pool_maxsize = 64
        self.client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.client)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        serialized = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*serialized, _request_timeout=timeout)
        response.read()  # type: ignore[no-untyped-call]
        text = response.data.decode() if response.data else ""
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return json.loads(text) if text else None

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.call("GET", path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return result

    def patch(self, path: str, body: Any, strategic: bool = True) -> Any:
        kind = "strategic-merge-patch" if strategic else "merge-patch"
        return self.call("PATCH", path, body, content_type=f"application/{kind}+json")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()  # type: ignore[no-untyped-call]


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


# ------------------------------------------------------------------------------------------ pod IPs


class IpPool:
    """Pod IPs from one network, handed out by a counter (an address is not reused right away)."""

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        self.network = network
        self._in_use: set[str] = set()
        self._counter = 0
        self._lock = threading.Lock()

    def _usable(self, address: ipaddress.IPv4Address) -> bool:
        last = address.packed[-1]
        return (
            address in self.network
            and address not in (self.network.network_address, self.network.broadcast_address)
            and last not in (0, 255)
            and str(address) != "127.0.0.1"
        )

    def allocate(self, preferred: str | None = None) -> str:
        with self._lock:
            if preferred:
                with contextlib.suppress(ValueError):
                    wanted = ipaddress.IPv4Address(preferred)
                    if self._usable(wanted) and preferred not in self._in_use:
                        self._in_use.add(preferred)
                        return preferred
            size = self.network.num_addresses
            for _ in range(size):
                self._counter += 1
                candidate = self.network.network_address + (self._counter % size)
                if self._usable(candidate) and str(candidate) not in self._in_use:
                    self._in_use.add(str(candidate))
                    return str(candidate)
        raise RuntimeError(f"no free pod IP left in {self.network}")

    def release(self, address: str) -> None:
        with self._lock:
            self._in_use.discard(address)


def _can_bind(address: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def _add_local_route(network: ipaddress.IPv4Network) -> bool:
    """``ip route add local NETWORK dev lo``: every address in it becomes local (needs CAP_NET_ADMIN)."""
    if shutil.which("ip") is None:
        return False
    result = subprocess.run(
        ["ip", "route", "add", "local", str(network), "dev", "lo"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and "File exists" not in result.stderr:
        log.debug("ip route add local %s failed: %s", network, result.stderr.strip())
        return False
    return True


def choose_pod_network(name: str, requested: str | None) -> ipaddress.IPv4Network:
    """The pod network of this node: ``requested``, else a /24 of 198.19.0.0/16 picked by the node's name
    (a local route is added when missing and allowed), else 127.N.0.0/16 (loopback: always bindable, but
    EndpointSlices reject loopback addresses, so Services get no endpoints)."""
    digest = hashlib.sha256(name.encode()).digest()
    if requested:
        network = ipaddress.IPv4Network(requested, strict=False)
        probe = str(network.network_address + 1)
        if network.is_loopback or _can_bind(probe) or (_add_local_route(network) and _can_bind(probe)):
            return network
        raise RuntimeError(
            f"addresses of {network} cannot be bound on this machine; add a local route "
            f"(sudo ip route add local {network} dev lo) or pick a 127.x.0.0/16 network"
        )
    routed = ipaddress.IPv4Network(f"198.19.{1 + digest[0] % 254}.0/24")
    probe = str(routed.network_address + 1)
    if _can_bind(probe) or (_add_local_route(ROUTED_POD_NETWORK) and _can_bind(probe)):
        return routed
    loopback = ipaddress.IPv4Network(f"127.{1 + digest[1] % 254}.0.0/16")
    log.warning(
        "pod IPs come from %s: no local route for %s (run `sudo ip route add local %s dev lo` once to get "
        "routable pod IPs); EndpointSlices reject loopback addresses, so Services will have no endpoints",
        loopback,
        ROUTED_POD_NETWORK,
        ROUTED_POD_NETWORK,
    )
    return loopback


# ------------------------------------------------------------------------------------------ containers


@dataclass
class ProbeState:
    spec: dict[str, Any]
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    reported: bool = False

    def setting(self, key: str, default: int) -> int:
        value = self.spec.get(key)
        return int(value) if value is not None else default


class Container:
    """One container of a pod: its process, state, restarts and probes."""

    def __init__(self, spec: dict[str, Any], kind: str, pod_restart_policy: str) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.kind = kind  # "init" | "sidecar" | "main"
        if kind == "sidecar":
            self.restart_policy = "Always"
        elif kind == "init":
            self.restart_policy = "Never" if pod_restart_policy == "Never" else "OnFailure"
        else:
            self.restart_policy = pod_restart_policy
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.env: dict[str, str] = {}
        self.cwd = ""
        self.mounts: list[Mount] = []
        self.waiting_reason = "ContainerCreating"
        self.waiting_message = ""
        self.running_since = ""
        self.started_mono = 0.0
        self.terminated: dict[str, Any] | None = None
        self.last_terminated: dict[str, Any] | None = None
        self.restart_count = 0
        self.ever_ran = False
        self.ready = False
        self.started = False
        self.next_start = 0.0
        self.backoff = 0.0
        self.kill_deadline: float | None = None
        self.sigkilled = False
        self.log_start = 0
        self.oom_before = 0
        self.termination_file = Path()
        self.probes: dict[str, ProbeState] = {
            kind_: ProbeState(spec[f"{kind_}Probe"])
            for kind_ in ("startup", "liveness", "readiness")
            if spec.get(f"{kind_}Probe")
        }

    @property
    def running(self) -> bool:
        return self.proc is not None

    @property
    def succeeded(self) -> bool:
        return self.terminated is not None and self.terminated.get("exitCode") == 0

    def should_restart(self, exit_code: int) -> bool:
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and exit_code != 0

    def status(self) -> dict[str, Any]:
        if self.proc is not None:
            state: dict[str, Any] = {"running": {"startedAt": self.running_since}}
        elif self.terminated is not None:
            state = {"terminated": self.terminated}
        else:
            waiting = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        entry: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image") or "",
            "imageID": "",
            "ready": bool(self.ready and self.proc is not None),
            "started": bool(self.started and self.proc is not None),
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.pid:
            entry["containerID"] = f"process://{self.pid}"
        return entry


# -------------------------------------------------------------------------------------------- pods


class PodWorker(threading.Thread):
    """Runs one pod: sandbox, IP, containers, probes, status, deletion. One thread per pod."""

    def __init__(self, node: ProcessNode, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        super().__init__(name=f"pod-{metadata['namespace']}/{metadata['name']}", daemon=True)
        self.node = node
        self.uid: str = metadata["uid"]
        self.namespace: str = metadata["namespace"]
        self.pod_name: str = metadata["name"]
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gone = False
        self._shutdown = False
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        self.containers: list[Container] = []
        for init in spec.get("initContainers") or []:
            kind = "sidecar" if init.get("restartPolicy") == "Always" else "init"
            self.containers.append(Container(init, kind, self.restart_policy))
        for main in spec.get("containers") or []:
            self.containers.append(Container(main, "main", self.restart_policy))
        self.sandbox = node.root / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.ip = ""
        self.initialized = not any(c.kind != "main" for c in self.containers)
        self.init_failed = False
        self.phase = "Pending"
        self.start_time = ""
        self.volumes: dict[str, Path] = {}
        self.volumes_ready = False
        self.volume_error = ""
        self._conditions: dict[str, tuple[str, str]] = {}
        self._condition_times: dict[str, str] = {}
        self._last_status: str | None = None
        self._status_retry_at = 0.0
        self._extra_status: dict[str, Any] = {}

    # --- called from the node's watch thread ---
    def update(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._pod = pod
        self._wake.set()

    def gone(self) -> None:
        self._gone = True
        self._wake.set()

    def shutdown(self) -> None:
        self._shutdown = True
        self._wake.set()

    @property
    def pod(self) -> dict[str, Any]:
        with self._lock:
            return self._pod

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod_name}"

    # --- lifecycle ---
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s: worker failed; stopping its processes", self.key)
            self._kill_everything()
        finally:
            self._kill_everything()
            if self._gone and not self.node.config.keep_sandboxes:
                shutil.rmtree(self.sandbox, ignore_errors=True)
            if self.ip:
                self.node.ips.release(self.ip)
            self.node._forget(self)

    def _run(self) -> None:
        pod = self.pod
        status = pod.get("status") or {}
        if status.get("phase") in TERMINAL_PHASES:
            # Finished before this node (re)started: nothing to run, only the deletion to complete.
            self.phase = status["phase"]
            self._idle_until_deleted()
            return
        self._prepare(status)
        while True:
            if self._gone:
                self._terminate(api=False)
                return
            if self._shutdown:
                self._terminate(api=True, node_shutdown=True)
                return
            if self.pod["metadata"].get("deletionTimestamp"):
                self._terminate(api=True)
                self._idle_until_deleted()
                return
            self._step()
            self._sync_status()
            if self.phase in TERMINAL_PHASES and not any(c.running for c in self.containers):
                self._sync_status(force=True)
                self._idle_until_deleted()
                return
            self._wake.wait(self._next_wakeup())
            self._wake.clear()

    def _idle_until_deleted(self) -> None:
        """A finished pod: wait until it is deleted (delete it for good when it is terminating)."""
        deleted = False
        while not self._gone and not self._shutdown:
            if self.ip:
                self._sync_status()  # retried until the final status is in
            if self.pod["metadata"].get("deletionTimestamp") and not deleted:
                deleted = self._delete_object()
            self._wake.wait(5.0)
            self._wake.clear()

    def _prepare(self, status: dict[str, Any]) -> None:
        self.ip = (
            "127.0.0.1"
            if self.pod["spec"].get("hostNetwork")
            else self.node.ips.allocate(preferred=status.get("podIP"))
        )
        self.start_time = status.get("startTime") or rfc3339()
        for sub in ("volumes", "containers", "tmp", "home"):
            (self.sandbox / sub).mkdir(parents=True, exist_ok=True)
        previous = {
            s["name"]: s
            for s in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
        }
        for container in self.containers:
            container.termination_file = self.sandbox / "containers" / container.name / "termination-log"
            container.termination_file.parent.mkdir(parents=True, exist_ok=True)
            if not self.initialized and container.kind == "main":
                container.waiting_reason = "PodInitializing"
            self._adopt(container, previous.get(container.name))
        if any(c.ever_ran for c in self.containers if c.kind == "main"):
            self.initialized = True  # init containers finished under an earlier instance of this node
        log.info("pod %s: accepted, IP %s, sandbox %s", self.key, self.ip, self.sandbox)

    def _adopt(self, container: Container, previous: dict[str, Any] | None) -> None:
        """A container that ran under an earlier instance of this node: its process is gone."""
        if not previous:
            return
        state = previous.get("state") or {}
        if not (state.get("running") or state.get("terminated") or previous.get("restartCount")):
            return
        container.ever_ran = True
        container.restart_count = int(previous.get("restartCount") or 0)
        if state.get("terminated"):
            record = dict(state["terminated"])
        else:
            record = {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated",
                "startedAt": (state.get("running") or {}).get("startedAt") or rfc3339(),
                "finishedAt": rfc3339(),
            }
        if container.should_restart(int(record.get("exitCode", 137))):
            container.last_terminated = record
            container.waiting_reason = "ContainerCreating"
        else:
            container.terminated = record

    # --- one pass of the control loop ---
    def _step(self) -> None:
        now = time.monotonic()
        if not self.volumes_ready:
            self._prepare_volumes()
            if not self.volumes_ready:
                return
        for container in self.containers:
            self._poll(container, now)
        pod_done = self._main_done()
        if not self.initialized and not self.init_failed:
            self._step_init(now)
        if self.initialized and not self.init_failed:
            for container in self.containers:
                if container.kind == "main" or (container.kind == "sidecar" and not pod_done):
                    self._ensure(container, now)
        for container in self.containers:
            if container.running:
                self._run_probes(container, time.monotonic())
        self.phase = self._phase()
        if self.phase in TERMINAL_PHASES:
            for container in self.containers:
                if container.kind == "sidecar" and container.running and container.kill_deadline is None:
                    self._kill(container, self._grace(), "the pod's main containers finished")

    def _step_init(self, now: float) -> None:
        for container in self.containers:
            if container.kind == "main":
                continue
            if container.kind == "sidecar":
                self._ensure(container, now)
                if not (container.running and container.started):
                    return
                continue
            if container.succeeded:
                continue
            if container.terminated is not None:  # failed for good (restartPolicy Never)
                self.init_failed = True
                return
            self._ensure(container, now)
            return
        self.initialized = True
        for container in self.containers:
            if container.kind == "main" and container.waiting_reason == "PodInitializing":
                container.waiting_reason = "ContainerCreating"

    def _ensure(self, container: Container, now: float) -> None:
        """Start a container that should run: never started, or restarting after its back-off."""
        if container.running or container.terminated is not None:
            return
        if now < container.next_start:
            return
        self._start(container)

    def _main_done(self) -> bool:
        mains = [c for c in self.containers if c.kind == "main"]
        return bool(mains) and all(c.terminated is not None for c in mains)

    def _phase(self) -> str:
        """The kubelet's getPhase, from the main containers."""
        if self.init_failed:
            return "Failed"
        if not self.initialized:
            return "Pending"
        mains = [c for c in self.containers if c.kind == "main"]
        waiting = running = stopped = succeeded = 0
        for container in mains:
            if container.running:
                running += 1
            elif container.terminated is not None:
                stopped += 1
                if container.succeeded:
                    succeeded += 1
            elif container.last_terminated is not None:
                stopped += 1
            else:
                waiting += 1
        if waiting:
            return "Pending"
        if running:
            return "Running"
        if self.restart_policy == "Always":
            return "Running"
        if stopped == succeeded and all(c.terminated is not None for c in mains):
            return "Succeeded"
        if self.restart_policy == "Never":
            return "Failed"
        return "Running"

    # --- processes ---
    def _start(self, container: Container) -> None:
        now = time.monotonic()
        try:
            env, mounts = self._resolve_env(container)
        except ConfigError as error:
            if container.waiting_message != str(error):
                self._event("Failed", f"Error: {error}", "Warning", container)
            container.waiting_reason = "CreateContainerConfigError"
            container.waiting_message = str(error)
            container.next_start = now + 2.0
            return
        container.env = env
        container.mounts = mounts
        spec = container.spec
        lookup = env.get
        argv = [expand(part, lookup) for part in spec.get("command") or []]
        argv += [expand(part, lookup) for part in spec.get("args") or []]
        argv = [rewrite_argument(part, mounts) for part in argv]
        container.cwd = cwd = self._working_dir(spec.get("workingDir"), mounts)
        if container.ever_ran:
            container.restart_count += 1
        container.ever_ran = True
        container.terminated = None
        container.waiting_message = ""
        container.termination_file.write_text("")
        log_path = self.node.log_path(self.namespace, self.pod_name, container.name)
        container.log_start = log_path.stat().st_size if log_path.exists() else 0
        container.running_since = rfc3339()
        container.started_mono = now
        container.sigkilled = False
        container.kill_deadline = None
        container.oom_before = oom_kill_count()
        if not argv:
            self._start_failed(container, "no command: the process node cannot run an image's entrypoint")
            return
        try:
            with log_path.open("ab") as output:
                container.proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except FileNotFoundError as error:
            missing = argv[0] if error.filename in (None, argv[0]) else error.filename
            if Path(str(missing)).name == str(missing):
                detail = f'exec: "{missing}": executable file not found in $PATH'
            else:
                detail = f'exec: "{missing}": no such file or directory'
            self._start_failed(container, detail)
            return
        except OSError as error:
            self._start_failed(container, f'exec: "{argv[0]}": {error.strerror or error}')
            return
        container.pid = container.proc.pid
        for probe in container.probes.values():
            probe.successes = probe.failures = 0
            probe.reported = False
            probe.next_at = now + probe.setting("initialDelaySeconds", 0)
        container.started = "startup" not in container.probes
        container.ready = False
        log.info("pod %s: started %s (pid %d): %s", self.key, container.name, container.pid, argv)
        self._event("Started", f"Started container {container.name}", "Normal", container)

    def _working_dir(self, working_dir: str | None, mounts: Sequence[Mount]) -> str:
        """A volume's directory when workingDir is in one, the host directory when it exists here (e.g. the
        repository), else the sandbox (an image's directories do not exist on this machine)."""
        if not working_dir:
            return str(self.sandbox)
        mapped = rewrite_path(working_dir, mounts)
        if mapped != working_dir:
            Path(mapped).mkdir(parents=True, exist_ok=True)
            return mapped
        return working_dir if Path(working_dir).is_dir() else str(self.sandbox)

    def _start_failed(self, container: Container, detail: str) -> None:
        message = f"failed to start container {container.name!r}: {detail}"
        log.warning("pod %s: %s", self.key, message)
        self._event("Failed", f"Error: {message}", "Warning", container)
        record = {
            "exitCode": 128,
            "reason": "StartError",
            "message": message,
            "startedAt": "1970-01-01T00:00:00Z",
            "finishedAt": rfc3339(),
        }
        self._exited(container, record)

    def _poll(self, container: Container, now: float) -> None:
        proc = container.proc
        if proc is None:
            return
        returncode = proc.poll()
        if returncode is None:
            if (
                container.kill_deadline is not None
                and now >= container.kill_deadline
                and not container.sigkilled
            ):
                container.sigkilled = True
                signal_group(proc.pid, signal.SIGKILL)
                self._kill_strays(container, signal.SIGKILL)
            return
        # The container is its process group: what it left behind dies with it (as with a cgroup).
        signal_group(proc.pid, signal.SIGKILL)
        self._kill_strays(container, signal.SIGKILL)
        if returncode < 0:
            sig = -returncode
            exit_code = 128 + sig
        else:
            sig = 0
            exit_code = returncode
        if exit_code == 0:
            reason = "Completed"
        elif sig == signal.SIGKILL and not container.sigkilled and oom_kill_count() > container.oom_before:
            reason = "OOMKilled"
        else:
            reason = "Error"
        record: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": container.running_since,
            "finishedAt": rfc3339(),
            "containerID": f"process://{proc.pid}",
        }
        if sig:
            record["signal"] = sig
        message = self._termination_message(container, exit_code)
        if message:
            record["message"] = message
        container.proc = None
        log.info("pod %s: %s exited with %d (%s)", self.key, container.name, exit_code, reason)
        self._exited(container, record)

    def _exited(self, container: Container, record: dict[str, Any]) -> None:
        now = time.monotonic()
        container.proc = None
        container.ready = False
        container.started = False
        container.kill_deadline = None
        ran = now - container.started_mono if container.started_mono else 0.0
        stopping = self._gone or self._shutdown or bool(self.pod["metadata"].get("deletionTimestamp"))
        restart = (
            not stopping
            and container.should_restart(int(record["exitCode"]))
            and not (container.kind == "sidecar" and self._main_done())
        )
        if not restart:
            container.terminated = record
            return
        if ran > 600:
            container.backoff = 0.0
        delay = container.backoff
        container.backoff = min(
            max(container.backoff * 2, self.node.config.backoff_initial), self.node.config.backoff_max
        )
        container.last_terminated = record
        container.terminated = None
        container.next_start = now + delay
        if delay > 0:
            container.waiting_reason = "CrashLoopBackOff"
            container.waiting_message = (
                f"back-off {delay:.0f}s restarting failed container={container.name} "
                f"pod={self.pod_name}_{self.namespace}({self.uid})"
            )
            self._event("BackOff", "Back-off restarting failed container", "Warning", container)
        else:
            container.waiting_reason = "ContainerCreating"
            container.waiting_message = ""

    def _termination_message(self, container: Container, exit_code: int) -> str:
        try:
            with container.termination_file.open("rb") as handle:
                message = handle.read(MAX_TERMINATION_MESSAGE).decode(errors="replace")
        except OSError:
            message = ""
        policy = container.spec.get("terminationMessagePolicy") or "File"
        if not message and policy == "FallbackToLogsOnError" and exit_code != 0:
            log_path = self.node.log_path(self.namespace, self.pod_name, container.name)
            message = tail_text(log_path, container.log_start, FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES)
        return message

    def _kill(self, container: Container, grace: float, why: str) -> None:
        proc = container.proc
        if proc is None or container.kill_deadline is not None:
            return
        log.info("pod %s: stopping %s (%s), grace %.0fs", self.key, container.name, why, grace)
        self._event("Killing", f"Stopping container {container.name}: {why}", "Normal", container)
        container.kill_deadline = time.monotonic() + grace
        if grace <= 0:
            container.sigkilled = True
            signal_group(proc.pid, signal.SIGKILL)
            self._kill_strays(container, signal.SIGKILL)
        else:
            signal_group(proc.pid, signal.SIGTERM)

    def _kill_strays(self, container: Container | None, sig: int) -> None:
        """Processes of this pod (or container) that left its process group."""
        markers = {ENV_MARK_NODE: self.node.name, ENV_MARK_POD: self.uid}
        if container is not None:
            markers[ENV_MARK_CONTAINER] = container.name
        signal_pids(process_ids_with_env(markers), sig)

    def _kill_everything(self) -> None:
        for container in self.containers:
            if container.proc is not None:
                signal_group(container.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    container.proc.wait(timeout=5)
        self._kill_strays(None, signal.SIGKILL)

    def _grace(self) -> float:
        metadata = self.pod["metadata"]
        grace = metadata.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds")
        return float(30 if grace is None else grace)

    def _terminate(self, api: bool, node_shutdown: bool = False) -> None:
        """Stop every container (SIGTERM, grace period, SIGKILL); with ``api``: report the final status
        and, unless the node is shutting down, delete the pod object (grace 0) as the kubelet does."""
        grace = self._grace()
        if node_shutdown:
            grace = min(grace, self.node.config.shutdown_grace)
        if self._gone:
            grace = min(grace, 5.0)
        why = "node shutdown" if node_shutdown else ("pod deleted" if api else "pod object removed")
        for container in self.containers:
            self._kill(container, grace, why)
        deadline = time.monotonic() + grace + 10.0
        while any(c.running for c in self.containers) and time.monotonic() < deadline:
            for container in self.containers:
                self._poll(container, time.monotonic())
            time.sleep(0.05)
        self._kill_everything()
        for container in self.containers:
            self._poll(container, time.monotonic())
        if not api or self._gone:
            return
        if self.phase not in TERMINAL_PHASES:
            mains = [c for c in self.containers if c.kind == "main"]
            all_ok = bool(mains) and all(c.succeeded for c in mains)
            self.phase = "Succeeded" if all_ok and not node_shutdown else "Failed"
        if node_shutdown:
            self._extra_status = {"reason": "Terminated", "message": SHUTDOWN_MESSAGE}
            self._set_condition("DisruptionTarget", "True", "TerminationByKubelet", SHUTDOWN_MESSAGE)
        self._sync_status(force=True)
        if not node_shutdown:
            self._delete_object()

    def _delete_object(self) -> bool:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        try:
            self.node.api.call("DELETE", pod_path(self.namespace, self.pod_name), body)
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("pod %s: delete failed: %s", self.key, error.reason)
                return False
        except (urllib3.exceptions.HTTPError, OSError) as error:
            log.warning("pod %s: delete failed: %s", self.key, error)
            return False
        log.info("pod %s: deleted", self.key)
        return True

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        delay = 0.25 if any(c.running for c in self.containers) else 2.0
        for container in self.containers:
            if not container.running and container.terminated is None and container.next_start > now:
                delay = min(delay, container.next_start - now)
            if container.running:
                for probe in container.probes.values():
                    delay = min(delay, max(probe.next_at - now, 0.02))
        if not self.volumes_ready:
            delay = min(delay, 2.0)
        return max(delay, 0.02)

    # --- environment and volumes ---
    def _resolve_env(self, container: Container) -> tuple[dict[str, str], list[Mount]]:
        cfg = self.node.config
        spec = container.spec
        env: dict[str, str] = {
            "PATH": f"{cfg.venv_bin}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}",
            "HOSTNAME": self.pod["spec"].get("hostname") or self.pod_name,
            "HOME": str(self.sandbox / "home"),
            "TMPDIR": str(self.sandbox / "tmp"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "CUDA_VISIBLE_DEVICES": "",
            ENV_POD_IP: self.ip,
        }
        if (cfg.venv_bin.parent / "pyvenv.cfg").exists():
            env["VIRTUAL_ENV"] = str(cfg.venv_bin.parent)
        for name in cfg.pass_env:
            if name in os.environ:
                env[name] = os.environ[name]
        gpus = self._requested_gpus(container)
        if gpus:
            env[ENV_VIRTUAL_GPUS] = str(gpus)
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            for key, value in self._env_source(source).items():
                env[f"{prefix}{key}"] = value
        for var in spec.get("env") or []:
            name = var["name"]
            if "valueFrom" in var:
                resolved = self._value_from(var["valueFrom"], container)
                if resolved is None:
                    continue
                env[name] = resolved
            else:
                env[name] = expand(var.get("value") or "", env.get)
        env[ENV_SERVER_HOST] = self.ip
        env[ENV_TERMINATION_LOG] = str(container.termination_file)
        env[ENV_MARK_NODE] = self.node.name
        env[ENV_MARK_POD] = self.uid
        env[ENV_MARK_CONTAINER] = container.name
        mounts = self._mounts(container)
        fixed = {"PATH", "HOSTNAME", ENV_TERMINATION_LOG, ENV_MARK_NODE, ENV_MARK_POD, ENV_MARK_CONTAINER}
        for name, value in list(env.items()):
            if name not in fixed:
                env[name] = rewrite_path(value, mounts)
        return env, mounts

    def _requested_gpus(self, container: Container) -> int:
        resources = container.spec.get("resources") or {}
        amount = (resources.get("limits") or {}).get(GPU_RESOURCE) or (resources.get("requests") or {}).get(
            GPU_RESOURCE
        )
        return int(amount) if amount else 0

    def _mounts(self, container: Container) -> list[Mount]:
        mounts: list[Mount] = []
        for mount in container.spec.get("volumeMounts") or []:
            base = self.volumes.get(mount["name"])
            if base is None:
                continue
            host = base / mount["subPath"] if mount.get("subPath") else base
            if mount.get("subPath"):
                host.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(mount["mountPath"], host))
        path = container.spec.get("terminationMessagePath") or "/dev/termination-log"
        mounts.append(Mount(path, container.termination_file))
        mounts.sort(key=lambda m: len(m.container_path), reverse=True)
        return mounts

    def _read(self, kind: str, name: str) -> dict[str, Any] | None:
        """A Secret or ConfigMap (None: not found); other API errors are retried like missing data."""
        try:
            return self.node.api.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        except ApiException as error:
            raise ConfigError(f"cannot read {kind} {name}: {error.status} {error.reason}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ConfigError(f"cannot read {kind} {name}: {error}") from error

    def _object_data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """Data of a Secret (decoded) or ConfigMap; None when it is missing and optional."""
        obj = self._read("secrets" if kind == "Secret" else "configmaps", name)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        data: dict[str, str] = {}
        if kind == "Secret":
            for key, value in (obj.get("data") or {}).items():
                data[key] = base64.b64decode(value).decode(errors="replace")
            data.update(obj.get("stringData") or {})
        else:
            data.update(obj.get("data") or {})
            for key, value in (obj.get("binaryData") or {}).items():
                data[key] = base64.b64decode(value).decode(errors="replace")
        return data

    def _env_source(self, source: dict[str, Any]) -> dict[str, str]:
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = source.get(key)
            if ref:
                data = self._object_data(kind, ref["name"], bool(ref.get("optional")))
                return dict(data or {})
        return {}

    def _value_from(self, value_from: dict[str, Any], container: Container) -> str | None:
        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = value_from.get(key)
            if ref:
                optional = bool(ref.get("optional"))
                data = self._object_data(kind, ref["name"], optional)
                if data is None:
                    return None
                if ref["key"] not in data:
                    if optional:
                        return None
                    raise ConfigError(
                        f"couldn't find key {ref['key']} in {kind} {self.namespace}/{ref['name']}"
                    )
                return data[ref["key"]]
        if "fieldRef" in value_from:
            return self._field(value_from["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in value_from:
            return self._resource_field(value_from["resourceFieldRef"], container)
        raise ConfigError(f"unsupported valueFrom: {sorted(value_from)}")

    def _field(self, path: str) -> str:
        pod = self.pod
        metadata, spec = pod["metadata"], pod["spec"]
        for prefix, mapping in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
            if path.startswith(f"{prefix}['") and path.endswith("']"):
                key = path[len(prefix) + 2 : -2]
                return str((metadata.get(mapping) or {}).get(key, ""))
        simple = {
            "metadata.name": metadata.get("name"),
            "metadata.namespace": metadata.get("namespace"),
            "metadata.uid": metadata.get("uid"),
            "spec.nodeName": spec.get("nodeName"),
            "spec.serviceAccountName": spec.get("serviceAccountName"),
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
            "status.podIP": self.ip,
            "status.podIPs": self.ip,
        }
        if path in simple:
            return str(simple[path] or "")
        if path == "metadata.labels":
            return "\n".join(f'{k}="{v}"' for k, v in sorted((metadata.get("labels") or {}).items()))
        if path == "metadata.annotations":
            return "\n".join(f'{k}="{v}"' for k, v in sorted((metadata.get("annotations") or {}).items()))
        raise ConfigError(f"unsupported fieldRef {path!r}")

    def _resource_field(self, ref: dict[str, Any], container: Container) -> str:
        target = container.spec
        if ref.get("containerName"):
            target = next((c.spec for c in self.containers if c.name == ref["containerName"]), target)
        section, _, resource = str(ref["resource"]).partition(".")
        resources = target.get("resources") or {}
        amount = (resources.get(section) or {}).get(resource)
        if amount is None and section == "limits":
            amount = {"cpu": self.node.config.cpu, "memory": self.node.config.memory}.get(resource, "0")
        if amount is None:
            amount = (resources.get("limits") or {}).get(resource, "0")
        divisor = parse_quantity(ref.get("divisor") or "1")
        value = parse_quantity(amount) / (divisor if divisor else Decimal(1))
        return str(math.ceil(value))

    def _prepare_volumes(self) -> None:
        try:
            for volume in self.pod["spec"].get("volumes") or []:
                if volume["name"] not in self.volumes:
                    self.volumes[volume["name"]] = self._volume(volume)
        except (ConfigError, ApiException, OSError) as error:
            message = str(error) if not isinstance(error, ApiException) else f"{error.status} {error.reason}"
            if message != self.volume_error:
                self.volume_error = message
                self._event("FailedMount", f"MountVolume.SetUp failed: {message}", "Warning", None)
            for container in self.containers:
                container.waiting_message = f"volume setup failed: {message}"
            return
        self.volumes_ready = True
        for container in self.containers:
            container.waiting_message = ""

    def _volume(self, volume: dict[str, Any]) -> Path:
        name = str(volume["name"])
        directory: Path = self.sandbox / "volumes" / name
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            path: Path = self.node.root / "pvc" / self.namespace / str(claim)
            path.mkdir(parents=True, exist_ok=True)
            return path
        if "ephemeral" in volume:
            path = self.node.root / "pvc" / self.namespace / f"{self.pod_name}-{name}"
            path.mkdir(parents=True, exist_ok=True)
            return path
        if "hostPath" in volume:
            path = Path(str(volume["hostPath"]["path"]))
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            return path
        directory.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume or "secret" in volume:
            kind = "ConfigMap" if "configMap" in volume else "Secret"
            source = volume["configMap"] if kind == "ConfigMap" else volume["secret"]
            ref_name = source.get("name") or source.get("secretName") or ""
            data = self._object_data(kind, ref_name, bool(source.get("optional")))
            self._write_items(directory, data or {}, source.get("items"))
        elif "downwardAPI" in volume:
            self._write_downward(directory, volume["downwardAPI"].get("items") or [])
        elif "projected" in volume:
            for source in volume["projected"].get("sources") or []:
                self._project(directory, source)
        elif "emptyDir" not in volume:
            log.warning("pod %s: volume %s of an unsupported type is an empty directory", self.key, name)
        return directory

    def _write_items(
        self, directory: Path, data: Mapping[str, str], items: list[dict[str, Any]] | None
    ) -> None:
        selected = [(item["key"], item["path"]) for item in items] if items else [(k, k) for k in data]
        for key, relative in selected:
            if key not in data:
                continue
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[key])

    def _write_downward(self, directory: Path, items: list[dict[str, Any]]) -> None:
        for item in items:
            if "fieldRef" in item:
                value = self._field(item["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in item:
                main = next(c for c in self.containers if c.kind == "main")
                value = self._resource_field(item["resourceFieldRef"], main)
            else:
                continue
            target = directory / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(value)

    def _project(self, directory: Path, source: dict[str, Any]) -> None:
        if "configMap" in source or "secret" in source:
            kind = "ConfigMap" if "configMap" in source else "Secret"
            ref = source["configMap"] if kind == "ConfigMap" else source["secret"]
            data = self._object_data(kind, ref.get("name", ""), bool(ref.get("optional")))
            self._write_items(directory, data or {}, ref.get("items"))
        elif "downwardAPI" in source:
            self._write_downward(directory, source["downwardAPI"].get("items") or [])
        elif "serviceAccountToken" in source:
            token_spec = source["serviceAccountToken"]
            account = self.pod["spec"].get("serviceAccountName") or "default"
            request: dict[str, Any] = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "expirationSeconds": int(token_spec.get("expirationSeconds") or 3607),
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": self.pod_name,
                        "uid": self.uid,
                    },
                },
            }
            if token_spec.get("audience"):
                request["spec"]["audiences"] = [token_spec["audience"]]
            try:
                answer = self.node.api.call(
                    "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token", request
                )
                (directory / token_spec["path"]).write_text(answer["status"]["token"])
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
                log.warning("pod %s: no service account token: %s", self.key, error)

    # --- probes ---
    def _run_probes(self, container: Container, now: float) -> None:
        if container.kill_deadline is not None:
            return
        startup = container.probes.get("startup")
        if startup is not None and not container.started:
            if now >= startup.next_at:
                ok, message = self._probe_once(container, startup)
                startup.next_at = time.monotonic() + startup.setting("periodSeconds", 10)
                if self._count(startup, ok):
                    container.started = True
                elif startup.failures >= startup.setting("failureThreshold", 3):
                    self._unhealthy(container, "Startup", message, restart=True)
            return
        container.started = True
        liveness = container.probes.get("liveness")
        if liveness is not None and now >= liveness.next_at:
            ok, message = self._probe_once(container, liveness)
            liveness.next_at = time.monotonic() + liveness.setting("periodSeconds", 10)
            self._count(liveness, ok)
            if not ok and liveness.failures >= liveness.setting("failureThreshold", 3):
                self._unhealthy(container, "Liveness", message, restart=True, probe=liveness)
                return
        readiness = container.probes.get("readiness")
        if readiness is None:
            container.ready = True
        elif now >= readiness.next_at:
            ok, message = self._probe_once(container, readiness)
            readiness.next_at = time.monotonic() + readiness.setting("periodSeconds", 10)
            self._count(readiness, ok)
            if ok and readiness.successes >= readiness.setting("successThreshold", 1):
                container.ready = True
                readiness.reported = False
            elif not ok and readiness.failures >= readiness.setting("failureThreshold", 3):
                if container.ready or not readiness.reported:
                    self._event("Unhealthy", f"Readiness probe failed: {message}", "Warning", container)
                    readiness.reported = True
                container.ready = False

    @staticmethod
    def _count(probe: ProbeState, ok: bool) -> bool:
        if ok:
            probe.successes += 1
            probe.failures = 0
        else:
            probe.failures += 1
            probe.successes = 0
        return ok

    def _unhealthy(
        self, container: Container, kind: str, message: str, restart: bool, probe: ProbeState | None = None
    ) -> None:
        self._event("Unhealthy", f"{kind} probe failed: {message}", "Warning", container)
        if restart:
            grace = self._grace()
            if probe is not None and probe.spec.get("terminationGracePeriodSeconds") is not None:
                grace = float(probe.spec["terminationGracePeriodSeconds"])
            self._kill(container, grace, f"failed {kind.lower()} probe, will be restarted")

    def _port(self, container: Container, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for declared in container.spec.get("ports") or []:
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise ValueError(f"no port named {port!r}")

    def _probe_once(self, container: Container, probe: ProbeState) -> tuple[bool, str]:
        spec = probe.spec
        timeout = float(spec.get("timeoutSeconds") or 1)
        try:
            if "httpGet" in spec:
                return self._http_probe(container, spec["httpGet"], timeout)
            if "tcpSocket" in spec or "grpc" in spec:
                target = spec.get("tcpSocket") or spec["grpc"]
                host = target.get("host") or self.ip
                port = self._port(container, target["port"])
                with socket.create_connection((host, port), timeout=timeout):
                    return True, ""
            if "exec" in spec:
                argv = [
                    rewrite_argument(part, container.mounts) for part in spec["exec"].get("command") or []
                ]
                result = subprocess.run(
                    argv,
                    env=container.env,
                    cwd=container.cwd,
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
                output = (result.stdout + result.stderr).decode(errors="replace").strip()
                return result.returncode == 0, output or f"command exited with {result.returncode}"
        except subprocess.TimeoutExpired:
            return False, f"command timed out after {timeout:.0f}s"
        except (OSError, ValueError) as error:
            return False, str(error)
        return True, ""

    def _http_probe(self, container: Container, spec: dict[str, Any], timeout: float) -> tuple[bool, str]:
        host = spec.get("host") or self.ip
        port = self._port(container, spec["port"])
        path = spec.get("path") or "/"
        scheme = (spec.get("scheme") or "HTTP").upper()
        headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
        headers.setdefault("User-Agent", f"kube-probe/{KUBE_VERSION.lstrip('v').rsplit('.', 1)[0]}")
        connection: http.client.HTTPConnection
        if scheme == "HTTPS":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        url = f"{scheme.lower()}://{host}:{port}{path}"
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read(10240)
        except (OSError, http.client.HTTPException) as error:
            return False, f'Get "{url}": {error}'
        finally:
            connection.close()
        if 200 <= response.status < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {response.status}"

    # --- status ---
    def _set_condition(self, kind: str, status: str, reason: str = "", message: str = "") -> None:
        previous = self._conditions.get(kind)
        if previous is None or previous[0] != status:
            self._condition_times[kind] = rfc3339()
        self._conditions[kind] = (status, f"{reason}\0{message}")

    def _conditions_now(self) -> None:
        pod = self.pod
        existing = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
        if "PodScheduled" not in existing and "PodScheduled" not in self._conditions:
            self._set_condition("PodScheduled", "True")
        self._set_condition("PodReadyToStartContainers", "True")
        pending_init = [
            c.name for c in self.containers if c.kind != "main" and not (c.succeeded or c.started)
        ]
        if self.initialized:
            self._set_condition("Initialized", "True")
        else:
            self._set_condition(
                "Initialized",
                "False",
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_init)}]",
            )
        if self.phase in TERMINAL_PHASES:
            reason = "PodCompleted" if self.phase == "Succeeded" else "PodFailed"
            self._set_condition("ContainersReady", "False", reason)
            self._set_condition("Ready", "False", reason)
            return
        counted = [c for c in self.containers if c.kind in ("main", "sidecar")]
        unready = [c.name for c in counted if not (c.running and c.ready)]
        if unready:
            message = f"containers with unready status: [{' '.join(unready)}]"
            self._set_condition("ContainersReady", "False", "ContainersNotReady", message)
            self._set_condition("Ready", "False", "ContainersNotReady", message)
            return
        self._set_condition("ContainersReady", "True")
        gates = [g["conditionType"] for g in pod["spec"].get("readinessGates") or []]
        missing = [g for g in gates if (existing.get(g) or {}).get("status") != "True"]
        if missing:
            self._set_condition(
                "Ready",
                "False",
                "ReadinessGatesNotReady",
                f'corresponding condition of pod readiness gate "{missing[0]}" does not exist.',
            )
        else:
            self._set_condition("Ready", "True")

    def _status(self) -> dict[str, Any]:
        self._conditions_now()
        conditions = []
        for kind, (value, detail) in self._conditions.items():
            reason, _, message = detail.partition("\0")
            conditions.append(
                {
                    "type": kind,
                    "status": value,
                    "reason": reason or None,
                    "message": message or None,
                    "lastProbeTime": None,
                    "lastTransitionTime": self._condition_times[kind],
                }
            )
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"$patch": "replace"}, {"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"$patch": "replace"}, {"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": conditions,
            # Lists without a merge key: a strategic merge patch replaces them whole.
            "containerStatuses": [c.status() for c in self.containers if c.kind == "main"],
        }
        inits = [c.status() for c in self.containers if c.kind != "main"]
        if inits:
            status["initContainerStatuses"] = inits
        status.update(self._extra_status)
        return status

    def _sync_status(self, force: bool = False) -> None:
        if self._gone:
            return
        now = time.monotonic()
        if now < self._status_retry_at and not force:
            return
        status = self._status()
        text = json.dumps(status, sort_keys=True)
        if text == self._last_status:
            return
        try:
            self.node.api.patch(pod_path(self.namespace, self.pod_name) + "/status", {"status": status})
        except ApiException as error:
            if error.status == 404:
                self._gone = True
                return
            log.warning(
                "pod %s: status patch failed: %s %s %s", self.key, error.status, error.reason, error.body
            )
            self._status_retry_at = now + 1.0
            return
        except (urllib3.exceptions.HTTPError, OSError) as error:
            log.warning("pod %s: status patch failed: %s", self.key, error)
            self._status_retry_at = now + 1.0
            return
        self._last_status = text

    def _event(self, reason: str, message: str, kind: str, container: Container | None) -> None:
        involved: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": self.pod_name,
            "namespace": self.namespace,
            "uid": self.uid,
        }
        if container is not None:
            section = "containers" if container.kind == "main" else "initContainers"
            involved["fieldPath"] = f"spec.{section}{{{container.name}}}"
        now = rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{self.pod_name}.", "namespace": self.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.node.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node.name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.node.api.call("POST", f"/api/v1/namespaces/{self.namespace}/events", body, timeout=5)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            log.debug("pod %s: event %s not recorded: %s", self.key, reason, error)


# -------------------------------------------------------------------------------------------- the node


class ProcessNode:
    """The node: registration, heartbeats, the pod watch and one ``PodWorker`` per pod."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.name = config.name
        self.root = config.root
        self.api = Api(config.kubeconfig)
        self.ips: IpPool = IpPool(ipaddress.IPv4Network("127.1.0.0/16"))
        self.node_uid = ""
        self._workers: dict[str, PodWorker] = {}
        self._workers_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: watch.Watch | None = None
        self._log_server: LogServer | None = None
        self._started = False
        self._pruned = False

    # --- public API ---
    def start(self) -> ProcessNode:
        """Register the node and start its threads; returns once the node is registered and Ready."""
        if self._started:
            return self
        self._started = True
        for sub in ("logs", "pods", "pvc"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        orphans = process_ids_with_env({ENV_MARK_NODE: self.name})
        if orphans:
            log.warning(
                "killing %d processes left by an earlier run of %s: %s", len(orphans), self.name, orphans
            )
            signal_pids(orphans, signal.SIGKILL)
        network = choose_pod_network(self.name, self.config.pod_cidr)
        self.ips = IpPool(network)
        if self.config.log_server:
            try:
                self._log_server = LogServer(self)
            except Exception as error:  # the node works without it; kubectl logs does not
                log.warning("no log server (kubectl logs will not work): %s", error)
        self._register()
        self._renew_lease()
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._watch_loop, "pod-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._log_server is not None:
            self._threads.append(self._log_server.start())
        log.info(
            "node %s is Ready: pods from %s, state in %s, kubectl logs via port %s",
            self.name,
            network,
            self.root,
            self._log_server.port if self._log_server else "-",
        )
        return self

    def stop(self, delete_node: bool | None = None) -> None:
        """Stop every pod's processes (pods are marked Failed, as on a node shutdown), then the node."""
        if self._stopping.is_set():
            self._stopped.wait(60)
            return
        self._stopping.set()
        log.info("node %s: shutting down", self.name)
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]
        with self._workers_lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.shutdown()
        for worker in workers:
            worker.join(timeout=self.config.shutdown_grace + 20)
        leftovers = process_ids_with_env({ENV_MARK_NODE: self.name})
        if leftovers:
            log.warning("node %s: killing %d leftover processes", self.name, len(leftovers))
            signal_pids(leftovers, signal.SIGKILL)
        if self._log_server is not None:
            self._log_server.stop()
        delete = self.config.delete_node_on_exit if delete_node is None else delete_node
        try:
            if delete:
                self.api.call("DELETE", f"/api/v1/nodes/{self.name}")
                log.info("node %s: deleted", self.name)
            else:
                self.api.patch(
                    f"/api/v1/nodes/{self.name}/status",
                    {
                        "status": {
                            "conditions": [
                                self._ready_condition("False", "KubeletNotReady", "process node stopped")
                            ]
                        }
                    },
                )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            log.warning("node %s: final update failed: %s", self.name, error)
        for thread in self._threads:
            thread.join(timeout=5)
        self.api.close()
        self._stopped.set()
        log.info("node %s: stopped", self.name)

    def wait(self) -> None:
        """Block until ``stop()`` has finished."""
        while not self._stopped.wait(0.5):
            pass

    def log_path(self, namespace: str, pod: str, container: str) -> Path:
        return self.root / "logs" / log_file_name(namespace, pod, container)

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        return self.ips.network

    def pod_uids(self) -> list[str]:
        with self._workers_lock:
            return list(self._workers)

    # --- registration and heartbeats ---
    def _labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "process",
            NODE_KIND_LABEL: "process",
            "node.kubernetes.io/instance-type": "process",
        }
        if self.config.gpus:
            labels[VIRTUAL_GPU_LABEL] = "true"
            labels[GPU_PRODUCT_LABEL] = VIRTUAL_GPU_PRODUCT
            labels[GPU_COUNT_LABEL] = str(self.config.gpus)
        labels.update(self.config.labels)
        return labels

    def _ready_condition(self, status: str, reason: str, message: str) -> dict[str, str]:
        now = rfc3339()
        return {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    def _node_status(self, transition: bool) -> dict[str, Any]:
        capacity = {
            "cpu": self.config.cpu,
            "memory": self.config.memory,
            "pods": str(self.config.pods),
            "ephemeral-storage": "100Gi",
        }
        if self.config.gpus:
            capacity[GPU_RESOURCE] = str(self.config.gpus)
        now = rfc3339()
        conditions = []
        for kind, status, reason, message in (
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "process node is posting ready status"),
        ):
            condition = {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
            }
            if transition:
                condition["lastTransitionTime"] = now
            conditions.append(condition)
        uname = os.uname()
        return {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {
                "kubeletEndpoint": {"Port": self._log_server.port if self._log_server else 0}
            },
            "nodeInfo": {
                "machineID": hashlib.sha256(self.name.encode()).hexdigest()[:32],
                "systemUUID": hashlib.sha256(f"uuid-{self.name}".encode()).hexdigest()[:32],
                "bootID": hashlib.sha256(f"{self.name}-{os.getpid()}".encode()).hexdigest()[:32],
                "kernelVersion": uname.release,
                "osImage": f"process node on {uname.sysname}",
                "containerRuntimeVersion": "process://0.1.0",
                "kubeletVersion": f"{KUBE_VERSION}-process",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def _register(self) -> None:
        annotations = {
            POD_CIDR_ANNOTATION: str(self.ips.network),
            STATE_DIR_ANNOTATION: str(self.root),
            "node.alpha.kubernetes.io/ttl": "0",
        }
        manifest = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self._labels(), "annotations": annotations},
            "spec": {"taints": self.config.taints} if self.config.taints else {},
            "status": self._node_status(transition=True),
        }
        try:
            created = self.api.call("POST", "/api/v1/nodes", manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            existing = self.api.get(f"/api/v1/nodes/{self.name}") or {}
            if "kwok.x-k8s.io/node" in ((existing.get("metadata") or {}).get("annotations") or {}):
                raise RuntimeError(f"node {self.name} is a kwok node; pick another --name") from error
            ours = {t["key"] for t in self.config.taints}
            kept = [t for t in (existing.get("spec") or {}).get("taints") or [] if t["key"] not in ours]
            self.api.patch(
                f"/api/v1/nodes/{self.name}",
                {
                    "metadata": {"labels": self._labels(), "annotations": annotations},
                    "spec": {"taints": kept + list(self.config.taints) or None},
                },
                strategic=False,
            )
            created = self.api.patch(f"/api/v1/nodes/{self.name}/status", {"status": self._node_status(True)})
        self.node_uid = created["metadata"]["uid"]

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": self.config.lease_duration_seconds,
            "renewTime": micro_time(),
        }
        try:
            self.api.patch(path, {"spec": spec}, strategic=False)
        except ApiException as error:
            if error.status != 404:
                raise
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.node_uid}
                    ],
                },
                "spec": spec,
            }
            self.api.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)

    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self._stopping.wait(self.config.renew_interval):
            try:
                self._renew_lease()
                if time.monotonic() - last_status >= self.config.status_interval:
                    self.api.patch(f"/api/v1/nodes/{self.name}/status", {"status": self._node_status(False)})
                    last_status = time.monotonic()
            except ApiException as error:
                if error.status == 404 and "nodes" in str(error.body):
                    log.warning("node %s was deleted; registering it again", self.name)
                    with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError, OSError):
                        self._register()
                else:
                    log.warning("heartbeat failed: %s %s", error.status, error.reason)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                log.warning("heartbeat failed: %s", error)

    # --- the pod watch ---
    def _watch_loop(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                version = self._relist()
                delay = 0.5
                while not self._stopping.is_set():
                    version = self._watch_from(version)
            except ApiException as error:
                if error.status == 410:
                    log.info("pod watch expired (410 Gone): listing again")
                    continue
                if self._stopping.is_set():
                    return
                log.warning("pod watch failed: %s %s; retrying in %.1fs", error.status, error.reason, delay)
            except Exception as error:
                if self._stopping.is_set():
                    return
                log.warning("pod watch failed: %r; retrying in %.1fs", error, delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, 10.0)

    def _field_selector(self) -> str:
        return f"spec.nodeName={self.name}"

    def _relist(self) -> str:
        listing = self.api.call("GET", "/api/v1/pods", query=[("fieldSelector", self._field_selector())])
        seen = set()
        for pod in listing.get("items") or []:
            seen.add(pod["metadata"]["uid"])
            self._on_pod(pod)
        if not self._pruned:
            self._pruned = True
            self._prune_sandboxes(seen)
        with self._workers_lock:
            missing = [worker for uid, worker in self._workers.items() if uid not in seen]
        for worker in missing:
            worker.gone()
        version: str = listing["metadata"]["resourceVersion"]
        return version

    def _watch_from(self, version: str) -> str:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        self._watch = stream
        if self._stopping.is_set():
            return version
        for event in stream.stream(  # type: ignore[no-untyped-call]
            self.api.core.list_pod_for_all_namespaces,
            field_selector=self._field_selector(),
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=240,
            _request_timeout=(10, 270),
        ):
            obj = event["raw_object"]
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if event["type"] in ("ADDED", "MODIFIED"):
                self._on_pod(obj)
            elif event["type"] == "DELETED":
                with self._workers_lock:
                    worker = self._workers.get(obj["metadata"]["uid"])
                if worker is not None:
                    worker.gone()
            if self._stopping.is_set():
                break
        return version

    def _prune_sandboxes(self, existing: set[str]) -> None:
        """Sandboxes of pods deleted while this node was not running."""
        if self.config.keep_sandboxes:
            return
        for sandbox in (self.root / "pods").iterdir():
            if sandbox.name.rsplit("_", 1)[-1] not in existing:
                shutil.rmtree(sandbox, ignore_errors=True)

    def _on_pod(self, pod: dict[str, Any]) -> None:
        if pod.get("spec", {}).get("nodeName") != self.name or self._stopping.is_set():
            return  # never run a pod bound elsewhere
        uid = pod["metadata"]["uid"]
        with self._workers_lock:
            worker = self._workers.get(uid)
            if worker is None:
                worker = PodWorker(self, pod)
                self._workers[uid] = worker
                worker.start()
                return
        worker.update(pod)

    def _forget(self, worker: PodWorker) -> None:
        with self._workers_lock:
            if self._workers.get(worker.uid) is worker:
                del self._workers[worker.uid]


# ------------------------------------------------------------------------------------ kubectl logs


class LogServer:
    """The kubelet's ``/containerLogs/<ns>/<pod>/<container>`` endpoint (HTTPS, self-signed), so that
    ``kubectl logs [-f] [--tail N] [--previous]`` works for pods of this node. ``--previous`` shows the
    whole file (logs of every run are appended to it)."""

    def __init__(self, node: ProcessNode) -> None:
        self.node = node
        cert, key = self._certificate(node.root / "pki")
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.server = server
        self.port: int = server.server_address[1]

    @staticmethod
    def _certificate(directory: Path) -> tuple[Path, Path]:
        cert, key = directory / "kubelet.crt", directory / "kubelet.key"
        if cert.exists() and key.exists():
            return cert, key
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        directory.mkdir(parents=True, exist_ok=True)
        private = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "process-node")])
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
                critical=False,
            )
            .sign(private, hashes.SHA256())
        )
        key.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key.chmod(0o600)
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cert, key

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        node = self.node

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("log server: " + format, *args)

            def do_GET(self) -> None:
                parsed = urllib.parse.urlparse(self.path)
                parts = parsed.path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404, "only /containerLogs/<namespace>/<pod>/<container> is served")
                    return
                query = urllib.parse.parse_qs(parsed.query)
                path = node.log_path(parts[1], parts[2], parts[3])
                if not path.exists():
                    self.send_error(404, f"no log for container {parts[3]} of pod {parts[1]}/{parts[2]}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                data = path.read_bytes()
                tail = query.get("tailLines", [""])[0]
                if tail.isdigit():
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-int(tail) :]) if int(tail) else b""
                limit = query.get("limitBytes", [""])[0]
                if limit.isdigit():
                    data = data[: int(limit)]
                self.wfile.write(data)
                self.wfile.flush()
                if query.get("follow", ["false"])[0] != "true":
                    return
                offset = path.stat().st_size
                while not node._stopping.is_set():
                    time.sleep(0.5)
                    try:
                        size = path.stat().st_size
                    except OSError:
                        return
                    if size > offset:
                        with path.open("rb") as handle:
                            handle.seek(offset)
                            chunk = handle.read(size - offset)
                        offset = size
                        try:
                            self.wfile.write(chunk)
                            self.wfile.flush()
                        except OSError:
                            return

        return Handler

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.server.serve_forever, name="log-server", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------------------------- CLI


def _parse_taint(text: str) -> dict[str, str]:
    """``key[=value]:Effect``."""
    body, _, effect = text.rpartition(":")
    if not body or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise argparse.ArgumentTypeError(
            f"taint {text!r} is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute"
        )
    key, _, value = body.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def _parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"label {text!r} is not key=value")
    return key, value


def _default_kubeconfig() -> str:
    base = Path(os.environ.get("MLOPS_CLUSTER_DIR", REPO_ROOT / ".cluster"))
    return os.environ.get("KUBECONFIG") or str(base / "kubeconfig")


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="process-node",
        description="Run pods bound to this node as local processes (a development kubelet).",
    )
    parser.add_argument(
        "--kubeconfig", default=_default_kubeconfig(), help="default: $KUBECONFIG or .cluster/kubeconfig"
    )
    parser.add_argument("--name", default="process-node-0", help="the Node's name (default: %(default)s)")
    parser.add_argument(
        "--state-dir", type=Path, help="sandboxes, logs, PVCs (default: .cluster/process-nodes/NAME)"
    )
    parser.add_argument("--cpu", default="2", help="allocatable CPU (not enforced)")
    parser.add_argument("--memory", default="8Gi", help="allocatable memory (not enforced)")
    parser.add_argument(
        "--gpus", type=int, default=0, help="virtual nvidia.com/gpu to advertise (they run on CPU)"
    )
    parser.add_argument("--pods", type=int, default=20, help="allocatable pods")
    parser.add_argument(
        "--pod-cidr", help="pod IPs (default: a /24 of 198.19.0.0/16 on a local route, else 127.N/16)"
    )
    parser.add_argument(
        "--label", action="append", type=_parse_label, default=[], help="extra node label k=v"
    )
    parser.add_argument(
        "--taint", action="append", type=_parse_taint, default=[], help="node taint k[=v]:Effect"
    )
    parser.add_argument(
        "--venv", type=Path, help="virtualenv whose bin/ goes first on PATH (default: this Python's)"
    )
    parser.add_argument("--pass-env", action="append", default=[], help="pass this variable on to containers")
    parser.add_argument("--backoff-initial", type=float, default=10.0, help="crash-loop back-off start (s)")
    parser.add_argument("--backoff-max", type=float, default=300.0, help="crash-loop back-off cap (s)")
    parser.add_argument(
        "--shutdown-grace", type=float, default=10.0, help="max grace for pods on shutdown (s)"
    )
    parser.add_argument(
        "--keep-node", action="store_true", help="on exit, keep the Node (NotReady) instead of deleting it"
    )
    parser.add_argument(
        "--keep-sandboxes", action="store_true", help="keep pod sandboxes after pods are deleted"
    )
    parser.add_argument("--no-log-server", action="store_true", help="do not serve kubectl logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _logs_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="process-node logs", description="Print a container's log file.")
    parser.add_argument("--name", default="process-node-0", help="node name (for the default state dir)")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("pod", help="NAMESPACE/POD (or POD with -n)")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("-c", "--container", help="container (default: the only one)")
    parser.add_argument("-f", "--follow", action="store_true")
    parser.add_argument("--tail", type=int, default=-1)
    return parser


def logs_main(argv: Sequence[str]) -> int:
    args = _logs_parser().parse_args(argv)
    root = NodeConfig(kubeconfig="", name=args.name, state_dir=args.state_dir).root / "logs"
    namespace, _, pod = args.pod.rpartition("/")
    namespace = namespace or args.namespace
    prefix = f"{namespace}_{pod}_"
    candidates = sorted(root.glob(f"{prefix}*.log"))
    if args.container:
        candidates = [root / log_file_name(namespace, pod, args.container)]
    if len(candidates) != 1 or not candidates[0].exists():
        names = [p.name[len(prefix) : -4] for p in sorted(root.glob(f"{prefix}*.log"))]
        print(
            f"pick a container of {namespace}/{pod} with -c: {names or 'no logs in ' + str(root)}",
            file=sys.stderr,
        )
        return 1
    path = candidates[0]
    data = path.read_bytes()
    if args.tail >= 0:
        data = b"".join(data.splitlines(keepends=True)[-args.tail :]) if args.tail else b""
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    offset = path.stat().st_size
    while args.follow:
        time.sleep(0.5)
        size = path.stat().st_size
        if size > offset:
            with path.open("rb") as handle:
                handle.seek(offset)
                sys.stdout.buffer.write(handle.read(size - offset))
                sys.stdout.flush()
            offset = size
    return 0


def run_main(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("kubernetes").setLevel(logging.WARNING)
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    node_config = NodeConfig(
        kubeconfig=args.kubeconfig,
        name=args.name,
        state_dir=args.state_dir,
        cpu=args.cpu,
        memory=args.memory,
        gpus=args.gpus,
        pods=args.pods,
        pod_cidr=args.pod_cidr,
        labels=dict(args.label),
        taints=list(args.taint),
        venv=args.venv,
        pass_env=list(args.pass_env),
        backoff_initial=args.backoff_initial,
        backoff_max=args.backoff_max,
        shutdown_grace=args.shutdown_grace,
        delete_node_on_exit=not args.keep_node,
        keep_sandboxes=args.keep_sandboxes,
        log_server=not args.no_log_server,
    )
    node = ProcessNode(node_config)
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop_requested.is_set():
            log.warning("second signal: killing every process of %s now", node.name)
            signal_pids(process_ids_with_env({ENV_MARK_NODE: node.name}), signal.SIGKILL)
            os._exit(1)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        node.start()
    except Exception as error:
        log.error("node %s could not start: %s", node.name, error)
        node.stop()
        return 1
    print(f"process node {node.name} is ready (state: {node.root})", flush=True)
    while not stop_requested.wait(1.0):
        pass
    node.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] == "logs":
        return logs_main(arguments[1:])
    if arguments and arguments[0] == "run":
        arguments = arguments[1:]
    return run_main(arguments)


if __name__ == "__main__":
    sys.exit(main())
