"""Pure parts of hack/local_cluster.py: fake node manifests and component flags."""

from __future__ import annotations

from pathlib import Path

import pytest

import local_cluster


def test_gpu_node_manifest() -> None:
    node = local_cluster.FakeNode("gpu-a", cpu="16", memory="64Gi", gpus=4, gpu_product="NVIDIA-L4")
    capacity = {
        "cpu": "16",
        "memory": "64Gi",
        "pods": "110",
        "ephemeral-storage": "500Gi",
        "nvidia.com/gpu": "4",
    }
    assert node.manifest() == {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "gpu-a",
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": "gpu-a",
                "node.kubernetes.io/instance-type": "gpu",
                "nvidia.com/gpu.product": "NVIDIA-L4",
                "nvidia.com/gpu.count": "4",
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def test_cpu_node_has_no_gpu_resource_label_or_taint() -> None:
    manifest = local_cluster.FakeNode("cpu-a", cpu="8", memory="32Gi").manifest()
    assert manifest["spec"] == {}
    assert "nvidia.com/gpu" not in manifest["status"]["capacity"]
    assert "nvidia.com/gpu.product" not in manifest["metadata"]["labels"]


def test_default_nodes_are_two_gpu_nodes_and_one_cpu_node() -> None:
    gpus = [node.gpus for node in local_cluster.DEFAULT_NODES]
    assert sorted(gpus) == [0, 8, 8]
    products = {node.gpu_product for node in local_cluster.DEFAULT_NODES if node.gpus}
    assert len(products) == 2  # distinct products, so gpuType affinity is testable


def test_apiserver_flags_enable_tls_rbac_and_service_account_tokens(tmp_path: Path) -> None:
    state = local_cluster.StateDir(tmp_path)
    info = local_cluster.ClusterInfo(
        state_dir=str(tmp_path),
        kubeconfig=str(state.kubeconfig),
        apiserver_port=6443,
        etcd_port=2379,
        etcd_peer_port=2380,
        controller_manager_port=10257,
        scheduler_port=10259,
        kwok_port=10247,
        binaries={"kube-apiserver": "/bin/kube-apiserver"},
        kube_version="v1.33.13",
    )
    argv = local_cluster._component_argv(info, state, "kube-apiserver")
    assert argv[0] == "/bin/kube-apiserver"
    assert "--authorization-mode=Node,RBAC" in argv
    assert "--etcd-servers=http://127.0.0.1:2379" in argv
    assert f"--client-ca-file={state.pki / 'ca.crt'}" in argv
    assert f"--service-account-signing-key-file={state.pki / 'sa.key'}" in argv
    assert not [
        flag
        for flag in argv
        if flag.startswith(("--enable-admission-plugins", "--disable-admission-plugins"))
    ]


def test_component_short_names_resolve_and_unknown_ones_are_refused() -> None:
    assert local_cluster.component_name("apiserver") == "kube-apiserver"
    assert local_cluster.component_name("etcd") == "etcd"
    assert local_cluster.component_name("scheduler") == "kube-scheduler"
    assert local_cluster.component_name("kube-controller-manager") == "kube-controller-manager"
    with pytest.raises(ValueError, match="unknown component"):
        local_cluster.component_name("kubelet")


def test_restart_without_a_cluster_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = local_cluster.StateDir(tmp_path)
    with pytest.raises(local_cluster.ClusterError, match="no cluster"):
        local_cluster.restart(state, "apiserver")
    monkeypatch.setenv("MLOPS_CLUSTER_DIR", str(tmp_path))
    assert local_cluster.main(["restart", "etcd", "--downtime", "0"]) == 1
    with pytest.raises(SystemExit):
        local_cluster.main(["restart", "kubelet"])


def test_restart_keeps_ports_and_etcd_data_dir_in_the_flags(tmp_path: Path) -> None:
    """start_component reuses the recorded ports and state: the argv is the one `up` used."""
    state = local_cluster.StateDir(tmp_path)
    info = local_cluster.ClusterInfo(
        state_dir=str(tmp_path),
        kubeconfig=str(state.kubeconfig),
        apiserver_port=6443,
        etcd_port=2379,
        etcd_peer_port=2380,
        controller_manager_port=10257,
        scheduler_port=10259,
        kwok_port=10247,
        binaries={"etcd": "/bin/etcd", "kube-apiserver": "/bin/kube-apiserver"},
        kube_version="v1.0.0",
    )
    etcd = local_cluster._component_argv(info, state, "etcd")
    assert f"--data-dir={state.etcd_data}" in etcd
    assert "--listen-client-urls=http://127.0.0.1:2379" in etcd
    apiserver = local_cluster._component_argv(info, state, "kube-apiserver")
    assert "--secure-port=6443" in apiserver and "--etcd-servers=http://127.0.0.1:2379" in apiserver
