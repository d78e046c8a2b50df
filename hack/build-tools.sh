#!/usr/bin/env bash
# Builds (once) and caches the real Kubernetes control plane and its tools from Go modules:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd from a wrapper module
# pinned to one Kubernetes release; kwok and helm with `go install`.
#
# Binaries land in $MLOPS_CACHE_DIR/bin/<tool>-<version>/ (default ~/.cache/mlops-operator), so a
# second call costs a few stat()s. Prints the directory holding every binary (one per line: name=path)
# when called with --print.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache=${MLOPS_CACHE_DIR:-$HOME/.cache/mlops-operator}
kube_dir=$cache/bin/kubernetes-$KUBE_VERSION
kwok_dir=$cache/bin/kwok-$KWOK_VERSION
helm_dir=$cache/bin/helm-$HELM_VERSION
kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)

log() { printf '[build-tools] %s\n' "$*" >&2; }

have_all() {
  local dir=$1; shift
  local b
  for b in "$@"; do [[ -x $dir/$b ]] || return 1; done
}

build_kubernetes() {
  have_all "$kube_dir" "${kube_bins[@]}" && return 0
  local src=$cache/src/kubernetes-$KUBE_VERSION
  mkdir -p "$src" "$kube_dir"
  log "building Kubernetes $KUBE_VERSION control plane + etcd $ETCD_VERSION (cold build: ~10-20 min on 2 cores)"
  local kk_mod
  kk_mod=$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local staging_version=v0.${KUBE_VERSION#v1.}
  {
    echo "module mlops.dev/hack/kubernetes"
    echo
    grep -E '^go [0-9]' "$kk_mod"
    grep -E '^godebug' "$kk_mod" || true
    echo
    echo "require ("
    echo "	k8s.io/kubernetes $KUBE_VERSION"
    echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo ")"
    echo
    echo "replace ("
    grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "$kk_mod" | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$src/go.mod"
  cat >"$src/tools.go" <<'GO'
//go:build tools

// Package tools pins the commands this module builds.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (
    cd "$src"
    GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
    local pkg=k8s.io/component-base/version
    local ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
      -X $pkg.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
    local cmd
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      [[ -x $kube_dir/$cmd ]] && continue
      log "go build $cmd"
      CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$kube_dir/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$kube_dir/$cmd.tmp" "$kube_dir/$cmd"
    done
    if [[ ! -x $kube_dir/etcd ]]; then
      log "go build etcd"
      CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$kube_dir/etcd.tmp" go.etcd.io/etcd/server/v3
      mv "$kube_dir/etcd.tmp" "$kube_dir/etcd"
    fi
  )
}

go_install() {
  local dir=$1 name=$2 pkg=$3
  [[ -x $dir/$name ]] && return 0
  mkdir -p "$dir"
  log "go install $pkg"
  CGO_ENABLED=0 GOBIN="$dir" go install -trimpath -ldflags "-s -w" "$pkg"
}

build_kubernetes
go_install "$kwok_dir" kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
go_install "$helm_dir" helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

if [[ ${1:-} == --print ]]; then
  for b in "${kube_bins[@]}"; do echo "$b=$kube_dir/$b"; done
  echo "kwok=$kwok_dir/kwok"
  echo "helm=$helm_dir/helm"
fi
