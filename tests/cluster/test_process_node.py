"""The process node (hack/process_node.py) against the real control plane: pods bound to it really run,
as local processes, and their status is what a kubelet would report.

The node runs as a subprocess, the way a developer runs it. It carries a taint of its own and the test pods
select it by hostname and tolerate the taint, so neither other tests' pods nor another process node's can
get mixed up with these (the session cluster also has untainted kwok nodes).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

import local_cluster
import process_node
from mlops_operator.api.v1alpha1 import pod_contract
from tests.support.kube import wait_until

REPO = Path(__file__).resolve().parents[2]
TAINT_KEY = "mlops.dev/process-node"


@dataclass
class NodeHandle:
    """A process node running as a subprocess."""

    name: str
    state_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    api: process_node.Api

    def scheduling(self) -> dict[str, Any]:
        """Pod spec fields that put a pod on this node and nowhere else."""
        return {
            "nodeSelector": {"kubernetes.io/hostname": self.name},
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        }

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        node = self.api.get(f"/api/v1/nodes/{self.name}") or {}
        return ipaddress.IPv4Network(node["metadata"]["annotations"][process_node.POD_CIDR_ANNOTATION])

    def processes(self, **markers: str) -> list[int]:
        return live(process_node.process_ids_with_env({process_node.ENV_MARK_NODE: self.name, **markers}))

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        path = self.state_dir / "logs" / process_node.log_file_name(namespace, pod, container)
        return path.read_text() if path.exists() else ""

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self, timeout: float = 40.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            raise AssertionError(
                f"process node {self.name} did not stop in {timeout}s:\n{self.tail()}"
            ) from None


def live(pids: list[int]) -> list[int]:
    """The pids that are still running (zombies are not)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def processes_touching(path: Path) -> list[int]:
    """Processes whose working directory or command line is inside ``path``."""
    found = []
    needle = str(path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = str((entry / "cwd").readlink())
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(needle) or needle in cmdline:
            found.append(int(entry.name))
    return live(found)


def start_node(cluster: local_cluster.ClusterInfo, name: str, state_dir: Path, *extra: str) -> NodeHandle:
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "node.log"
    argv = [
        sys.executable,
        str(REPO / "hack" / "process_node.py"),
        "--kubeconfig",
        cluster.kubeconfig,
        "--name",
        name,
        "--state-dir",
        str(state_dir),
        "--taint",
        f"{TAINT_KEY}={name}:NoSchedule",
        *extra,
    ]
    with log_path.open("ab") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    handle = NodeHandle(name, state_dir, process, log_path, process_node.Api(cluster.kubeconfig))

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"process node exited with {process.returncode}:\n{handle.tail()}")
        node = handle.api.get(f"/api/v1/nodes/{name}")
        conditions = (node or {}).get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_until(ready, timeout=30, message=lambda: f"node {name} Ready; log:\n{handle.tail()}")
    return handle


def delete_node(handle: NodeHandle) -> None:
    try:
        handle.api.call("DELETE", f"/api/v1/nodes/{handle.name}")
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture(scope="module")
def node(
    cluster: local_cluster.ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeHandle]:
    name = f"process-node-{secrets.token_hex(3)}"
    handle = start_node(
        cluster, name, tmp_path_factory.mktemp(name), "--backoff-initial=1", "--backoff-max=4"
    )
    yield handle
    try:
        code = handle.stop()
        assert code == 0, f"process node exited with {code}:\n{handle.tail()}"
        assert handle.processes() == [], "the process node left processes behind"
    finally:
        delete_node(handle)


# ----------------------------------------------------------------------------------------------- helpers


def pod_get(node: NodeHandle, namespace: str, name: str) -> dict[str, Any] | None:
    return node.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")


def pods(node: NodeHandle, namespace: str, selector: str) -> list[dict[str, Any]]:
    listing = node.api.call(
        "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)]
    )
    return list(listing["items"])


