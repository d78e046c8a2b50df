"""A real local Kubernetes control plane for development and tests, with no container runtime.

Runs upstream etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built from Go modules by
``hack/build-tools.sh``) plus kwok, which plays the kubelet for fake nodes: two GPU nodes
(``nvidia.com/gpu: 8``, GPU product label, GPU taint) and one CPU-only node. kwok stages
(``hack/kwok/stages.yaml``) make pods Running, complete Job pods, fail pods on request and finish deletions.

Everything lives in one state directory (default ``<repo>/.cluster``, or ``$MLOPS_CLUSTER_DIR``): PKI,
kubeconfigs, etcd data, logs and pid files. ``down`` stops exactly the processes ``up`` started.

CLI: ``python hack/local_cluster.py up|down|status|kubeconfig|env|logs COMPONENT|restart COMPONENT``
(``restart apiserver|etcd|...``: same ports, same state; etcd keeps its data; for fault tests)
(``hack/local-cluster.sh`` is the same thing).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HACK_DIR = REPO_ROOT / "hack"
DEFAULT_STATE_DIR = REPO_ROOT / ".cluster"

#: Start order; ``down`` stops them in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_TAINT_KEY = "nvidia.com/gpu"


class ClusterError(RuntimeError):
    """The local control plane could not be built, started or reached; the message says why."""


@dataclass(frozen=True)
class FakeNode:
    """One kwok-managed node: what the scheduler sees and places pods on."""

    name: str
    cpu: str
    memory: str
    gpus: int = 0
    gpu_product: str | None = None
    pods: str = "110"

    def manifest(self) -> dict[str, Any]:
        labels = {
            "type": "kwok",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": self.name,
            "node.kubernetes.io/instance-type": "gpu" if self.gpus else "cpu",
        }
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods, "ephemeral-storage": "500Gi"}
        taints: list[dict[str, str]] = []
        if self.gpus:
            capacity[GPU_RESOURCE] = str(self.gpus)
            labels[GPU_PRODUCT_LABEL] = self.gpu_product or "NVIDIA-GPU"
            labels["nvidia.com/gpu.count"] = str(self.gpus)
            taints.append({"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"})
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "annotations": {FAKE_NODE_ANNOTATION: "fake"}, "labels": labels},
            "spec": {"taints": taints} if taints else {},
            "status": {"capacity": capacity, "allocatable": dict(capacity)},
        }


DEFAULT_NODES = (
    FakeNode("gpu-node-0", cpu="64", memory="512Gi", gpus=8, gpu_product="NVIDIA-H100-80GB-HBM3"),
    FakeNode("gpu-node-1", cpu="64", memory="512Gi", gpus=8, gpu_product="NVIDIA-A100-SXM4-80GB"),
    FakeNode("cpu-node-0", cpu="32", memory="128Gi"),
)


@dataclass
class ClusterInfo:
    """What ``up`` recorded in ``cluster.json``: ports and binaries of the running control plane."""

    state_dir: str
    kubeconfig: str
    apiserver_port: int
    etcd_port: int
    etcd_peer_port: int
    controller_manager_port: int
    scheduler_port: int
    kwok_port: int
    binaries: dict[str, str]
    kube_version: str

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"


# --------------------------------------------------------------------------------------------- paths


class StateDir:
    """Named locations inside the state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pki = root / "pki"
        self.logs = root / "logs"
        self.pids = root / "pids"
        self.etcd_data = root / "etcd-data"
        self.info = root / "cluster.json"
        self.kubeconfig = root / "kubeconfig"
        self.lock = root / ".lock"
        self.bin = root / "bin"

    def pid_file(self, component: str) -> Path:
        return self.pids / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"


def state_dir_from_env() -> StateDir:
    return StateDir(Path(os.environ.get("MLOPS_CLUSTER_DIR", DEFAULT_STATE_DIR)).resolve())


@contextlib.contextmanager
def locked(state: StateDir) -> Iterator[None]:
    """Serialise up/down across processes (e.g. two pytest sessions starting at once)."""
    state.root.mkdir(parents=True, exist_ok=True)
    with state.lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------- binaries


