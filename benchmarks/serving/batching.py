"""Micro-batching on vs off: throughput and latency of ``mlops-serve`` for the small (131 parameters) and
large (~300k parameters) MLP, one-row ``/invocations`` requests, keep-alive, 1 and 64 connections, with
``MLOPS_MAX_BATCH_SIZE`` unset (off) and set (on), the server pinned to one core and wrk to the other.

    .venv/bin/python benchmarks/serving/batching.py [--duration 5] [--batch 32] [--delay-ms 2]

Prints a table and writes ``results/batching/batching-<UTC start>.json``. Uses run.py's harness (same
models, same load generator).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from run import RESULTS, Bench, machine, private_mlflow_server, register_tabular  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=32, help="MLOPS_MAX_BATCH_SIZE when on")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="MLOPS_MAX_BATCH_DELAY_MS when on")
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install -y wrk", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="batching-bench-") as tmp:
        workdir = Path(tmp)
        bench = Bench(args, workdir)
        with private_mlflow_server(workdir) as tracking_uri:
            bench.tracking_uri = tracking_uri
            small = register_tabular(bench.tracking_uri, "bench-small", [16])
            large = register_tabular(bench.tracking_uri, "bench-large", [512, 512, 64])
            on = {"MLOPS_MAX_BATCH_SIZE": str(args.batch), "MLOPS_MAX_BATCH_DELAY_MS": str(args.delay_ms)}
            for model in (small, large):
                bench.ours(model, " (batching off)", [1, 64], ["invocations"])
                bench.ours(model, " (batching on)", [1, 64], ["invocations"], **on)
    record = {
        "started": started.isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k != "note"},
        "note": args.note,
        "machine": machine(),
        "results": bench.rows,
    }
    (RESULTS / "batching").mkdir(parents=True, exist_ok=True)  # not in results/: report.py reads those
    out = RESULTS / "batching" / f"batching-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print("\n| model | connections | batching | rps | p50 ms | p99 ms | non-2xx | load |")
    print("|---|---|---|---|---|---|---|---|")
    for row in bench.rows:
        print(
            f"| {row['model']} | {row['connections']} | {'on' if 'on)' in row['server'] else 'off'} "
            f"| {row['rps']:.0f} | {row['p50_us'] / 1000:.3f} | {row['p99_us'] / 1000:.3f} "
            f"| {row['errors']['status']} | {row['load_before'][0]} |"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