def create(node: NodeHandle, path: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = node.api.call("POST", path, body)
    return result


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["status"]["containerStatuses"][0]["state"].get("terminated") or {}


def bare_pod(node: NodeHandle, name: str, command: list[str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            **node.scheduling(),
            "containers": [{"name": "main", "image": "runtime:dev", "command": command, **container}],
        },
    }


# ------------------------------------------------------------------------------------------------- tests


def test_node_registers_like_a_kubelet(node: NodeHandle) -> None:
    registered = node.api.get(f"/api/v1/nodes/{node.name}")
    assert registered is not None
    labels = registered["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == node.name
    assert labels[process_node.NODE_KIND_LABEL] == "process"
    assert labels["type"] == "process"
    assert process_node.VIRTUAL_GPU_LABEL not in labels  # no --gpus
    assert registered["spec"]["taints"] == [{"key": TAINT_KEY, "value": node.name, "effect": "NoSchedule"}]
    allocatable = registered["status"]["allocatable"]
    assert (allocatable["cpu"], allocatable["memory"], allocatable["pods"]) == ("2", "8Gi", "20")
    assert condition(registered, "Ready")["status"] == "True"
    assert registered["status"]["addresses"] == [{"type": "InternalIP", "address": "127.0.0.1"}]
    lease = node.api.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node.name}")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == node.name
    # The environment variable the runtime programs read is the one the node sets.
    assert process_node.ENV_TERMINATION_LOG == pod_contract.ENV_TERMINATION_LOG


def test_job_pod_runs_with_the_environment_the_kubelet_would_give_it(
    node: NodeHandle, namespace: str
) -> None:
    create(
        node,
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}},
    )
    create(
        node,
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "settings"}, "data": {"greeting": "hello", "color": "blue"}},
    )
    script = textwrap.dedent(
        """
        import json, os, sys
        names = ["POD_NAME", "POD_NAMESPACE", "POD_UID", "APP", "JOB_COMPLETION_INDEX", "RANK", "TOKEN",
                 "GREETING", "CFG_color", "EXPANDED", "HOME", "CHECKPOINTS", "POD_IP", "MLOPS_SERVER_HOST",
                 "NODE", "PATH"]
        env = {n: os.environ.get(n) for n in names}
        print(json.dumps({"env": env, "argv": sys.argv[1:], "cwd": os.getcwd()}))
        with open(os.environ["MLOPS_TERMINATION_LOG"], "w") as handle:
            handle.write("Completed: trained 3 epochs")
        """
    )
    annotation = f"metadata.annotations['{process_node.JOB_COMPLETION_INDEX_ANNOTATION}']"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {
            "completionMode": "Indexed",
            "completions": 1,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "trainer"}},
                "spec": {
                    "restartPolicy": "Never",
                    **node.scheduling(),
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "ghcr.io/mlops-operator/runtime:dev",
                            "command": ["python", "-c", script],
                            "args": ["--greeting=$(GREETING)", "--out=/tmp/model", "$$(LITERAL)"],
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
                            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {
                                    "name": "POD_NAMESPACE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                },
                                {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                                {
                                    "name": "APP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
                                },
                                {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": annotation}}},
                                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                                {
                                    "name": "TOKEN",
                                    "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                                },
                                {
                                    "name": "GREETING",
                                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
                                },
                                {"name": "EXPANDED", "value": "$(GREETING)-from-$(POD_NAME)"},
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "CHECKPOINTS", "value": pod_contract.DEFAULT_CHECKPOINT_DIR},
                            ],
                        }
                    ],
                },
            },
        },
    }
    create(node, f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    done = wait_until(
        lambda: condition(
            node.api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train") or {}, "Complete"
        ),
        timeout=40,
        message=lambda: f"Job complete; node log:\n{node.tail()}",
    )
    assert done["status"] == "True"
    [pod] = pods(node, namespace, "app=trainer")
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    assert pod["spec"]["nodeName"] == node.name
    assert pod["status"]["phase"] == "Succeeded"
    state = terminated(pod)
    assert (state["exitCode"], state["reason"]) == (0, "Completed")
    assert state["message"] == "Completed: trained 3 epochs"
    pod_ip = pod["status"]["podIP"]
    assert ipaddress.IPv4Address(pod_ip) in node.pod_network
    assert pod["status"]["hostIP"] == "127.0.0.1"

    output = json.loads(node.container_log(namespace, name, "trainer").splitlines()[-1])
    env = output["env"]
    sandbox = node.state_dir / "pods" / f"{namespace}_{name}_{uid}"
    scratch = sandbox / "volumes" / "scratch"
    assert env["POD_NAME"] == name
    assert env["POD_NAMESPACE"] == namespace
    assert env["POD_UID"] == uid
    assert env["APP"] == "trainer"
    assert env["JOB_COMPLETION_INDEX"] == "0"  # the Job controller's fieldRef, resolved by the node
    assert env["RANK"] == "0"
    assert env["NODE"] == node.name
    assert env["TOKEN"] == "s3cr3t"
    assert env["GREETING"] == "hello"
    assert env["CFG_color"] == "blue"
    assert env["EXPANDED"] == f"hello-from-{name}"
    # Paths under a volume's mountPath point at that volume's directory on this machine.
    assert env["HOME"] == str(scratch)
    assert env["CHECKPOINTS"] == f"{scratch}/checkpoints"
    assert env["POD_IP"] == env["MLOPS_SERVER_HOST"] == pod_ip
    assert env["PATH"].split(":")[0] == str(Path(sys.prefix) / "bin")
    assert output["argv"] == ["--greeting=hello", f"--out={scratch}/model", "$(LITERAL)"]
    assert output["cwd"] == str(sandbox)


def test_failing_job_reports_exit_code_and_message_and_is_retried(node: NodeHandle, namespace: str) -> None:
    script = (
        "import os, sys\n"
        "open(os.environ['MLOPS_TERMINATION_LOG'], 'w').write('InvalidDataset: column species missing')\n"
        "sys.exit(3)\n"
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "broken"},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "metadata": {"labels": {"app": "broken"}},
                "spec": {
                    "restartPolicy": "Never",
                    **node.scheduling(),
                    "containers": [
                        {"name": "trainer", "image": "runtime:dev", "command": ["python", "-c", script]}
                    ],
                },
            },
        },
    }
    create(node, f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    failed = wait_until(
        lambda: condition(node.api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/broken") or {}, "Failed"),
        timeout=60,
        message=lambda: f"Job failed; node log:\n{node.tail()}",
    )
    assert failed["reason"] == "BackoffLimitExceeded"
    attempts = pods(node, namespace, "app=broken")
    assert len(attempts) == 2  # the first try and one retry (backoffLimit 1)
    for attempt in attempts:
        assert attempt["status"]["phase"] == "Failed"
        state = terminated(attempt)
        assert (state["exitCode"], state["reason"]) == (3, "Error")
        assert state["message"] == "InvalidDataset: column species missing"


def test_start_errors_and_log_fallback_are_reported(node: NodeHandle, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/pods"
    create(node, path, bare_pod(node, "no-such-program", ["no-such-program", "--help"]))
    create(
        node,
        path,
        bare_pod(
            node,
            "fallback",
            [
                "python",
                "-c",
                "import sys; print('loading data', flush=True); sys.exit('ValueError: bad row 7')",
            ],
            terminationMessagePolicy="FallbackToLogsOnError",
        ),
    )
    create(
        node,
        path,
        bare_pod(
            node,
            "missing-secret",
            ["true"],
            env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}],
        ),
    )

    def finished(name: str) -> dict[str, Any] | None:
        pod = pod_get(node, namespace, name)
        return pod if pod and pod["status"].get("phase") == "Failed" else None

    no_program = wait_until(lambda: finished("no-such-program"), timeout=20, message="no-such-program Failed")
    state = terminated(no_program)
    assert (state["exitCode"], state["reason"]) == (128, "StartError")
    assert 'exec: "no-such-program": executable file not found in $PATH' in state["message"]

    fallback = wait_until(lambda: finished("fallback"), timeout=20, message="fallback Failed")
    state = terminated(fallback)
    assert state["exitCode"] == 1
    assert state["message"] == "loading data\nValueError: bad row 7"

    def config_error() -> dict[str, Any] | None:
        pod = pod_get(node, namespace, "missing-secret") or {}
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        waiting = statuses[0].get("state", {}).get("waiting") or {}
        return waiting if waiting.get("reason") == "CreateContainerConfigError" else None

    waiting = wait_until(config_error, timeout=20, message="CreateContainerConfigError")
    assert waiting["message"] == 'secret "absent" not found'
    assert (pod_get(node, namespace, "missing-secret") or {})["status"]["phase"] == "Pending"
    # The node carries on: the pods after a broken one run as usual.
    assert node.process.poll() is None


def test_restart_policies_and_liveness_probes_restart_containers(node: NodeHandle, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/pods"
    flaky = (
        "import os, pathlib, sys\n"
        "marker = pathlib.Path(os.environ['HOME'], 'attempts')\n"
        "marker.write_text(marker.read_text() + 'x' if marker.exists() else 'x')\n"
        "sys.exit(0 if len(marker.read_text()) >= 3 else 1)\n"
    )
    pod = bare_pod(
        node,
        "flaky",
        ["python", "-c", flaky],
        env=[{"name": "HOME", "value": "/data"}],
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    pod["spec"]["restartPolicy"] = "OnFailure"
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    create(node, path, pod)
    unhealthy = bare_pod(
        node,
        "unhealthy",
        ["sleep", "300"],
        livenessProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1},
    )
    unhealthy["spec"]["restartPolicy"] = "Always"
    unhealthy["spec"]["terminationGracePeriodSeconds"] = 2
    create(node, path, unhealthy)

    def phase(name: str, wanted: str) -> dict[str, Any] | None:
        found = pod_get(node, namespace, name)
        return found if found and found["status"].get("phase") == wanted else None

    done = wait_until(lambda: phase("flaky", "Succeeded"), timeout=30, message="flaky Succeeded")
    status = done["status"]["containerStatuses"][0]
    assert status["restartCount"] == 2
    assert status["lastState"]["terminated"]["exitCode"] == 1

    def restarted() -> dict[str, Any] | None:
        found = pod_get(node, namespace, "unhealthy") or {}
        statuses = found.get("status", {}).get("containerStatuses") or [{}]
        return statuses[0] if statuses[0].get("restartCount", 0) >= 1 else None

    status = wait_until(restarted, timeout=30, message="the liveness probe to restart the container")
    assert status["lastState"]["terminated"]["exitCode"] == 128 + signal.SIGTERM


def test_deployment_serves_from_distinct_pod_ips_behind_its_service(node: NodeHandle, namespace: str) -> None:
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **node.scheduling(),
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "http",
                            "image": "python:3.11",
                            "command": ["python", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                            "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    create(node, f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment)
    create(node, f"/api/v1/namespaces/{namespace}/services", service)

    def available() -> dict[str, Any] | None:
        found = node.api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web") or {}
        ready = (found.get("status") or {}).get("readyReplicas") == 2
        return found if ready and condition(found, "Available").get("status") == "True" else None

    wait_until(available, timeout=40, message=lambda: f"Deployment Available; node log:\n{node.tail()}")
    replicas = pods(node, namespace, "app=web")
    assert len(replicas) == 2
    ips = {pod["status"]["podIP"] for pod in replicas}
    assert len(ips) == 2
    for pod in replicas:
        assert pod["status"]["phase"] == "Running"
        assert condition(pod, "Ready")["status"] == "True"
        assert ipaddress.IPv4Address(pod["status"]["podIP"]) in node.pod_network
    for ip in ips:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as response:
            assert response.status == 200

    if node.pod_network.is_loopback:
        warnings.warn(
            "pod IPs are loopback addresses (no local route for 198.19.0.0/16 could be added): "
            "EndpointSlices reject them, so the Service's endpoints are not checked",
            stacklevel=1,
        )
    else:

        def endpoints() -> set[str] | None:
            slices = node.api.call(
                "GET",
                f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                query=[("labelSelector", "kubernetes.io/service-name=web")],
            )
            found = {
                address
                for item in slices["items"]
                for endpoint in item.get("endpoints") or []
                if (endpoint.get("conditions") or {}).get("ready")
                for address in endpoint["addresses"]
            }
            return found if found == ips else None

        wait_until(endpoints, timeout=20, message="the EndpointSlice to list both pod IPs")

    sandboxes = [
        node.state_dir / "pods" / f"{namespace}_{pod['metadata']['name']}_{pod['metadata']['uid']}"
        for pod in replicas
    ]
    uids = [pod["metadata"]["uid"] for pod in replicas]
    assert all(node.processes(**{process_node.ENV_MARK_POD: uid}) for uid in uids)
    node.api.call("DELETE", f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    wait_until(
        lambda: not pods(node, namespace, "app=web"), timeout=30, message="the Deployment's pods to go"
    )
    for uid, sandbox in zip(uids, sandboxes, strict=True):
        assert node.processes(**{process_node.ENV_MARK_POD: uid}) == []
        assert processes_touching(sandbox) == []
        wait_until(lambda sandbox=sandbox: not sandbox.exists(), timeout=10, message=f"{sandbox} removed")


def test_pods_bound_to_other_nodes_are_never_run(node: NodeHandle, namespace: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pod = bare_pod(node, "elsewhere", ["python", "-c", f"open({str(marker)!r}, 'w')"])
    pod["spec"].pop("nodeSelector")
    pod["spec"]["nodeName"] = "cpu-node-0"  # a kwok node: it "runs" the pod without running anything
    created = create(node, f"/api/v1/namespaces/{namespace}/pods", pod)
    wait_until(
        lambda: (pod_get(node, namespace, "elsewhere") or {}).get("status", {}).get("phase") == "Running",
        timeout=30,
        message="kwok to report the pod Running",
    )
    time.sleep(2)  # time for the process node to make a mistake, had it seen the pod
    assert not marker.exists()
    assert node.container_log(namespace, "elsewhere", "main") == ""
    assert not list((node.state_dir / "pods").glob(f"*{created['metadata']['uid']}"))
    pod_ip = (pod_get(node, namespace, "elsewhere") or {})["status"].get("podIP")
    assert pod_ip is None or ipaddress.IPv4Address(pod_ip) not in node.pod_network


def test_stopping_the_node_leaves_no_orphan_processes(
    cluster: local_cluster.ClusterInfo, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name = f"process-node-{secrets.token_hex(3)}-gpu"
    handle = start_node(cluster, name, tmp_path_factory.mktemp(name), "--gpus=2", "--shutdown-grace=3")
    try:
        registered = handle.api.get(f"/api/v1/nodes/{name}") or {}
        labels = registered["metadata"]["labels"]
        assert labels[process_node.VIRTUAL_GPU_LABEL] == "true"
        assert labels[process_node.GPU_PRODUCT_LABEL] == process_node.VIRTUAL_GPU_PRODUCT
        assert registered["status"]["allocatable"][process_node.GPU_RESOURCE] == "2"

        # A shell with a background child, and a grandchild that leaves the process group (setsid).
        escape = "import subprocess; subprocess.Popen(['sleep', '300'], start_new_session=True)"
        command = f'python -c "{escape}"; sleep 300 & echo $MLOPS_VIRTUAL_GPUS:$CUDA_VISIBLE_DEVICES; wait'
        pod = bare_pod(
            handle, "gpu-worker", ["sh", "-c", command], resources={"limits": {"nvidia.com/gpu": "1"}}
        )
        pod["spec"]["restartPolicy"] = "Always"
        pod["spec"]["terminationGracePeriodSeconds"] = 30
        create(handle, f"/api/v1/namespaces/{namespace}/pods", pod)
        wait_until(
            lambda: handle.container_log(namespace, "gpu-worker", "main").strip() == "1:",
            timeout=30,
            message=lambda: f"the pod's output; node log:\n{handle.tail()}",
        )
        pids = handle.processes()
        assert len(pids) >= 3  # sh, its background sleep, the escaped sleep

        started = time.monotonic()
        assert handle.stop() == 0
        assert time.monotonic() - started < 20  # the shutdown grace (3 s) caps the pod's 30 s
        assert live(pids) == []
        assert handle.processes() == []
        stopped = pod_get(handle, namespace, "gpu-worker") or {}
        assert stopped["status"]["phase"] == "Failed"
        assert stopped["status"]["reason"] == "Terminated"
        assert condition(stopped, "DisruptionTarget")["reason"] == "TerminationByKubelet"
        assert handle.api.get(f"/api/v1/nodes/{name}") is None  # deleted on exit (--keep-node keeps it)
    finally:
        if handle.process.poll() is None:
            handle.stop()
        delete_node(handle)
