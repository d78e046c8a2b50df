#!/usr/bin/env bash
# Build the operator and runtime images, load them into a kind cluster and install the Helm chart
# (with the bundled MLflow server) into namespace mlops-system.
#   hack/kind-deploy.sh [cluster-name]    (default: mlops)
# Env: TAG (default dev), NAMESPACE (default mlops-system), HELM_ARGS (extra helm flags),
#      SKIP_RUNTIME=1 to skip the (large) runtime image.
set -euo pipefail

CLUSTER="${1:-${KIND_CLUSTER:-mlops}}"
TAG="${TAG:-dev}"
NAMESPACE="${NAMESPACE:-mlops-system}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OPERATOR_IMAGE="ghcr.io/mlops-operator/operator:$TAG"
RUNTIME_IMAGE="ghcr.io/mlops-operator/runtime:$TAG"

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is not installed" >&2; exit 1; }
done
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || { echo "error: no kind cluster $CLUSTER (hack/kind-up.sh)" >&2; exit 1; }

cd "$ROOT"
docker build -t "$OPERATOR_IMAGE" -f Dockerfile .
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE"
if [[ "${SKIP_RUNTIME:-0}" != 1 ]]; then
  docker build -t "$RUNTIME_IMAGE" -f Dockerfile.runtime .
  kind load docker-image --name "$CLUSTER" "$RUNTIME_IMAGE"
fi

# shellcheck disable=SC2086  # HELM_ARGS is split on purpose
helm upgrade --install mlops-operator charts/mlops-operator \
  --kube-context "kind-$CLUSTER" --namespace "$NAMESPACE" --create-namespace \
  --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set runtimeImage.tag="$TAG" \
  --set mlflow.server.enabled=true \
  --wait --timeout 5m ${HELM_ARGS:-}

# helm upgrade never updates CRDs: apply them so a re-deploy picks up API changes.
kubectl --context "kind-$CLUSTER" apply --server-side --force-conflicts -f charts/mlops-operator/crds/
kubectl --context "kind-$CLUSTER" -n "$NAMESPACE" rollout status deployment/mlops-operator --timeout=120s
echo "installed; try: kubectl apply -f examples/trainingjob-iris.yaml && kubectl get mlops -w"