def build_tools() -> dict[str, str]:
    """Build (or find cached) binaries; returns name -> absolute path."""
    result = subprocess.run(
        ["bash", str(HACK_DIR / "build-tools.sh"), "--print"],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(
            f"hack/build-tools.sh failed with exit code {result.returncode} (see its output above)"
        )
    binaries = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
    for name in (*COMPONENTS, "kubectl"):
        if not Path(binaries.get(name, "")).is_file():
            raise ClusterError(f"build-tools.sh did not produce {name!r}")
    return binaries


def kube_version() -> str:
    for line in (HACK_DIR / "versions.env").read_text().splitlines():
        if line.startswith("KUBE_VERSION="):
            return line.split("=", 1)[1].strip()
    raise ClusterError("KUBE_VERSION missing from hack/versions.env")


# --------------------------------------------------------------------------------------------- PKI


def _write_pem(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def generate_pki(pki: Path) -> None:
    """CA, apiserver serving cert, client certs per component, and the service-account key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    not_after = now + dt.timedelta(days=365)

    def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlops-local-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_pem(pki / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_pem(pki / "ca.key", key_pem(ca_key), private=True)

    def issue(name: str, common_name: str, orgs: Sequence[str], server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(not_after)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.DNSName("kubernetes.default.svc.cluster.local"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_pem(pki / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write_pem(pki / f"{name}.key", key_pem(key), private=True)

    issue("apiserver", "kube-apiserver", [], server=True)
    issue("admin", "mlops-admin", ["system:masters"], server=False)
    issue("kube-controller-manager", "system:kube-controller-manager", [], server=False)
    issue("kube-scheduler", "system:kube-scheduler", [], server=False)
    issue("kwok", "kwok-controller", ["system:masters"], server=False)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_pem(pki / "sa.key", key_pem(sa_key), private=True)
    _write_pem(
        pki / "sa.pub",
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mlops-local",
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(f"{user}.crt"),
                    "client-key-data": b64(f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "mlops-local", "context": {"cluster": "mlops-local", "user": user}}],
        "current-context": "mlops-local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


# ------------------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pid_alive(pid: int, binary: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if binary is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    # A recycled pid running something else is not ours.
    return Path(cmdline).name == Path(binary).name


def _read_pid(state: StateDir, component: str) -> int | None:
    try:
        return int(state.pid_file(component).read_text().strip())
    except (OSError, ValueError):
        return None


def start_process(state: StateDir, component: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
    state.logs.mkdir(parents=True, exist_ok=True)
    state.pids.mkdir(parents=True, exist_ok=True)
    log = state.log_file(component).open("ab")
    log.write(f"\n=== {dt.datetime.now(dt.UTC).isoformat()} starting: {' '.join(argv)}\n".encode())
    log.flush()
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=state.root,
        start_new_session=True,  # survives the launcher; stopped by pid in `down`
    )
    log.close()
    state.pid_file(component).write_text(str(process.pid))
    return process


def stop_process(state: StateDir, component: str, binary: str | None, grace_seconds: float = 10.0) -> bool:
    """SIGTERM, wait, then SIGKILL the process group of one component. Returns whether one was running."""
    pid = _read_pid(state, component)
    state.pid_file(component).unlink(missing_ok=True)
    if pid is None or not _pid_alive(pid, binary):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        _reap(pid)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for _ in range(50):
        _reap(pid)
        if not _pid_alive(pid):
            break
        time.sleep(0.1)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------- HTTP


def _ssl_context(pki: Path, with_client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if with_client_cert:
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return context


def _get(url: str, context: ssl.SSLContext | None, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)


def _insecure_context() -> ssl.SSLContext:
    # controller-manager and scheduler serve /healthz with self-signed certs of their own.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_for(
    description: str,
    probe: Any,
    timeout: float,
    state: StateDir,
    component: str,
    process: subprocess.Popen[bytes],
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, last = probe()
        if ok:
            return
        if process.poll() is not None:
            raise ClusterError(
                f"{component} exited with code {process.returncode} while waiting for {description}; "
                f"last lines of {state.log_file(component)}:\n{_tail(state.log_file(component))}"
            )
        time.sleep(0.25)
    raise ClusterError(
        f"timed out after {timeout:.0f}s waiting for {description} ({last}); last lines of "
        f"{state.log_file(component)}:\n{_tail(state.log_file(component))}"
    )


# ---------------------------------------------------------------------------------------- lifecycle


def _component_argv(info: ClusterInfo, state: StateDir, component: str) -> list[str]:
    pki = state.pki
    binary = info.binaries[component]
    if component == "etcd":
        return [
            binary,
            "--name=mlops-local",
            f"--data-dir={state.etcd_data}",
            f"--listen-client-urls=http://127.0.0.1:{info.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{info.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{info.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{info.etcd_peer_port}",
            f"--initial-cluster=mlops-local=http://127.0.0.1:{info.etcd_peer_port}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ]
    if component == "kube-apiserver":
        return [
            binary,
            f"--etcd-servers=http://127.0.0.1:{info.etcd_port}",
            f"--secure-port={info.apiserver_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
    if component == "kube-controller-manager":
        kubeconfig = state.component_kubeconfig(component)
        return [
            binary,
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            "--controllers=*",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cluster-cidr={POD_CIDR}",
            "--bind-address=127.0.0.1",
            f"--secure-port={info.controller_manager_port}",
            "--leader-elect=false",
            "--v=1",
        ]
    if component == "kube-scheduler":
        kubeconfig = state.component_kubeconfig(component)
        return [
            binary,
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={info.scheduler_port}",
            "--leader-elect=false",
            "--v=1",
        ]
    if component == "kwok":
        return [
            binary,
            f"--kubeconfig={state.component_kubeconfig(component)}",
            f"--config={HACK_DIR / 'kwok' / 'stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            "--node-lease-duration-seconds=40",
            f"--cidr={POD_CIDR.replace('.0.0/16', '.0.1/16')}",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{info.kwok_port}",
        ]
    raise ValueError(component)


def _readiness_probe(info: ClusterInfo, state: StateDir, component: str) -> Any:
    if component == "etcd":
        url, context = f"http://127.0.0.1:{info.etcd_port}/health", None
    elif component == "kube-apiserver":
        url, context = f"{info.server}/readyz", _ssl_context(state.pki, with_client_cert=True)
    elif component == "kube-controller-manager":
        url, context = f"https://127.0.0.1:{info.controller_manager_port}/healthz", _insecure_context()
    elif component == "kube-scheduler":
        url, context = f"https://127.0.0.1:{info.scheduler_port}/healthz", _insecure_context()
    else:
        url, context = f"http://127.0.0.1:{info.kwok_port}/healthz", None

    def probe() -> tuple[bool, str]:
        code, body = _get(url, context)
        return code == 200, f"GET {url} -> {code} {body[:200]}"

    return probe


def load_info(state: StateDir) -> ClusterInfo | None:
    try:
        return ClusterInfo(**json.loads(state.info.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def health(state: StateDir) -> dict[str, str]:
    """Component -> 'ok' | a reason; empty when no cluster was ever started in this state dir."""
    info = load_info(state)
    if info is None:
        return {}
    report = {}
    for component in COMPONENTS:
        pid = _read_pid(state, component)
        if pid is None or not _pid_alive(pid, info.binaries.get(component)):
            report[component] = "not running"
            continue
        ok, detail = _readiness_probe(info, state, component)()
        report[component] = "ok" if ok else detail
    return report


def is_up(state: StateDir) -> bool:
    report = health(state)
    return bool(report) and all(value == "ok" for value in report.values())


def kubectl(info: ClusterInfo, *args: str, input_text: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [info.binaries["kubectl"], f"--kubeconfig={info.kubeconfig}", *args],
        input=input_text,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def up(state: StateDir, nodes: Sequence[FakeNode] = DEFAULT_NODES, timeout: float = 120.0) -> ClusterInfo:
    """Start the control plane (or return the running one). Idempotent."""
    with locked(state):
        info = load_info(state)
        if info is not None and is_up(state):
            return info
        _stop_all(state, info)
        binaries = build_tools()
        started = time.monotonic()
        for path in (state.etcd_data, state.pids):
            if path.exists():
                subprocess.run(["rm", "-rf", str(path)], check=True)
        generate_pki(state.pki)
        info = ClusterInfo(
            state_dir=str(state.root),
            kubeconfig=str(state.kubeconfig),
            apiserver_port=free_port(),
            etcd_port=free_port(),
            etcd_peer_port=free_port(),
            controller_manager_port=free_port(),
            scheduler_port=free_port(),
            kwok_port=free_port(),
            binaries=binaries,
            kube_version=kube_version(),
        )
        write_kubeconfig(state.kubeconfig, info.server, state.pki, "admin")
        for component, user in (
            ("kube-controller-manager", "kube-controller-manager"),
            ("kube-scheduler", "kube-scheduler"),
            ("kwok", "kwok"),
        ):
            write_kubeconfig(state.component_kubeconfig(component), info.server, state.pki, user)
        state.info.write_text(json.dumps(asdict(info), indent=2))
        _link_client_binaries(state, binaries)
        try:
            for component in COMPONENTS:
                if component == "kwok":
                    _register_nodes(info, nodes)
                process = start_process(state, component, _component_argv(info, state, component))
                wait_for(
                    f"{component} to become healthy",
                    _readiness_probe(info, state, component),
                    timeout,
                    state,
                    component,
                    process,
                )
            _wait_until_usable(info, nodes, timeout)
        except BaseException:
            _stop_all(state, info)
            raise
        print(f"[local-cluster] up in {time.monotonic() - started:.1f}s: {info.server}", file=sys.stderr)
        return info


def _link_client_binaries(state: StateDir, binaries: dict[str, str]) -> None:
    """``<state>/bin`` holds kubectl and helm of the pinned versions, for ``env``'s PATH."""
    state.bin.mkdir(parents=True, exist_ok=True)
    for name in ("kubectl", "helm", "kwok"):
        link = state.bin / name
        link.unlink(missing_ok=True)
        if name in binaries:
            link.symlink_to(binaries[name])


def env_exports(state: StateDir) -> str:
    return f'export KUBECONFIG="{state.kubeconfig}"\nexport PATH="{state.bin}:$PATH"'


def _register_nodes(info: ClusterInfo, nodes: Sequence[FakeNode]) -> None:
    if not nodes:
        return
    manifests = {"apiVersion": "v1", "kind": "List", "items": [node.manifest() for node in nodes]}
    kubectl(
        info,
        "apply",
        "--server-side",
        "--field-manager=local-cluster",
        "-f",
        "-",
        input_text=json.dumps(manifests),
    )


def _wait_until_usable(info: ClusterInfo, nodes: Sequence[FakeNode], timeout: float) -> None:
    """Nodes Ready (kwok works) and the default ServiceAccount exists (controller-manager works)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ready = kubectl(
            info,
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}="
            '{.status.conditions[?(@.type=="Ready")].status} {end}',
            check=False,
        ).split()
        ready_nodes = {item.split("=")[0] for item in ready if item.endswith("=True")}
        has_sa = bool(kubectl(info, "get", "serviceaccount", "default", "-o", "name", check=False).strip())
        if ready_nodes >= {node.name for node in nodes} and has_sa:
            return
        last = (
            f"ready nodes {sorted(ready_nodes)}, default serviceaccount {'present' if has_sa else 'missing'}"
        )
        time.sleep(0.5)
    raise ClusterError(f"cluster started but did not become usable within {timeout:.0f}s: {last}")


def _stop_all(state: StateDir, info: ClusterInfo | None) -> list[str]:
    stopped = []
    binaries = info.binaries if info else {}
    for component in reversed(COMPONENTS):
        if stop_process(state, component, binaries.get(component)):
            stopped.append(component)
    return stopped


#: Short names accepted by ``restart``/``stop_component``/``start_component`` (and the CLI).
COMPONENT_ALIASES = {
    "apiserver": "kube-apiserver",
    "controller-manager": "kube-controller-manager",
    "scheduler": "kube-scheduler",
}


def component_name(name: str) -> str:
    """``apiserver`` -> ``kube-apiserver``; full names pass through; anything else is a ValueError."""
    full = COMPONENT_ALIASES.get(name, name)
    if full not in COMPONENTS:
        raise ValueError(f"unknown component {name!r}; one of {', '.join((*COMPONENTS, *COMPONENT_ALIASES))}")
    return full


def _running_info(state: StateDir) -> ClusterInfo:
    info = load_info(state)
    if info is None:
        raise ClusterError(f"no cluster in {state.root}; run `up` first")
    return info


def stop_component(state: StateDir, component: str, grace_seconds: float = 10.0) -> bool:
    """Stop one component of a running control plane (SIGTERM, then SIGKILL), keeping its ports, PKI and
    etcd's data for :func:`start_component`. Returns whether it was running."""
    component = component_name(component)
    with locked(state):
        info = _running_info(state)
        return stop_process(state, component, info.binaries.get(component), grace_seconds)


def start_component(state: StateDir, component: str, timeout: float = 120.0) -> None:
    """Start one stopped component again with the same flags and ports; returns once it is healthy.
    A component that is already running is left alone."""
    component = component_name(component)
    with locked(state):
        info = _running_info(state)
        pid = _read_pid(state, component)
        if pid is not None and _pid_alive(pid, info.binaries.get(component)):
            return
        process = start_process(state, component, _component_argv(info, state, component))
        wait_for(
            f"{component} to become healthy",
            _readiness_probe(info, state, component),
            timeout,
            state,
            component,
            process,
        )


def restart(
    state: StateDir,
    component: str,
    downtime: float = 0.0,
    grace_seconds: float = 10.0,
    timeout: float = 120.0,
) -> None:
    """Stop one component and start it again on the same ports with the same state (etcd keeps its data
    directory), ``downtime`` seconds later; returns once it is healthy again. For fault tests."""
    stop_component(state, component, grace_seconds)
    if downtime > 0:
        time.sleep(downtime)
    start_component(state, component, timeout)


def down(state: StateDir, keep_data: bool = False) -> list[str]:
    """Stop every process ``up`` started; remove etcd data unless asked to keep it."""
    with locked(state):
        stopped = _stop_all(state, load_info(state))
        if not keep_data and state.etcd_data.exists():
            subprocess.run(["rm", "-rf", str(state.etcd_data)], check=True)
        state.info.unlink(missing_ok=True)
        return stopped


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build if needed and start the control plane + kwok nodes")
    down_parser = sub.add_parser("down", help="stop every process started by up")
    down_parser.add_argument("--keep-data", action="store_true", help="keep etcd's data directory")
    sub.add_parser("status", help="health of each component; exit 1 unless all are ok")
    sub.add_parser("kubeconfig", help="print the admin kubeconfig path")
    sub.add_parser("env", help='print KUBECONFIG and PATH (kubectl, helm) exports: eval "$(... env)"')
    restart_parser = sub.add_parser(
        "restart", help="stop one component and start it again, same ports and state (etcd keeps its data)"
    )
    restart_parser.add_argument("component", choices=[*COMPONENTS, *COMPONENT_ALIASES])
    restart_parser.add_argument(
        "--downtime", type=float, default=0.0, metavar="SECONDS", help="stay down this long first"
    )
    logs_parser = sub.add_parser("logs", help="print a component's log")
    logs_parser.add_argument("component", choices=COMPONENTS)
    args = parser.parse_args(argv)
    state = state_dir_from_env()
    try:
        if args.command == "up":
            up(state)
            print(env_exports(state))
        elif args.command == "down":
            stopped = down(state, keep_data=args.keep_data)
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        elif args.command == "status":
            report = health(state)
            if not report:
                print(f"no cluster in {state.root}")
                return 1
            for component, detail in report.items():
                print(f"{component:<24} {detail}")
            return 0 if all(value == "ok" for value in report.values()) else 1
        elif args.command == "restart":
            restart(state, args.component, downtime=args.downtime)
            print(f"restarted {component_name(args.component)}")
        elif args.command in ("kubeconfig", "env"):
            if load_info(state) is None:
                print(f"no cluster in {state.root}; run `up` first", file=sys.stderr)
                return 1
            print(state.kubeconfig if args.command == "kubeconfig" else env_exports(state))
        elif args.command == "logs":
            print(state.log_file(args.component).read_text(errors="replace"))
    except ClusterError as error:
        print(f"local-cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
