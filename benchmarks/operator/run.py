"""Operator scale benchmark: N TrainingJobs + N/5 ModelDeployments against the real local control plane.

For each size N it starts a fresh control plane (``hack/local_cluster.py`` in ``$MLOPS_CLUSTER_DIR``, default
``<repo>/.cluster-bench``; it is stopped and wiped between sizes) with the default kwok nodes plus roomy
``bench-node-*`` kwok nodes, runs ``mlops-operator run`` cluster-wide as a subprocess under its own
ServiceAccount, creates the objects at ``--rate`` creates/s and records:

- convergence: every TrainingJob ``Running`` (its Job exists, kwok runs the pod) and every ModelDeployment
  ``Ready=True``; create -> child Job / Deployment latency (the benchmark's own watch sees the child ADDED;
  creationTimestamps only have one-second resolution);
- operator CPU seconds and RSS (``/proc``), idle (no objects) and peak;
- the operator's apiserver requests, counted exactly by the apiserver: API Priority and Fairness FlowSchemas
  that match only the operator's ServiceAccount, one per request class (status writes, writes to the parent
  objects, Events, writes to children, reads, watches, discovery), read from
  ``apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}`` before/after. The benchmark's own
  traffic (admin user) is in the ``exempt`` schema and never counted;
- a no-op resync: after convergence, the writes during one resync period with nothing changing;
- with ``--soak-minutes``: RSS sampled while the resync timers keep firing (growth in MiB/hour).

Usage: ``python benchmarks/operator/run.py [--sizes 100,500] [--label after] [--soak-minutes 10]``
(``make bench-operator``). Raw results go to ``benchmarks/results/operator-<label>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))

from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

import apf_counting  # noqa: E402
import local_cluster as lc  # noqa: E402
from mlflow_server import MlflowServer  # noqa: E402

GROUP, VERSION = "mlops.dev", "v1alpha1"
NAMESPACE = "bench"
SA_NAMESPACE = "mlops-bench-system"
SA_NAME = "mlops-operator"
MODEL = "bench-model"
RESULTS = REPO / "benchmarks" / "results"
#: Request classes, in matching order (the first FlowSchema that matches a request wins).
REQUEST_CLASSES = ("status", "parent", "events", "children", "read", "watch", "other")
WRITE_CLASSES = ("status", "parent", "events", "children")
FLOW_PREFIX = "bench-op-"
BENCH_NODES = tuple(lc.FakeNode(f"bench-node-{i}", cpu="2000", memory="8Ti", pods="1000") for i in range(4))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ cluster setup


def flow_objects() -> list[dict[str, Any]]:
    """A priority level and one FlowSchema per request class, all matching only the operator's SA."""
    mlops_kinds = ["trainingjobs", "modeldeployments", "driftpolicies"]
    rules: dict[str, dict[str, Any]] = {
        "status": {
            "resourceRules": [
                {
                    "verbs": ["patch", "update"],
                    "apiGroups": [GROUP],
                    "resources": [f"{kind}/status" for kind in mlops_kinds],
                    "namespaces": ["*"],
                }
            ]
        },
        "parent": {
            "resourceRules": [
                {
                    "verbs": apf_counting.WRITE_VERBS,
                    "apiGroups": [GROUP],
                    "resources": mlops_kinds,
                    "namespaces": ["*"],
                }
            ]
        },
        "events": apf_counting.EVENT_WRITES,
        "children": apf_counting.ANY_WRITE,
        "read": apf_counting.READS,
        "watch": apf_counting.WATCHES,
        "other": {"nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]},
    }
    assert tuple(rules) == REQUEST_CLASSES
    return apf_counting.flow_objects((SA_NAMESPACE, SA_NAME), rules, FLOW_PREFIX, precedence=50)


def kubectl_apply(info: lc.ClusterInfo, objects: list[dict[str, Any]]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    lc.kubectl(info, "apply", "--server-side", "--field-manager=bench", "-f", "-", input_text=body)


def setup_cluster(info: lc.ClusterInfo, workdir: Path) -> Path:
    """CRDs, the operator's ServiceAccount (cluster-admin) and its kubeconfig, the counting FlowSchemas."""
    crds = workdir / "crds"  # copied at start: the tree may change while the benchmark runs
    lc.kubectl(info, "apply", "--server-side", "--field-manager=bench", "-f", str(crds))
    lc.kubectl(info, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
    kubectl_apply(
        info,
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SA_NAMESPACE}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": SA_NAME, "namespace": SA_NAMESPACE},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "mlops-bench-operator"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": SA_NAMESPACE}],
            },
            *flow_objects(),
        ],
    )
    token = lc.kubectl(info, "create", "token", SA_NAME, "-n", SA_NAMESPACE, "--duration=24h").strip()
    ca = Path(info.state_dir) / "pki" / "ca.crt"
    kubeconfig = workdir / "operator.kubeconfig"
    kubeconfig.write_text(json.dumps(apf_counting.token_kubeconfig(info.server, token, ca)))
    # the default ServiceAccount of the bench namespace must exist before pods are created
    deadline = time.monotonic() + 60
    while "default" not in lc.kubectl(info, "get", "sa", "-n", NAMESPACE, "-o", "name", check=False):
        if time.monotonic() > deadline:
            raise RuntimeError("default ServiceAccount of the bench namespace never appeared")
        time.sleep(0.5)
    return kubeconfig


