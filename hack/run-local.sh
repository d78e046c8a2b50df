#!/usr/bin/env bash
# `make run`: start (or reuse) the local control plane, install the CRDs, run the operator in the foreground.
# The cluster keeps running after Ctrl-C; `make cluster-down` stops it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
eval "$(.venv/bin/python hack/local_cluster.py env)" 2>/dev/null || true
.venv/bin/python hack/local_cluster.py up >/dev/null
eval "$(.venv/bin/python hack/local_cluster.py env)"
if compgen -G "crds/*.yaml" >/dev/null; then
  kubectl apply --server-side --field-manager=mlops-operator-install -f crds/
  kubectl wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
fi
cat <<MSG
Local cluster is up. In another shell:
  eval "\$(.venv/bin/python hack/local_cluster.py env)"
  kubectl get nodes
  kubectl apply -f examples/ && kubectl get mlops
Starting the operator (Ctrl-C to stop; 'make cluster-down' stops the cluster).
MSG
exec .venv/bin/mlops-operator run --verbose
