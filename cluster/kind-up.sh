#!/usr/bin/env bash
# Create the kind cluster and install, at the versions pinned in versions.env: cert-manager,
# Knative Serving with Kourier, KServe (Serverless mode, configured for Kourier), Kubeflow
# Pipelines (standalone), the Dask Kubernetes Operator, then the project's manifests (MinIO,
# ServingRuntime, RBAC) and a Prometheus for the canary analysis. Idempotent: each step skips or re-applies what is
# already there. It returns only once MinIO serves, its buckets exist and Prometheus is ready,
# so `make submit` right after it cannot race them.
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
# kourier.yaml makes this Service a LoadBalancer; kind has none: a NodePort that
# kind-config.yaml maps to localhost:8081.
kubectl patch service/kourier -n kourier-system --type merge \
  -p '{"spec":{"type":"NodePort","ports":[{"name":"http2","port":80,"targetPort":8080,"nodePort":30081}]}}'
wait_for -n knative-serving deployment --all
wait_for -n kourier-system deployment --all

say "KServe $KSERVE_VERSION (Serverless mode, Kourier instead of Istio)"
# --force-conflicts: on a re-run, the configuration patched below is owned by kubectl-patch;
# the release's manifest takes it back, and the patch is applied again right after.
kubectl apply --server-side --force-conflicts -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
wait_for -n kserve deployment --all
# Without Istio, KServe must not create its top-level Istio VirtualService, and must report
# the predictor's own Knative URL (which Kourier routes) as the InferenceService URL: KServe's
# guide for Kourier ("Deploy InferenceService with Alternative Networking Layer",
# kserve.github.io/website/docs/admin-guide/serverless/kourier-networking, version 0.16) sets
# ingress.disableIstioVirtualHost=true in inferenceservice-config, then restarts the
# controller. cluster/kserve_config.py writes that patch (and defaultDeploymentMode
# Serverless: canaries need Knative), keeping every other setting.
# With the flag set, KServe v0.16 reads VirtualServices only for an InferenceService that is
# stopped (annotation serving.kserve.io/stop), which then fails without Istio's CRD
# (kserve/kserve#4984, fixed by #4985 in v0.17); nothing here stops a service.
kserve_patch=$(kubectl -n kserve get configmap inferenceservice-config -o json | python3 cluster/kserve_config.py)
kubectl -n kserve patch configmap inferenceservice-config --type merge -p "$kserve_patch"
kubectl -n kserve rollout restart deployment/kserve-controller-manager
kubectl -n kserve rollout status deployment/kserve-controller-manager --timeout=600s
kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"

say "Kubeflow Pipelines $KFP_VERSION (standalone)"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
kubectl patch service/ml-pipeline-ui -n kubeflow --type merge \
  -p '{"spec":{"type":"NodePort","ports":[{"port":80,"targetPort":3000,"nodePort":30080}]}}'
wait_for -n kubeflow deployment --all

say "Dask Kubernetes Operator $DASK_OPERATOR_VERSION (manifests/dask-operator)"
# Server-side: the DaskJob CRD is too large for client-side apply's annotation.
kubectl apply --server-side --force-conflicts -k manifests/dask-operator
kubectl wait --for condition=established --timeout=120s crd/daskclusters.kubernetes.dask.org
wait_for -n dask-operator deployment --all

say "kfp-lifecycle manifests (MinIO, ServingRuntime, RBAC)"
bash cluster/credentials.sh kind   # random secrets, once; kept afterwards (git-ignored)
kubectl kustomize manifests/overlays/kind | kubectl apply -f -
# KFP standalone runs pipeline pods in namespace kubeflow: the pipelines' user (never the
# root one) and the signing key there too.
kubectl -n kubeflow create secret generic kfp-lifecycle-s3 \
  --from-env-file=manifests/overlays/kind/pipeline.env --dry-run=client -o yaml | kubectl apply -f -
kubectl -n kubeflow create secret generic kfp-lifecycle-signing \
  --from-env-file=manifests/overlays/kind/signing.env --dry-run=client -o yaml | kubectl apply -f -
kubectl -n kubeflow create configmap kfp-lifecycle-s3 \
  --from-literal=S3_ENDPOINT=http://minio-service.kfp-lifecycle:9000 \
  --from-literal=S3_USE_HTTPS=0 --from-literal=AWS_REGION=us-east-1 \
  --dry-run=client -o yaml | kubectl apply -f -

say "Prometheus for the canary analysis (manifests/prometheus)"
kubectl kustomize manifests/prometheus | kubectl apply -f -

say "waiting for MinIO, its buckets and Prometheus"
kubectl -n kfp-lifecycle rollout status statefulset/minio --timeout=600s
kubectl -n kfp-lifecycle wait --for=condition=Complete job/minio-create-buckets --timeout=600s
kubectl -n monitoring rollout status deployment/prometheus --timeout=600s

say "ready: KFP UI http://localhost:8080, inference http://localhost:8081, MinIO console http://localhost:9001, Prometheus http://localhost:9090"
