#!/usr/bin/env bash
# Create the kind cluster and install, at the versions pinned in versions.env: cert-manager,
# Knative Serving with Kourier, KServe, Kubeflow Pipelines (standalone), then the project's
# manifests (MinIO, ServingRuntime, RBAC). Idempotent: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=/dev/null
source versions.env
say() { printf '\n>> %s\n' "$*"; }
wait_for() { kubectl wait --for=condition=Available --timeout=600s "$@"; }

if kind get clusters 2>/dev/null | grep -qx kfp-lifecycle; then
  say "kind cluster kfp-lifecycle exists"
else
  say "creating kind cluster kfp-lifecycle ($KIND_NODE_IMAGE)"
  kind create cluster --config kind-config.yaml --image "$KIND_NODE_IMAGE"
fi

say "cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
wait_for -n cert-manager deployment --all

say "Knative Serving $KNATIVE_VERSION with Kourier $KNATIVE_NET_KOURIER_VERSION"
kubectl apply -f "https://github.com/knative/serving/releases/download/$KNATIVE_VERSION/serving-crds.yaml"
kubectl apply -f "https://github.com/knative/serving/releases/download/$KNATIVE_VERSION/serving-core.yaml"
kubectl apply -f "https://github.com/knative/net-kourier/releases/download/$KNATIVE_NET_KOURIER_VERSION/kourier.yaml"
kubectl patch configmap/config-network -n knative-serving --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
kubectl patch service/kourier -n kourier-system --type merge \
  -p '{"spec":{"type":"NodePort","ports":[{"name":"http2","port":80,"targetPort":8080,"nodePort":30081}]}}'
wait_for -n knative-serving deployment --all

say "KServe $KSERVE_VERSION"
kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
wait_for -n kserve deployment --all
kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"

say "Kubeflow Pipelines $KFP_VERSION (standalone)"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
kubectl patch service/ml-pipeline-ui -n kubeflow --type merge \
  -p '{"spec":{"type":"NodePort","ports":[{"port":80,"targetPort":3000,"nodePort":30080}]}}'
wait_for -n kubeflow deployment --all

say "kfp-lifecycle manifests (MinIO, ServingRuntime, RBAC)"
if [ ! -f manifests/overlays/kind/minio.env ]; then
  echo "manifests/overlays/kind/minio.env is missing: see manifests/README.md" >&2
  exit 1
fi
kubectl kustomize manifests/overlays/kind | kubectl apply -f -
# KFP standalone runs pipeline pods in namespace kubeflow: the same S3 settings there.
kubectl -n kubeflow create secret generic kfp-lifecycle-s3 \
  --from-env-file=manifests/overlays/kind/minio.env --dry-run=client -o yaml | kubectl apply -f -
kubectl -n kubeflow create configmap kfp-lifecycle-s3 \
  --from-literal=S3_ENDPOINT=http://minio-service.kfp-lifecycle:9000 \
  --from-literal=S3_USE_HTTPS=0 --from-literal=AWS_REGION=us-east-1 \
  --dry-run=client -o yaml | kubectl apply -f -
say "ready: KFP UI http://localhost:8080, inference http://localhost:8081, MinIO console http://localhost:9001"
