"""The operator behind a fault-injecting proxy (tests/support/fault_proxy.py) to the real apiserver: 409s on
writes, 410 Gone and silent stalls on watches, 429 with Retry-After, dropped connections (some after the
write reached the apiserver). Randomised and seeded; every seed must converge to the same end state as the
fault-free expectation, with no duplicate children. See docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import faults
from tests.support.fault_proxy import FAULT_KINDS, FaultPlan, FaultProxy, Record
from tests.support.kube import Kube, wait_until
from tests.support.operator import OperatorProcess

SEEDS = [11, 23, 37, 41, 59]
TRAININGJOBS = [f"tj-{i}" for i in range(6)]
MODELDEPLOYMENTS = ["md-0", "md-1"]


def expected_end_state() -> dict[str, Any]:
    """What a fault-free run ends with (names are fixed, so every seed must end exactly here)."""
    tj = {
        "phase": "Succeeded",
        "observedGeneration": 1,
        "conditions": sorted(
            [
                ("Ready", "True", "Succeeded"),
                ("Running", "False", "Finished"),
                ("Scheduled", "True", "PodsScheduled"),
                ("Succeeded", "True", "JobSucceeded"),
                ("Valid", "True", "SpecValid"),
            ]
        ),
        "started": True,
        "completed": True,
        "podsSucceeded": 2,
    }
    return {"trainingjobs": dict.fromkeys(TRAININGJOBS, tj)}


def unrecovered_watches(proxy: FaultProxy) -> list[Record]:
    records = proxy.snapshot()
    return [
        fault
        for fault in records
        if fault.fault in ("gone", "stall")
        and not any(
            r.watch and r.path == fault.path and r.time > fault.time and r.fault is None for r in records
        )
    ]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", SEEDS)
def test_operator_behind_a_faulty_apiserver_connection_converges_to_the_same_end_state(
    seed: int, kube: Kube, isolated_namespace: str, cluster: Any, mlflow_server: str, tmp_path: Path
) -> None:
    namespace = isolated_namespace
    model = faults.register_model(mlflow_server, prefix=f"proxy-{seed}")
    plan = FaultPlan(
        seed=seed,
        conflict=0.08,
        throttle=0.04,
        gone=0.15,
        stall=0.08,
        drop=0.04,
        retry_after=1,
        required=FAULT_KINDS,
    )
    env = {
        "MLOPS_MLFLOW_TRACKING_URI": mlflow_server,
        # a stalled watch is noticed by kopf's client-side timeout: short here so the test is short
        "MLOPS_WATCH_SERVER_TIMEOUT": "8",
        "MLOPS_WATCH_CLIENT_TIMEOUT": "12",
    }
    # faults from the first request on: discovery, every watch, list, apply and status patch may fail
    with FaultProxy(cluster, plan) as proxy:
        through_proxy = dataclasses.replace(
            cluster, kubeconfig=str(proxy.write_kubeconfig(tmp_path / "proxy.kubeconfig"))
        )
        started = time.monotonic()
        operator = OperatorProcess(through_proxy, [namespace], tmp_path / "operator.log", env).start()
        timings = {"healthy": time.monotonic() - started}
        try:
            for name in TRAININGJOBS:
                faults.create(kube, namespace, faults.trainingjob(name, duration="2s"))
            for name in MODELDEPLOYMENTS:
                faults.create(kube, namespace, faults.modeldeployment(name, model, replicas=2))
            state = faults.wait_converged(
                kube,
                namespace,
                len(TRAININGJOBS),
                len(MODELDEPLOYMENTS),
                timeout=150,
                detail=lambda: f"faults {dict(proxy.injected)}\n{operator.tail()}",
            )
            timings["converged"] = time.monotonic() - started
            # a stalled or expired (410) watch is re-established on the same path: kopf's client-side
            # timeout and its relist recover them, not the end of the test (no new faults from here on,
            # so the wait is bounded by the client-side timeout)
            proxy.enabled = False
            wait_until(
                lambda: not unrecovered_watches(proxy),
                timeout=60,
                message=lambda: f"watches re-established after {unrecovered_watches(proxy)}",
            )
            timings["watches recovered"] = time.monotonic() - started
        finally:
            operator.stop()
    print(
        f"seed {seed}: {len(proxy.snapshot())} requests, faults injected {dict(proxy.injected)}, "
        + ", ".join(f"{what} after {seconds:.1f}s" for what, seconds in timings.items())
    )
    assert set(proxy.injected) == set(FAULT_KINDS), proxy.injected
    faults.assert_no_duplicate_children(kube, namespace, TRAININGJOBS, MODELDEPLOYMENTS)
    assert {k: v for k, v in state.items() if k == "trainingjobs"} == expected_end_state(), json.dumps(
        state, indent=1
    )
    for name in MODELDEPLOYMENTS:
        summary = state["modeldeployments"][name]
        assert summary["resolvedVersion"] == 1 and summary["readyReplicas"] == 2, summary
        assert summary["revisions"] == [(1, 1, "Initial")], summary  # one rollout, not one per retry
        assert ("Ready", "True", "Serving") in summary["conditions"], summary
    log = operator.log_text()
    index = log.find("Traceback")
    assert index < 0, log[max(0, index - 2000) : index + 3000]
