"""`up`/`status`/`down` of a second, throw-away control plane: idempotent start, no orphans after `down`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import local_cluster


def _processes_using(directory: Path) -> list[str]:
    """Command lines of live processes that mention ``directory`` (our components pass it in flags)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.timeout(300)
def test_up_is_idempotent_and_down_leaves_no_orphans(
    tmp_path: Path, cluster: local_cluster.ClusterInfo
) -> None:
    # `cluster` first: the binaries are built before this second control plane needs them.
    state = local_cluster.StateDir(tmp_path / "state")
    try:
        info = local_cluster.up(state, nodes=[local_cluster.FakeNode("solo", cpu="4", memory="8Gi")])
        assert local_cluster.is_up(state)
        assert set(local_cluster.health(state).values()) == {"ok"}
        assert info.apiserver_port != cluster.apiserver_port
        pids = {c: local_cluster._read_pid(state, c) for c in local_cluster.COMPONENTS}
        assert all(pids.values())

        again = local_cluster.up(state)
        assert again.apiserver_port == info.apiserver_port
        assert {c: local_cluster._read_pid(state, c) for c in local_cluster.COMPONENTS} == pids

        nodes = local_cluster.kubectl(info, "get", "nodes", "-o", "name").split()
        assert nodes == ["node/solo"]
    finally:
        stopped = local_cluster.down(state)
    assert sorted(stopped) == sorted(local_cluster.COMPONENTS)
    assert not local_cluster.is_up(state)
    assert _processes_using(state.root) == []
    assert local_cluster.health(state) == {}
    assert local_cluster.down(state) == []