def operator_requests(info: lc.ClusterInfo) -> dict[str, int]:
    """Requests the apiserver dispatched for the operator's ServiceAccount so far, by request class."""
    return apf_counting.dispatched(lc.kubectl(info, "get", "--raw", "/metrics"), FLOW_PREFIX, REQUEST_CLASSES)


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {key: after[key] - before.get(key, 0) for key in after}
    out["writes"] = sum(out[key] for key in WRITE_CLASSES)
    return out


# ------------------------------------------------------------------------------------------------ operator


class ProcSampler(threading.Thread):
    """RSS (MiB) and CPU seconds of one process from /proc, every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (monotonic, rss MiB, cpu s)
        self.stopped = threading.Event()
        self.ticks = os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float, float] | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / self.ticks
        return rss_kib / 1024, cpu

    def run(self) -> None:
        while not self.stopped.is_set():
            value = self.read()
            if value is not None:
                self.samples.append((time.monotonic(), *value))
            self.stopped.wait(self.interval)

    def cpu(self) -> float:
        value = self.read()
        return value[1] if value else float("nan")

    def rss(self) -> float:
        value = self.read()
        return value[0] if value else float("nan")

    def peak(self, since: float = 0.0) -> float:
        return max((rss for t, rss, _ in self.samples if t >= since), default=float("nan"))


def start_operator(
    kubeconfig: Path, log_path: Path, env: dict[str, str], source: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = lc.free_port()
    argv = [sys.executable, "-m", "mlops_operator.cli", "run", f"--liveness=http://127.0.0.1:{port}/healthz"]
    if os.environ.get("BENCH_OPERATOR_VERBOSE"):
        argv.append("--verbose")
    full_env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MLOPS_RUNTIME_IMAGE": "ghcr.io/mlops-operator/runtime:bench",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
        **env,
    }
    full_env.pop("MLOPS_MLFLOW_TRACKING_URI", None)
    full_env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"operator exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return process, port
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"operator did not become healthy; see {log_path}")


def stop_operator(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


# ------------------------------------------------------------------------------------------ load and watch


def trainingjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": MODEL},
            "dataset": {"uri": "https://data.example/bench.csv", "target": "y"},
            "trainer": {"builtin": {"task": "classification", "epochs": 1}},
            "resources": {"cpu": "100m", "memory": "128Mi"},
            # kwok keeps the pod Running for an hour (hack/kwok/stages.yaml)
            "podMetadata": {"annotations": {"fake.mlops.dev/duration": "3600s"}},
        },
    }


def modeldeployment(name: str, tracking_uri: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": MODEL, "alias": "champion"},
            "replicas": {"min": 1},
            "resources": {"cpu": "100m", "memory": "128Mi"},
            "mlflow": {"trackingUri": tracking_uri},
        },
    }


class Watcher(threading.Thread):
    """First time each object of a kind reaches a predicate (the benchmark's own watch, admin user)."""

    def __init__(self, list_call: Callable[..., Any], predicate: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(daemon=True)
        self.list_call = list_call
        self.predicate = predicate
        self.seen: dict[str, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        resource_version = None
        while not self.stopped.is_set():
            try:
                if resource_version is None:
                    listed = self.list_call(_preload_content=False)
                    body = json.loads(listed.data)
                    now = time.time()
                    for item in body.get("items") or []:
                        if self.predicate(item):
                            self.seen.setdefault(item["metadata"]["name"], now)
                    resource_version = body["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(
                    self.list_call,
                    resource_version=resource_version,
                    timeout_seconds=60,
                    _preload_content=False,
                )
                for event in stream:
                    obj = event["raw_object"]
                    resource_version = obj["metadata"].get("resourceVersion", resource_version)
                    if event["type"] in ("ADDED", "MODIFIED") and self.predicate(obj):
                        self.seen.setdefault(obj["metadata"]["name"], time.time())
                    if self.stopped.is_set():
                        break
            except ApiException as error:
                if error.status == 410:
                    resource_version = None
                else:
                    time.sleep(0.5)
            except Exception:
                time.sleep(0.2)


def ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def create_all(
    custom: client.CustomObjectsApi, items: list[tuple[str, dict[str, Any]]], rate: float, threads: int = 4
) -> dict[str, float]:
    """POST every object, paced at ``rate`` per second; returns the send time of each."""
    sent: dict[str, float] = {}
    work: queue.Queue[tuple[int, str, dict[str, Any]] | None] = queue.Queue()
    for index, (plural, manifest) in enumerate(items):
        work.put((index, plural, manifest))
    start = time.monotonic() + 0.2
    errors: list[str] = []

    def worker() -> None:
        while True:
            try:
                entry = work.get_nowait()
            except queue.Empty:
                return
            if entry is None:
                return
            index, plural, manifest = entry
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            name = manifest["metadata"]["name"]
            sent[name] = time.time()
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, manifest)
            except ApiException as error:
                errors.append(f"{name}: {error.status} {error.reason}")

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} creates failed, first: {errors[0]}")
    return sent


# ------------------------------------------------------------------------------------------------ one size


def run_size(
    n: int, args: argparse.Namespace, state: lc.StateDir, tracking_uri: str, workdir: Path
) -> dict[str, Any]:
    log(f"N={n}: fresh control plane in {state.root}")
    for attempt in range(3):  # free ports can be taken by someone else between choice and bind
        lc.down(state)
        try:
            info = lc.up(state, nodes=(*lc.DEFAULT_NODES, *BENCH_NODES))
            break
        except lc.ClusterError as error:
            if attempt == 2:
                raise
            log(f"control plane did not start ({str(error).splitlines()[0]}); retrying")
    kubeconfig = setup_cluster(info, workdir)
    api = config.new_client_from_config(config_file=info.kubeconfig)
    api.configuration.connection_pool_maxsize = 16
    custom, batch, apps = client.CustomObjectsApi(api), client.BatchV1Api(api), client.AppsV1Api(api)

    env = {
        "MLOPS_PROGRESS_INTERVAL_SECONDS": str(args.resync_seconds),
        "MLOPS_RESOLVE_INTERVAL_SECONDS": str(args.resync_seconds),
    }
    log_path = workdir / f"operator-{n}.log"
    at_start = operator_requests(info)
    process, _ = start_operator(kubeconfig, log_path, env, Path(args.operator_source).resolve())
    sampler = ProcSampler(process.pid)
    sampler.start()
    try:
        time.sleep(args.idle_seconds)
        idle_rss = sampler.rss()
        startup_requests = diff(operator_requests(info), at_start)
        n_md = n // args.md_ratio
        watchers = {
            "job": Watcher(lambda **kw: batch.list_namespaced_job(NAMESPACE, **kw), lambda _o: True),
            "deployment": Watcher(
                lambda **kw: apps.list_namespaced_deployment(NAMESPACE, **kw), lambda _o: True
            ),
            "tj_running": Watcher(
                lambda **kw: custom.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "trainingjobs", **kw
                ),
                lambda o: (o.get("status") or {}).get("phase") in ("Running", "Succeeded"),
            ),
            "md_ready": Watcher(
                lambda **kw: custom.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "modeldeployments", **kw
                ),
                ready,
            ),
        }
        for watcher in watchers.values():
            watcher.start()
        time.sleep(1)

        items: list[tuple[str, dict[str, Any]]] = []
        for i in range(n):
            items.append(("trainingjobs", trainingjob(f"tj-{i:05d}")))
            if i % args.md_ratio == args.md_ratio - 1 and len(items) - i - 1 < n_md:
                items.append(
                    ("modeldeployments", modeldeployment(f"md-{i // args.md_ratio:05d}", tracking_uri))
                )
        before = operator_requests(info)
        cpu0, t0 = sampler.cpu(), time.monotonic()
        load_start = os.getloadavg()
        busy0 = machine_busy()
        sent = create_all(custom, items, args.rate)
        create_seconds = time.monotonic() - t0
        cpu_burst = sampler.cpu() - cpu0
        busy_burst = machine_busy() - busy0
        log(f"N={n}: {len(items)} creates sent in {create_seconds:.1f}s; waiting for convergence")

        tj_names = [m["metadata"]["name"] for p, m in items if p == "trainingjobs"]
        md_names = [m["metadata"]["name"] for p, m in items if p == "modeldeployments"]
        deadline = time.monotonic() + args.converge_timeout
        converged = False
        while time.monotonic() < deadline:
            done_tj = sum(name in watchers["tj_running"].seen for name in tj_names)
            done_md = sum(name in watchers["md_ready"].seen for name in md_names)
            if done_tj == len(tj_names) and done_md == len(md_names):
                converged = True
                break
            time.sleep(0.5)
        first = min(sent.values())
        last_done = max(
            [watchers["tj_running"].seen.get(x, float("nan")) for x in tj_names]
            + [watchers["md_ready"].seen.get(x, float("nan")) for x in md_names]
        )
        converge_seconds = (last_done - first) if converged else float("nan")
        log(f"N={n}: converged={converged} in {converge_seconds:.1f}s")

        # let trailing work (status after the last pod started) finish: stop when the write count is stable
        settle_deadline = time.monotonic() + args.settle_seconds
        previous = operator_requests(info)
        stable_since = time.monotonic()
        while time.monotonic() < settle_deadline:
            time.sleep(2)
            current = operator_requests(info)
            if diff(current, previous)["writes"]:
                stable_since = time.monotonic()
            elif time.monotonic() - stable_since >= 6:
                break
            previous = current
        after_create = operator_requests(info)
        cpu_create = sampler.cpu() - cpu0
        peak_create = sampler.peak()

        # no-op resync: nothing changes; every unfinished object is looked at again at least once
        resync_window = args.resync_seconds + 8
        log(f"N={n}: no-op resync window {resync_window}s")
        cpu1 = sampler.cpu()
        time.sleep(resync_window)
        after_resync = operator_requests(info)
        cpu_resync = sampler.cpu() - cpu1
        settled_rss = sampler.rss()

        soak: dict[str, Any] | None = None
        if args.soak_minutes and n == args.soak_size:
            soak = run_soak(sampler, info, args.soak_minutes)

        job_latency = [watchers["job"].seen[x] - sent[x] for x in tj_names if x in watchers["job"].seen]
        deploy_latency = [
            watchers["deployment"].seen[x] - sent[x] for x in md_names if x in watchers["deployment"].seen
        ]
        create_requests = diff(after_create, before)
        resync_requests = diff(after_resync, after_create)
        objects = len(items)
        result = {
            "n_trainingjobs": len(tj_names),
            "n_modeldeployments": len(md_names),
            "rate_per_s": args.rate,
            "create_seconds": round(create_seconds, 2),
            "converged": converged,
            "converge_seconds": round(converge_seconds, 2),
            "job_latency_p50_s": round(percentile(job_latency, 50), 3),
            "job_latency_p99_s": round(percentile(job_latency, 99), 3),
            "job_latency_max_s": round(max(job_latency, default=float("nan")), 3),
            "jobs_seen": len(job_latency),
            # p99 per tenth of the burst, in creation order: flat = keeping up; rising = a queue builds
            "job_latency_p99_by_tenth_s": [
                round(
                    percentile(
                        job_latency[len(job_latency) * k // 10 : len(job_latency) * (k + 1) // 10], 99
                    ),
                    3,
                )
                for k in range(10)
            ],
            "deployment_latency_p50_s": round(percentile(deploy_latency, 50), 3),
            "deployment_latency_p99_s": round(percentile(deploy_latency, 99), 3),
            "operator_cpu_create_s": round(cpu_create, 2),
            # while the creates were sent: the operator's CPU, and how busy the whole machine was (1.0 = every
            # core, whoever used it: control plane, kwok, benchmark client, other work)
            "operator_cpu_burst_s": round(cpu_burst, 2),
            "machine_busy_burst": round(busy_burst / (create_seconds * (os.cpu_count() or 1)), 3),
            "operator_cpu_resync_s": round(cpu_resync, 2),
            "rss_idle_mib": round(idle_rss, 1),
            "rss_peak_mib": round(max(peak_create, sampler.peak()), 1),
            "rss_settled_mib": round(settled_rss, 1),
            "requests_startup": startup_requests,
            "requests_create": create_requests,
            "requests_resync": resync_requests,
            "resync_window_s": resync_window,
            "writes_per_object_create": round(create_requests["writes"] / objects, 2),
            "reads_per_object_create": round(create_requests["read"] / objects, 2),
            "watches_create": create_requests["watch"],
            "writes_resync": resync_requests["writes"],
            "reads_per_object_resync": round(resync_requests["read"] / objects, 2),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "soak": soak,
        }
        for watcher in watchers.values():
            watcher.stopped.set()
        log(f"N={n}: {json.dumps({k: v for k, v in result.items() if k != 'soak'})}")
        return result
    finally:
        sampler.stopped.set()
        stop_operator(process)
        if process.returncode not in (0, None, -signal.SIGTERM):
            log(f"operator exited with {process.returncode}; see {log_path}")


def run_soak(sampler: ProcSampler, info: lc.ClusterInfo, minutes: float) -> dict[str, Any]:
    log(f"soak: {minutes} min of resync timers, RSS every 30 s")
    start = time.monotonic()
    before = operator_requests(info)
    points: list[tuple[float, float]] = []
    while time.monotonic() - start < minutes * 60:
        points.append(((time.monotonic() - start) / 60, sampler.rss()))
        time.sleep(30)
    points.append(((time.monotonic() - start) / 60, sampler.rss()))
    tail = [p for p in points if p[0] >= 1.0] or points
    slope = (
        statistics.linear_regression([p[0] for p in tail], [p[1] for p in tail]).slope
        if len(tail) > 1
        else 0.0
    )
    requests = diff(operator_requests(info), before)
    return {
        "minutes": minutes,
        "rss_mib": [[round(t, 2), round(r, 1)] for t, r in points],
        "rss_first_mib": round(points[0][1], 1),
        "rss_last_mib": round(points[-1][1], 1),
        "rss_slope_mib_per_hour": round(slope * 60, 2),
        "requests": requests,
    }


# ------------------------------------------------------------------------------------------------- main


def register_model(tracking_uri: str) -> None:
    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mlflow.create_registered_model(MODEL)
    mlflow.create_model_version(MODEL, source=f"s3://placeholder-bucket/{MODEL}/1")
    mlflow.set_registered_model_alias(MODEL, "champion", "1")


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle since boot (every core, from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu_model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "operator"], cwd=REPO, capture_output=True, text=True
    ).stdout
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "commit": commit.strip() + ("+dirty" if dirty.strip() else ""),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,500,1000,2000", help="TrainingJob counts, comma-separated")
    parser.add_argument(
        "--md-ratio", type=int, default=5, help="one ModelDeployment per this many TrainingJobs"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="creates per second")
    parser.add_argument("--resync-seconds", type=int, default=15, help="operator resync/progress interval")
    parser.add_argument("--idle-seconds", type=float, default=8.0, help="wait before measuring idle RSS")
    parser.add_argument("--settle-seconds", type=float, default=45.0, help="most to wait for trailing writes")
    parser.add_argument("--converge-timeout", type=float, default=600.0)
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="RSS soak after convergence")
    parser.add_argument("--soak-size", type=int, default=None, help="size to soak at (default: the largest)")
    parser.add_argument("--label", default="current", help="results go to operator-<label>.json")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--crds", default=str(REPO / "crds"), help="CRD directory to install")
    parser.add_argument(
        "--operator-source",
        default=str(REPO / "operator"),
        help="source root of the operator to run (e.g. a copy of an older tree, for before/after)",
    )
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    args.soak_size = args.soak_size or max(sizes)

    state = lc.StateDir(Path(os.environ.get("MLOPS_CLUSTER_DIR") or REPO / ".cluster-bench").resolve())
    workdir = Path(tempfile.mkdtemp(prefix="mlops-bench-operator-"))
    log(f"work dir {workdir} (operator logs), cluster dir {state.root}")
    shutil.copytree(Path(args.crds), workdir / "crds")
    mlflow = MlflowServer(workdir / "mlflow").start()
    results: list[dict[str, Any]] = []
    out = RESULTS / f"operator-{args.label}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "label": args.label,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
        "results": results,
    }
    try:
        register_model(mlflow.tracking_uri)
        for n in sizes:
            results.append(run_size(n, args, state, mlflow.tracking_uri, workdir))
            document["kube_version"] = (lc.load_info(state) or lc.ClusterInfo).kube_version  # type: ignore[union-attr]
            out.write_text(json.dumps(document, indent=2) + "\n")
    finally:
        mlflow.stop()
        lc.down(state)
    log(f"wrote {out}")
    if not args.no_plot:
        subprocess.run([sys.executable, str(Path(__file__).with_name("plot.py"))], check=False)
    shutil.rmtree(workdir / "mlflow", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
