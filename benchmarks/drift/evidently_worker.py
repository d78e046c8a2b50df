"""Evidently's stat tests on the benchmark data (run by run.py with --evidently-python: Evidently 0.7 does not
import with pandas 3, so it lives in its own virtual environment, e.g.

    python3.11 -m venv /tmp/evvenv && /tmp/evvenv/bin/pip install evidently "pandas<3"

Times Evidently's legacy per-column stat tests (what its DataDriftPreset runs per column) on the first
``--evidently-features`` features of the same seeded data; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datagen


def _peak_mib() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would include the parent's RSS at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ref-rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--evidently-features", type=int, default=10)
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    args = parser.parse_args()

    import evidently
    from evidently.legacy.calculations.stattests import (
        chi_stat_test,
        jensenshannon_stat_test,
        ks_stat_test,
        psi_stat_test,
        wasserstein_stat_test,
    )
    from evidently.legacy.core import ColumnType

    k = args.evidently_features
    ref = datagen.table(datagen.REFERENCE_SEED, args.ref_rows, args.features, args.chunk_rows, live=False)[
        :, :k
    ]
    cur = datagen.table(datagen.LIVE_SEED, args.rows, args.features, args.chunk_rows, live=True)[:, :k]
    ref_s = [pd.Series(ref[:, j].astype(np.float64)) for j in range(k)]
    cur_s = [pd.Series(cur[:, j].astype(np.float64)) for j in range(k)]
    del ref, cur
    tests = {
        "psi": psi_stat_test,
        "jensenshannon": jensenshannon_stat_test,
        "ks": ks_stat_test,
        "wasserstein": wasserstein_stat_test,
        "chi2": chi_stat_test,
    }
    methods = {}
    for name, test in tests.items():
        if name == "chi2":
            # Evidently's chi-square is for categorical columns (one category per distinct value): on
            # continuous floats it builds a million categories; time it on the values rounded to 1 decimal
            refs = [s.round(1).astype(str) for s in ref_s]
            curs = [s.round(1).astype(str) for s in cur_s]
            kind = ColumnType.Categorical
        else:
            refs, curs, kind = ref_s, cur_s, ColumnType.Numerical
        t0 = time.perf_counter()
        drifted = [bool(test(r, c, kind, None).drifted) for r, c in zip(refs, curs, strict=True)]
        elapsed = time.perf_counter() - t0
        methods[name] = {
            "seconds": elapsed,
            "seconds_per_feature": elapsed / k,
            "extrapolated_100_features_s": elapsed / k * 100,
            "drifted": [j for j, d in enumerate(drifted) if d],
        }
    print(
        json.dumps(
            {
                "evidently": evidently.__version__,
                "pandas": pd.__version__,
                "features_timed": k,
                "methods": methods,
                "peak_rss_mib": _peak_mib(),
                "note": "Evidently bins psi/jensenshannon itself (Sturges bins on reference+current); "
                "chi2 timed on values rounded to 1 decimal as categories",
            }
        )
    )


if __name__ == "__main__":
    main()
