#!/usr/bin/env python
"""Serving benchmark: ``mlops-serve`` (mlops_operator.runtime.serve) against ``mlflow models serve`` on the
same registered models, one worker each, pinned to the same core, loaded by wrk from another core.

    .venv/bin/python benchmarks/serving/run.py            # full run (~6 min), appends to results/
    .venv/bin/python benchmarks/serving/run.py --quick    # 3 s per measurement

What it does:
1. starts a private ``mlflow server`` (SQLite, temporary directory) and registers two models the way the
   built-in trainer logs them (TabularPyfuncModel + signature + input example + reference profile):
   ``small`` (iris-sized MLP 4-16-3) and ``large`` (4-512-512-64-3, ~300k parameters);
2. for each model starts our server (one process, ``taskset -c <server core>``) and ``mlflow models serve
   --workers 1 --env-manager local`` (same core), and runs ``wrk`` (``taskset -c <client core>``, one thread,
   keep-alive) with 1 and 64 connections on a one-row request;
3. measures the metrics overhead (three servers with MLOPS_SERVER_METRICS=off / basic / full, measured in
   alternating rounds) and our generic pyfunc path (MLOPS_PREDICT_PATH=generic), and times the parts of
   the request path in-process (feature histograms, prediction counter, request metrics, parsing);
4. writes ``results/<UTC time>.json`` (raw) and regenerates ``results.md`` from every JSON in results/.

Requires wrk (Debian: ``apt-get install -y wrk``) and taskset; the load average before/after each
measurement is recorded, since other work on the machine skews results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "operator"), str(HERE)]

from models import FEATURES, Registered, register_tabular  # noqa: E402

RESULTS = HERE / "results"
ROW = [5.1, 3.5, 1.4, 0.2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            if response.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def pinned(core: int | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if core is not None and shutil.which("taskset") else cmd


def wrk(url: str, body_file: Path, connections: int, seconds: float, core: int | None) -> dict[str, Any]:
    cmd = pinned(
        core,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(HERE / "post.lua"),
            url,
        ],
    )
    env = {**os.environ, "BODY_FILE": str(body_file)}
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rows: list[dict[str, Any]] = []
        self.tracking_uri = ""
        bodies = workdir / "bodies"
        bodies.mkdir()
        self.invocations = bodies / "invocations.json"
        self.invocations.write_text(
            json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [ROW]}})
        )
        self.oip = bodies / "oip.json"
        self.oip.write_text(
            json.dumps(
                {
                    "inputs": [
                        {"name": f, "shape": [1], "datatype": "FP64", "data": [v]}
                        for f, v in zip(FEATURES, ROW, strict=True)
                    ]
                }
            )
        )

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
        path = os.pathsep.join(
            [str(Path(sys.executable).parent), base.get("PATH", "")]
        )  # mlflow runs `uvicorn`
        return {
            **base,
            "PATH": path,
            "PYTHONPATH": str(REPO / "operator"),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            **extra,
        }

    def measure(self, label: dict[str, Any], url: str, body: Path, connections: int) -> None:
        args = self.args
        wrk(url, body, connections, args.warmup, args.client_core)  # warm-up, discarded
        before = load_average()
        result = wrk(url, body, connections, args.duration, args.client_core)
        row = {
            **label,
            "connections": connections,
            **result,
            "load_before": before,
            "load_after": load_average(),
        }
        self.rows.append(row)
        print(
            f"  {label['server']:<22} {label['model']:<6} {label['endpoint']:<12} c={connections:<3} "
            f"{result['rps']:>9.0f} rps  p50 {result['p50_us'] / 1000:.3f} ms  "
            f"p99 {result['p99_us'] / 1000:.3f} ms  "
            f"non-2xx {result['errors']['status']}  load {before[0]}",
            flush=True,
        )

    def ours(self, model: Registered, tag: str, conns: list[int], endpoints: list[str], **env: str) -> None:
        port = free_port()
        environment = self.env(MLOPS_MODEL_URI=model.uri, MLOPS_SERVER_PORT=str(port), **env)
        cmd = pinned(self.args.server_core, [sys.executable, "-m", "mlops_operator.runtime.serve"])
        with process(cmd, environment, self.workdir / f"ours-{tag}-{port}.log") as proc:
            wait_http(f"http://127.0.0.1:{port}/v2/health/ready", 180, proc)
            for endpoint in endpoints:
                path, body = (
                    ("/invocations", self.invocations)
                    if endpoint == "invocations"
                    else (f"/v2/models/{model.name}/infer", self.oip)
                )
                for c in conns:
                    label = {
                        "server": f"mlops-serve{tag}",
                        "model": self.model_label(model),
                        "endpoint": endpoint,
                    }
                    self.measure(label, f"http://127.0.0.1:{port}{path}", body, c)

    def overhead(self, model: Registered, rounds: int) -> None:
        """Metrics off / basic / full, three servers started side by side (an idle one costs nothing) and
        measured in alternation, so that drifting background load hits all three alike."""
        variants = {"off": "off", "basic": "basic", "full": "full"}
        with contextlib.ExitStack() as stack:
            urls = {}
            for name, level in variants.items():
                port = free_port()
                environment = self.env(
                    MLOPS_MODEL_URI=model.uri, MLOPS_SERVER_PORT=str(port), MLOPS_SERVER_METRICS=level
                )
                cmd = pinned(self.args.server_core, [sys.executable, "-m", "mlops_operator.runtime.serve"])
                proc = stack.enter_context(
                    process(cmd, environment, self.workdir / f"ours-metrics-{name}-{port}.log")
                )
                wait_http(f"http://127.0.0.1:{port}/v2/health/ready", 180, proc)
                urls[name] = f"http://127.0.0.1:{port}/invocations"
            for round_ in range(rounds):
                for name, url in urls.items():
                    label = {
                        "server": f"mlops-serve (metrics {name})",
                        "model": self.model_label(model),
                        "endpoint": "invocations",
                        "round": round_,
                    }
                    self.measure(label, url, self.invocations, 64)

    def mlflow(self, model: Registered, conns: list[int]) -> None:
        port = free_port()
        cmd = pinned(
            self.args.server_core,
            [
                str(Path(sys.executable).parent / "mlflow"),
                "models",
                "serve",
                "-m",
                model.uri,
                "--env-manager",
                "local",
                "-w",
                "1",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
        )
        with process(cmd, self.env(), self.workdir / f"mlflow-{port}.log") as proc:
            wait_http(f"http://127.0.0.1:{port}/ping", 300, proc)
            for c in conns:
                label = {
                    "server": "mlflow models serve",
                    "model": self.model_label(model),
                    "endpoint": "invocations",
                }
                self.measure(label, f"http://127.0.0.1:{port}/invocations", self.invocations, c)

    def model_label(self, model: Registered) -> str:
        return "small" if model.parameters < 10_000 else "large"


def feature_histogram_cost(model: Registered, tracking_uri: str) -> dict[str, float]:
    """In-process: microseconds per request of the parts of the request path (one row, median of runs)."""
    import mlflow
    from mlflow import MlflowClient

    from mlops_operator.api.v1alpha1.pod_contract import PROFILE_ARTIFACT
    from mlops_operator.drift.profile import load_profile
    from mlops_operator.runtime.serving import jsonio
    from mlops_operator.runtime.serving.histograms import FeatureCounters, PredictionCounters
    from mlops_operator.runtime.serving.metrics import ServerMetrics
    from mlops_operator.runtime.serving.payload import parse_invocations
    from mlops_operator.runtime.serving.schema import Column, InputSchema

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    run_id = client.get_model_version(model.name, model.version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        profile = load_profile(Path(client.download_artifacts(run_id, PROFILE_ARTIFACT, tmp)).read_text())
    schema = InputSchema(columns=tuple(Column(f) for f in FEATURES))
    raw = json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [ROW]}}).encode()
    batch = parse_invocations(jsonio.loads(raw), schema)
    counters = FeatureCounters(profile, schema.columns)
    import numpy as np

    predictions = PredictionCounters.for_model(profile, np.array([0]))
    metrics = ServerMetrics(model="m", version="1", role="primary")
    out = np.array([1])

    def per_call(fn: Any, n: int = 20000) -> float:
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples.append((time.perf_counter() - t0) / n * 1e6)
        return round(statistics.median(samples), 2)

    return {
        "feature_histograms_us": per_call(lambda: counters.observe(batch)),
        "prediction_counter_us": per_call(lambda: predictions.observe(out)),
        "request_counter_and_latency_us": per_call(
            lambda: metrics.observe_request("/invocations", 200, 0.0001)
        ),
        "parse_and_validate_us": per_call(lambda: parse_invocations(jsonio.loads(raw), schema)),
        "scrape_us": per_call(lambda: metrics.render(), 200),
    }


def app_overhead(model: Registered, tracking_uri: str, core: int | None) -> dict[str, float]:
    """In-process A/B of the whole request path (ASGI app, no sockets) with metrics full / basic / off,
    interleaved, pinned to the server core: microseconds per one-row /invocations request (median of 9)."""
    import asyncio

    from mlops_operator.runtime.serving import model as serving_model
    from mlops_operator.runtime.serving.app import ServerApp
    from mlops_operator.runtime.serving.config import ServerConfig

    env = {"MLOPS_MODEL_URI": model.uri, "MLFLOW_TRACKING_URI": tracking_uri}
    loaded = serving_model.load(ServerConfig.from_env(env))
    body = json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [ROW]}}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: Any) -> None:
        return None

    async def per_request(app: ServerApp, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await app(scope, receive, send)
        return (time.perf_counter() - t0) / n * 1e6

    async def measure() -> dict[str, float]:
        apps = {}
        for level in ("full", "basic", "off"):
            app = ServerApp(ServerConfig.from_env({**env, "MLOPS_SERVER_METRICS": level}))
            app.set_model(loaded)
            await per_request(app, 2000)
            apps[level] = app
        samples: dict[str, list[float]] = {k: [] for k in apps}
        for _ in range(9):
            for level, app in apps.items():
                samples[level].append(await per_request(app, 4000))
        return {level: round(statistics.median(v), 2) for level, v in samples.items()}

    previous = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        return asyncio.run(measure())
    finally:
        os.sched_setaffinity(0, previous)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("torch", "mlflow", "uvicorn", "uvloop", "httptools", "orjson", "numpy", "prometheus_client"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            versions[name] = None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": versions,
        "wrk": wrk_version[0] if wrk_version else None,
        "git": commit,
    }


@contextlib.contextmanager
def private_mlflow_server(workdir: Path) -> Iterator[str]:
    """A private ``mlflow server`` (SQLite and artifacts under ``workdir``, one worker); yields its
    tracking URI once it answers /health, stops it on exit."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        str(workdir / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with process(command, env, workdir / "mlflow-server.log") as server:
        tracking_uri = f"http://127.0.0.1:{port}"
        wait_http(f"{tracking_uri}/health", 120, server)
        yield tracking_uri


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load first")
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 s measurements, 1 s warm-up")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds of the metrics overhead test"
    )
    parser.add_argument("--note", default="", help="free text recorded with the results (load conditions)")
    args = parser.parse_args()
    # a SIGTERM unwinds (stopping the servers this script started) instead of leaving them behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.duration, args.warmup, args.rounds = 3.0, 1.0, 2
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install -y wrk", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workdir = Path(tmp)
        bench = Bench(args, workdir)
        with private_mlflow_server(workdir) as tracking_uri:
            bench.tracking_uri = tracking_uri
            print(f"MLflow server at {bench.tracking_uri}; registering models", flush=True)
            small = register_tabular(bench.tracking_uri, "bench-small", [16])
            large = register_tabular(bench.tracking_uri, "bench-large", [512, 512, 64])
            print(f"  small: {small.parameters} parameters, large: {large.parameters} parameters", flush=True)
            micro = feature_histogram_cost(small, bench.tracking_uri)
            print(f"  in-process costs (us/request): {micro}", flush=True)
            app_us = app_overhead(small, bench.tracking_uri, args.server_core)
            print(f"  in-process app (us/request, metrics full/basic/off): {app_us}", flush=True)
            for model in (small, large):
                bench.ours(model, "", [1, 64], ["invocations", "oip"])
                bench.mlflow(model, [1, 64])
            bench.overhead(small, args.rounds)
            bench.ours(small, " (generic pyfunc)", [1, 64], ["invocations"], MLOPS_PREDICT_PATH="generic")
    record = {
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k != "note"},
        "note": args.note,
        "machine": machine(),
        "models": {"small": small.parameters, "large": large.parameters},
        "in_process_us": micro,
        "in_process_app_us": app_us,
        "results": bench.rows,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    import report

    report.write(RESULTS, HERE / "results.md")
    print(f"wrote {HERE / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
