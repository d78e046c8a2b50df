#!/usr/bin/env bash
# Create a kind cluster for trying mlops-operator with Docker (no GPUs: training runs on CPU).
#   hack/kind-up.sh [cluster-name]        (default: mlops)
# Needs: docker, kind, kubectl. Then: hack/kind-deploy.sh
set -euo pipefail

CLUSTER="${1:-${KIND_CLUSTER:-mlops}}"

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is not installed" >&2; exit 1; }
done

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "kind cluster $CLUSTER already exists"
else
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
kubectl get nodes -o wide
echo "next: hack/kind-deploy.sh $CLUSTER"
