"""Drift engine benchmark: time and peak memory over 10^6 rows x 100 features, scipy (and Evidently) on the
same data, the model server's per-request counting cost, and detection power by profile bin count.

    .venv/bin/python benchmarks/drift/run.py                      # everything, each timing twice
    .venv/bin/python benchmarks/drift/run.py --only server,counts --repeat 3
    .venv/bin/python benchmarks/drift/run.py --evidently-python /tmp/evvenv/bin/python

Every scenario runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own. Data is seeded
(benchmarks/drift/datagen.py). Results go to ``--out``/results.json (raw, every repeat) and a markdown
summary to stdout; results.md is written from them by hand, with the commentary.

Scenarios:
  counts     evaluate() on live histogram counts (what the DriftPolicy controller has), every method
  chunked    live data generated chunk by chunk (65,536 rows, float32), HistogramAccumulator, evaluate()
  matrix     the same from a float32 matrix held in memory (fed in row chunks)
  raw        evaluate_samples() on the in-memory float32 matrix (raw-value KS and Wasserstein, binned others)
  scipy      scipy.stats / scipy.spatial on the same data (reference as a raw 10^5 sample)
  server     FeatureCounters.observe() for 1- and 32-row requests (10 features), and plain bin_index+bincount
  evidently  Evidently's legacy stat tests on the first --evidently-features features (other venv)
  power      detection power per method, scenario, sample size and profile bin count (statistics, no timing)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "operator"))

import datagen  # noqa: E402

METHODS = ("psi", "jensenshannon", "chi2", "ks", "wasserstein", "auto")
SCENARIOS = ("counts", "chunked", "matrix", "raw", "scipy", "server", "evidently")


def _peak_mib() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would include the parent's RSS at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _detection(result: Any) -> dict[str, int]:
    drifted = set(result.drifted_features)
    names = datagen.names(len(result.features))
    shifted = {names[j] for j in datagen.SHIFTED if j < len(names)}
    wider = {names[j] for j in datagen.WIDER if j < len(names)}
    return {
        "shifted_caught": len(drifted & shifted),
        "shifted": len(shifted),
        "wider_caught": len(drifted & wider),
        "wider": len(wider),
        "false_alarms": len(drifted - shifted - wider),
        "unchanged": len(names) - len(shifted) - len(wider),
    }


def _evaluate_all(profile: Any, counts: Any) -> dict[str, Any]:
    from mlops_operator.drift.engine import DriftConfig, evaluate

    out: dict[str, Any] = {}
    for method in METHODS:
        t0 = time.perf_counter()
        result = evaluate(profile, counts, DriftConfig(method=method, min_samples=0))  # type: ignore[arg-type]
        out[method] = {"evaluate_s": time.perf_counter() - t0, **_detection(result)}
    return out


# --------------------------------------------------------------------------------------------------------
# workers (one per subprocess)
# --------------------------------------------------------------------------------------------------------


def work_counts(args: argparse.Namespace, profile: Any) -> dict[str, Any]:
    from mlops_operator.drift.engine import DriftConfig, FeatureCounts, evaluate

    raw = json.loads((Path(args.workdir) / "counts.json").read_text())
    counts = {k: FeatureCounts(bins=v["bins"], missing=v["missing"]) for k, v in raw.items()}
    out: dict[str, Any] = {"rss_after_setup_mib": _peak_mib(), "methods": {}}
    for method in METHODS:
        config = DriftConfig(method=method, min_samples=0)  # type: ignore[arg-type]
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            result = evaluate(profile, counts, config)
            times.append(time.perf_counter() - t0)
        out["methods"][method] = {
            "evaluate_s_min": min(times),
            "evaluate_s_median": statistics.median(times),
            **_detection(result),
        }
    return out


def work_chunked(args: argparse.Namespace, profile: Any) -> dict[str, Any]:
    from mlops_operator.drift.accumulate import HistogramAccumulator

    names = datagen.names(args.features)
    acc = HistogramAccumulator(profile, columns=names)
    rss_setup = _peak_mib()
    gen_s = acc_s = 0.0
    it = datagen.chunks(datagen.LIVE_SEED, args.rows, args.features, args.chunk_rows, live=True)
    while True:
        t0 = time.perf_counter()
        chunk = next(it, None)
        gen_s += time.perf_counter() - t0
        if chunk is None:
            break
        t0 = time.perf_counter()
        acc.update(chunk)
        acc_s += time.perf_counter() - t0
        del chunk
    counts = acc.counts()
    path = Path(args.workdir) / "counts.json"
    if not path.exists():
        path.write_text(
            json.dumps(
                {k: {"bins": np.asarray(v.bins).tolist(), "missing": v.missing} for k, v in counts.items()}
            )
        )
    methods = _evaluate_all(profile, counts)
    return {
        "generate_s": gen_s,
        "accumulate_s": acc_s,
        "rss_after_setup_mib": rss_setup,
        "methods": {m: {**v, "total_s": acc_s + v["evaluate_s"]} for m, v in methods.items()},
    }


def work_matrix(args: argparse.Namespace, profile: Any) -> dict[str, Any]:
    from mlops_operator.drift.accumulate import HistogramAccumulator

    rss_setup = _peak_mib()
    t0 = time.perf_counter()
    matrix = datagen.table(datagen.LIVE_SEED, args.rows, args.features, args.chunk_rows, live=True)
    gen_s = time.perf_counter() - t0
    acc = HistogramAccumulator(profile, columns=datagen.names(args.features))
    t0 = time.perf_counter()
    for start in range(0, args.rows, args.chunk_rows):
        acc.update(matrix[start : start + args.chunk_rows])
    acc_s = time.perf_counter() - t0
    methods = _evaluate_all(profile, acc.counts())
    return {
        "generate_s": gen_s,
        "accumulate_s": acc_s,
        "matrix_mib": matrix.nbytes / 2**20,
        "rss_after_setup_mib": rss_setup,
        "methods": {m: {**v, "total_s": acc_s + v["evaluate_s"]} for m, v in methods.items()},
    }


def work_raw(args: argparse.Namespace, profile: Any) -> dict[str, Any]:
    from mlops_operator.drift.engine import DriftConfig, evaluate_samples

    rss_setup = _peak_mib()
    matrix = datagen.table(datagen.LIVE_SEED, args.rows, args.features, args.chunk_rows, live=True)
    names = datagen.names(args.features)
    data = {n: matrix[:, j] for j, n in enumerate(names)}
    out: dict[str, Any] = {}
    for method in ("ks", "wasserstein", "psi"):
        t0 = time.perf_counter()
        result = evaluate_samples(profile, data, DriftConfig(method=method, min_samples=0))  # type: ignore[arg-type]
        out[method] = {"total_s": time.perf_counter() - t0, **_detection(result)}
    return {"rss_after_setup_mib": rss_setup, "matrix_mib": matrix.nbytes / 2**20, "methods": out}


def work_scipy(args: argparse.Namespace, profile: Any) -> dict[str, Any]:
    import scipy
    from scipy import special
    from scipy import stats as ss
    from scipy.spatial.distance import jensenshannon

    rss_setup = _peak_mib()
    ref = np.ascontiguousarray(
        datagen.table(datagen.REFERENCE_SEED, args.ref_rows, args.features, args.chunk_rows, live=False).T
    )
    cur = np.ascontiguousarray(
        datagen.table(datagen.LIVE_SEED, args.rows, args.features, args.chunk_rows, live=True).T
    )  # feature-major, so every column is contiguous (scipy would copy strided columns anyway)
    names = datagen.names(args.features)
    timings: dict[str, float] = {}
    detected: dict[str, list[bool]] = {}

    def timed(name: str, fn: Callable[[int], bool]) -> None:
        t0 = time.perf_counter()
        detected[name] = [fn(j) for j in range(len(names))]
        timings[name] = time.perf_counter() - t0

    hist: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def binned(j: int) -> bool:
        feature = profile.features[j]
        inner = np.asarray(feature.bin_edges[1:-1])
        c = np.bincount(np.searchsorted(inner, cur[j], side="right"), minlength=feature.bins).astype(float)
        hist[j] = (np.asarray(feature.bin_counts, dtype=float), c)
        return False

    def psi(j: int) -> bool:
        r, c = hist[j]
        p, q = np.maximum(r / r.sum(), 1e-4), np.maximum(c / c.sum(), 1e-4)
        return bool((special.rel_entr(q, p) + special.rel_entr(p, q)).sum() > 0.1)

    def js(j: int) -> bool:
        r, c = hist[j]
        return bool(jensenshannon(r, c) > 0.1)

    def chi2(j: int) -> bool:
        r, c = hist[j]
        keep = (r + c) > 0
        return bool(ss.chi2_contingency(np.vstack([r[keep], c[keep]]), correction=False).pvalue < 0.05)

    def ks(j: int) -> bool:
        return bool(ss.ks_2samp(ref[j], cur[j]).pvalue < 0.05)

    def wasserstein(j: int) -> bool:
        return bool(ss.wasserstein_distance(ref[j], cur[j]) / max(float(ref[j].std()), 1e-3) > 0.1)

    timed("bin (searchsorted + bincount)", binned)
    for name, fn in (
        ("psi", psi),
        ("jensenshannon", js),
        ("chi2", chi2),
        ("ks", ks),
        ("wasserstein", wasserstein),
    ):
        timed(name, fn)
    methods = {}
    for name in ("psi", "jensenshannon", "chi2", "ks", "wasserstein"):
        drifted = {names[j] for j, d in enumerate(detected[name]) if d}
        shifted = {names[j] for j in datagen.SHIFTED}
        wider = {names[j] for j in datagen.WIDER}
        binned_s = (
            timings["bin (searchsorted + bincount)"] if name in ("psi", "jensenshannon", "chi2") else 0.0
        )
        methods[name] = {
            "stat_s": timings[name],
            "total_s": timings[name] + binned_s,
            "shifted_caught": len(drifted & shifted),
            "wider_caught": len(drifted & wider),
            "false_alarms": len(drifted - shifted - wider),
        }
    return {
        "scipy": scipy.__version__,
        "bin_s": timings["bin (searchsorted + bincount)"],
        "rss_after_setup_mib": rss_setup,
        "methods": methods,
        "note": "per feature, uncorrected (alpha 0.05 for ks/chi2); reference = the raw 10^5-row sample",
    }


def _server_case(rows: int, rng: np.random.Generator, prof10: Any, mixed: Any) -> dict[str, float]:
    import timeit

    from mlops_operator.runtime.serving.histograms import FeatureCounters
    from mlops_operator.runtime.serving.payload import parse_invocations
    from mlops_operator.runtime.serving.schema import Column, InputSchema

    names = datagen.names(10)
    cats = ["c0", "c1"]
    number = 20_000
    out: dict[str, float] = {}
    data = rng.normal(size=(rows, 10))
    schema = InputSchema(columns=tuple(Column(n) for n in names))
    batch = parse_invocations({"dataframe_split": {"columns": names, "data": data.tolist()}}, schema)
    counters = FeatureCounters(prof10, schema.columns)
    # amortised: observe() may queue small batches and bin them together every so often (flush)
    per = min(timeit.repeat(lambda: counters.observe(batch), number=number, repeat=5)) / number
    out[f"observe_10_numeric_{rows}_rows_us"] = per * 1e6
    flush = getattr(counters, "flush", None)
    if flush is not None:  # every request binned on its own

        def observe_and_flush() -> None:
            counters.observe(batch)
            flush()

        per = min(timeit.repeat(observe_and_flush, number=number, repeat=5)) / number
        out[f"observe_flush_10_numeric_{rows}_rows_us"] = per * 1e6

    # the plain way: bin_index + bincount per feature
    features = [prof10.feature(n) for n in names]
    cols = [np.ascontiguousarray(data[:, j]) for j in range(10)]
    acc = [np.zeros(f.bins, dtype=np.int64) for f in features]

    def plain() -> None:
        for j, f in enumerate(features):
            acc[j] += np.bincount(f.bin_index(cols[j]), minlength=f.bins)

    per = min(timeit.repeat(plain, number=number, repeat=5)) / number
    out[f"bin_index_bincount_10_numeric_{rows}_rows_us"] = per * 1e6

    mixed_schema = InputSchema(
        columns=(*(Column(n) for n in names[:8]), *(Column(c, "string") for c in cats))
    )
    records = [
        {**{n: float(data[i, j]) for j, n in enumerate(names[:8])}, **{c: "abcdefgh"[i % 8] for c in cats}}
        for i in range(rows)
    ]
    mixed_batch = parse_invocations({"dataframe_records": records}, mixed_schema)
    mixed_counters = FeatureCounters(mixed, mixed_schema.columns)
    per = min(timeit.repeat(lambda: mixed_counters.observe(mixed_batch), number=number, repeat=5)) / number
    out[f"observe_8_numeric_2_categorical_{rows}_rows_us"] = per * 1e6
    mixed_flush = getattr(mixed_counters, "flush", None)
    if mixed_flush is not None:

        def mixed_observe_and_flush() -> None:
            mixed_counters.observe(mixed_batch)
            mixed_flush()

        per = min(timeit.repeat(mixed_observe_and_flush, number=number, repeat=5)) / number
        out[f"observe_flush_8_numeric_2_categorical_{rows}_rows_us"] = per * 1e6
    return out


def work_server(args: argparse.Namespace, profile: Any) -> dict[str, Any]:
    from mlops_operator.drift.profile import build_profile

    rng = np.random.default_rng(5)
    names = datagen.names(10)
    prof10 = build_profile({n: rng.normal(size=5000) for n in names})
    mixed = build_profile(
        {
            **{n: rng.normal(size=5000) for n in names[:8]},
            **{c: rng.choice(list("abcdefgh"), 5000) for c in ["c0", "c1"]},
        }
    )
    out: dict[str, Any] = {}
    for rows in (1, 32):
        out.update(_server_case(rows, rng, prof10, mixed))
    return out


def work_evidently(args: argparse.Namespace, profile: Any) -> dict[str, Any]:
    if not args.evidently_python:
        return {"skipped": "no --evidently-python given (Evidently does not import with pandas 3 in .venv)"}
    proc = subprocess.run(
        [
            args.evidently_python,
            str(HERE / "evidently_worker.py"),
            "--rows",
            str(args.rows),
            "--ref-rows",
            str(args.ref_rows),
            "--features",
            str(args.features),
            "--evidently-features",
            str(args.evidently_features),
            "--chunk-rows",
            str(args.chunk_rows),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"},
    )
    if proc.returncode != 0:
        return {"failed": proc.stderr[-2000:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def work_power(args: argparse.Namespace, profile: Any) -> dict[str, Any]:
    """Per-feature power (alpha 0.05 uncorrected for ks/chi2, default thresholds for distances) of each
    method on live counts and raw values, by scenario, sample size and profile bin count."""
    from mlops_operator.drift.engine import DriftConfig, FeatureCounts, evaluate, evaluate_samples
    from mlops_operator.drift.profile import ReferenceProfile, profile_numeric

    def stretch_top(x: np.ndarray, q95: float) -> np.ndarray:
        return np.where(x > q95, q95 + 2.0 * (x - q95), x)

    scenarios: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
        "none": lambda r, n: r.normal(size=n),
        "shift 0.25 sd": lambda r, n: r.normal(0.25, 1.0, n),
        "shift 0.1 sd": lambda r, n: r.normal(0.1, 1.0, n),
        "variance x1.1": lambda r, n: r.normal(0.0, 1.1**0.5, n),
        "variance x1.25": lambda r, n: r.normal(0.0, 1.25**0.5, n),
        "top 5% stretched x2": lambda r, n: stretch_top(r.normal(size=n), 1.6448536269514722),
    }
    out: dict[str, Any] = {}
    seeds, per_seed = args.power_seeds, 5
    for rows in (10_000, 100_000):
        for bins in (10, 20, 50):
            for scenario, gen in scenarios.items():
                flags: dict[str, list[bool]] = {}
                for seed in range(seeds):
                    rng = np.random.default_rng([7, rows, bins, seed])
                    features = [
                        profile_numeric(f"x{i}", rng.normal(size=rows), bins=bins) for i in range(per_seed)
                    ]
                    prof = ReferenceProfile(row_count=rows, features=features)
                    live = {f.name: gen(rng, rows) for f in features}
                    counts = {f.name: FeatureCounts(bins=f.histogram(live[f.name])) for f in features}
                    for method in ("ks", "chi2", "psi", "jensenshannon", "wasserstein"):
                        config = DriftConfig(method=method, correction="none", min_samples=0)  # type: ignore[arg-type]
                        for path, result in (
                            ("counts", evaluate(prof, counts, config)),
                            *(
                                (("raw", evaluate_samples(prof, live, config)),)
                                if method in ("ks", "wasserstein")
                                else ()
                            ),
                        ):
                            flags.setdefault(f"{method}/{path}", []).extend(
                                f.drifted for f in result.features
                            )
                out[f"{rows}/{bins}/{scenario}"] = {k: float(np.mean(v)) for k, v in flags.items()}
    return {"trials_per_cell": seeds * per_seed, "power": out}


WORKERS: dict[str, Callable[[argparse.Namespace, Any], dict[str, Any]]] = {
    "counts": work_counts,
    "chunked": work_chunked,
    "matrix": work_matrix,
    "raw": work_raw,
    "scipy": work_scipy,
    "server": work_server,
    "evidently": work_evidently,
    "power": work_power,
}


def worker(args: argparse.Namespace) -> None:
    from mlops_operator.drift.profile import load_profile

    profile = load_profile((Path(args.workdir) / "profile.json").read_text())
    t0 = time.perf_counter()
    result = WORKERS[args.worker](args, profile)
    result["wall_s"] = time.perf_counter() - t0
    result.setdefault("peak_rss_mib", _peak_mib())  # the evidently worker reports its own process
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------------


def _spawn(args: argparse.Namespace, name: str, workdir: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--workdir",
        workdir,
        *("--rows", str(args.rows), "--ref-rows", str(args.ref_rows), "--features", str(args.features)),
        *("--chunk-rows", str(args.chunk_rows), "--power-seeds", str(args.power_seeds)),
        *("--evidently-features", str(args.evidently_features)),
        *(("--evidently-python", args.evidently_python) if args.evidently_python else ()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"failed": proc.stderr[-3000:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _summary(results: dict[str, Any]) -> str:
    lines = [
        "| scenario | repeat | method | time (s) | peak RSS (MiB) | caught shift / wider / false |",
        "|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        r = run["result"]
        for method, m in (r.get("methods") or {}).items():
            t = next(m[k] for k in ("total_s", "evaluate_s_min", "extrapolated_100_features_s") if k in m)
            caught = "/".join(str(m.get(k, "-")) for k in ("shifted_caught", "wider_caught", "false_alarms"))
            rss = r.get("peak_rss_mib", 0)
            lines.append(
                f"| {run['scenario']} | {run['repeat']} | {method} | {t:.4f} | {rss:.0f} | {caught} |"
            )
        if run["scenario"] == "server":
            for k, v in r.items():
                if k.endswith("_us"):
                    lines.append(
                        f"| server | {run['repeat']} | {k} | {v:.2f} us | {r['peak_rss_mib']:.0f} | |"
                    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ref-rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", default=",".join([*SCENARIOS, "power"]))
    parser.add_argument("--power-seeds", type=int, default=10)
    parser.add_argument("--evidently-python", default=None)
    parser.add_argument("--evidently-features", type=int, default=10)
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from mlops_operator.drift.profile import build_profile

    only = [s for s in args.only.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as workdir:
        t0 = time.perf_counter()
        ref = datagen.table(datagen.REFERENCE_SEED, args.ref_rows, args.features, args.chunk_rows, live=False)
        profile = build_profile(
            {n: ref[:, j].astype(np.float64) for j, n in enumerate(datagen.names(args.features))}
        )
        (Path(workdir) / "profile.json").write_text(profile.to_json())
        profile_s = time.perf_counter() - t0
        del ref
        runs = []
        order = [s for s in SCENARIOS if s in only]
        if "counts" in order and "chunked" not in order:
            order.insert(0, "chunked")  # makes the counts
        if "counts" in order:
            order.remove("counts")
            order.insert(order.index("chunked") + 1, "counts")
        for repeat in range(1, args.repeat + 1):
            for name in order:
                if name == "evidently" and repeat > 1 and not args.evidently_python:
                    continue
                print(f"[repeat {repeat}] {name} ...", file=sys.stderr, flush=True)
                runs.append({"scenario": name, "repeat": repeat, "result": _spawn(args, name, workdir)})
        power = _spawn(args, "power", workdir) if "power" in only else None
    import scipy

    results = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "rows": args.rows,
            "ref_rows": args.ref_rows,
            "features": args.features,
            "chunk_rows": args.chunk_rows,
            "profile_build_s": profile_s,
            "load_average_at_end": os.getloadavg(),
        },
        "runs": runs,
        "power": power,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "results.json" if set(only) >= {*SCENARIOS, "power"} else f"results-{'-'.join(only)}.json"
    (out / name).write_text(json.dumps(results, indent=1) + "\n")
    print(_summary(results))
    print(f"\nwrote {out / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
