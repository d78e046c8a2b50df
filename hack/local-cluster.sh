#!/usr/bin/env bash
# Local Kubernetes control plane: up | down | status | kubeconfig | env | logs COMPONENT.
# Thin wrapper over hack/local_cluster.py (see its docstring), run in the project's venv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -x $root/.venv/bin/python ]] || bash "$root/hack/venv.sh"
exec "$root/.venv/bin/python" "$root/hack/local_cluster.py" "$@"
