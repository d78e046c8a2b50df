#!/usr/bin/env bash
# Creates (once) the project's virtualenv from requirements.lock and links it as ./.venv.
#
# The venv lives in $MLOPS_CACHE_DIR/venvs/<hash of lock + python version> (default ~/.cache/mlops-operator),
# so clean clones (CI) reuse it; torch's CUDA wheel alone is several GB. The project itself is installed
# editable from this checkout, re-pointed when the checkout moves.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MLOPS_CACHE_DIR:-$HOME/.cache/mlops-operator}
python=${PYTHON:-python3}
lock=$root/requirements.lock

log() { printf '[venv] %s\n' "$*" >&2; }

py_version=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
key=$( (cat "$lock"; echo "$py_version") | sha256sum | cut -c1-16)
venv=$cache/venvs/py$py_version-$key

if [[ ! -x $venv/bin/python || ! -f $venv/.complete ]]; then
  log "creating $venv from requirements.lock (cold: several minutes, torch is large)"
  rm -rf "$venv" "$venv.tmp"
  mkdir -p "$cache/venvs"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$lock"
  echo "$key" >"$venv/.complete"
fi

# A venv reached under another key (a developer re-linking a lock change onto an existing venv instead of
# rebuilding) is brought in line with the lock: pip install of an already satisfied lock takes seconds.
if [[ "$(cat "$venv/.complete")" != "$key" ]]; then
  log "syncing $venv with requirements.lock"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$lock"
  echo "$key" >"$venv/.complete"
fi

ln -sfn "$venv" "$root/.venv"

# Editable install of this checkout (cheap; redone when the venv points at another checkout or
# pyproject.toml changed, e.g. a new console script).
marker=$venv/.editable-source
wanted="$root $(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [[ "$(cat "$marker" 2>/dev/null)" != "$wanted" ]]; then
  log "installing mlops-operator (editable) from $root"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
  echo "$wanted" >"$marker"
fi
