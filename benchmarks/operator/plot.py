"""Plot every ``benchmarks/results/operator-<label>.json`` (one line per label) into
``benchmarks/results/operator.png`` and print a markdown table of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
SKIP = {"smoke"}

PANELS: list[tuple[str, str, Any]] = [
    ("API writes per object, create cycle", "writes/object", lambda r: r["writes_per_object_create"]),
    (
        "API writes per object, excluding Events",
        "writes/object",
        lambda r: (
            (r["requests_create"]["writes"] - r["requests_create"]["events"])
            / (r["n_trainingjobs"] + r["n_modeldeployments"])
        ),
    ),
    ("writes during a no-op resync", "writes", lambda r: r["writes_resync"]),
    ("create -> child Job latency p99", "seconds", lambda r: r["job_latency_p99_s"]),
    ("time to converge", "seconds", lambda r: r["converge_seconds"]),
    ("operator peak RSS", "MiB", lambda r: r["rss_peak_mib"]),
    (
        "operator CPU per object (create cycle)",
        "ms/object",
        lambda r: 1000 * r["operator_cpu_create_s"] / (r["n_trainingjobs"] + r["n_modeldeployments"]),
    ),
    (
        "API reads per object, create cycle",
        "reads/object",
        lambda r: r["reads_per_object_create"],
    ),
]


def load() -> dict[str, dict[str, Any]]:
    runs = {}
    for path in sorted(RESULTS.glob("operator-*.json")):
        label = path.stem.removeprefix("operator-")
        if label not in SKIP:
            runs[label] = json.loads(path.read_text())
    return runs


def plot(runs: dict[str, dict[str, Any]]) -> Path:
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    for ax, (title, unit, value) in zip(axes.flat, PANELS, strict=True):
        for label, run in runs.items():
            rows = sorted(run["results"], key=lambda r: r["n_trainingjobs"])
            xs = [r["n_trainingjobs"] for r in rows]
            ys = [value(r) for r in rows]
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("TrainingJobs (+ 1/5 as many ModelDeployments)")
        ax.set_ylabel(unit)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("mlops-operator at scale (local control plane, kwok nodes)")
    fig.tight_layout()
    out = RESULTS / "operator.png"
    fig.savefig(out, dpi=90)
    return out


def table(runs: dict[str, dict[str, Any]]) -> str:
    header = (
        "| run | TJ + MD | converge s | Job p50 / p99 s | writes/obj (excl. Events) | status / children / "
        "Events / kopf writes | reads/obj | resync writes | CPU s | RSS idle / peak MiB | load 1m |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for label, run in runs.items():
        for r in sorted(run["results"], key=lambda r: r["n_trainingjobs"]):
            objects = r["n_trainingjobs"] + r["n_modeldeployments"]
            c = r["requests_create"]
            own = (c["writes"] - c["events"]) / objects
            lines.append(
                f"| {label} | {r['n_trainingjobs']} + {r['n_modeldeployments']} | {r['converge_seconds']} | "
                f"{r['job_latency_p50_s']} / {r['job_latency_p99_s']} | {r['writes_per_object_create']} "
                f"({own:.2f}) | {c['status']} / {c['children']} / {c['events']} / "
                f"{c['parent']} | {r['reads_per_object_create']} | {r['writes_resync']} | "
                f"{r['operator_cpu_create_s']} | {r['rss_idle_mib']} / {r['rss_peak_mib']} | "
                f"{r['loadavg_start'][0]} |"
            )
    return header + "\n".join(lines) + "\n"


def main() -> int:
    runs = load()
    if not runs:
        print("no results in", RESULTS, file=sys.stderr)
        return 1
    out = plot(runs)
    print(table(runs))
    print(f"plot: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
