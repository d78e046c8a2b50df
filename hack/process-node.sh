#!/usr/bin/env bash
# A development node that runs pods as local processes: [run] [flags] | logs NAMESPACE/POD [-c C] [-f].
# Thin wrapper over hack/process_node.py (see its docstring), run in the project's venv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -x $root/.venv/bin/python ]] || bash "$root/hack/venv.sh"
exec "$root/.venv/bin/python" "$root/hack/process_node.py" "$@"
