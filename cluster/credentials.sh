#!/usr/bin/env bash
# Writes the git-ignored env files an overlay's Secrets are generated from, each with a fresh
# random secret (existing files are kept): MinIO's root user, the pipelines' user, the model
# servers' user, and the model-signing key. Usage: cluster/credentials.sh kind|cloud
set -euo pipefail
overlay="${MANIFESTS:-manifests}/overlays/${1:?usage: cluster/credentials.sh kind|cloud}"
[ -d "$overlay" ] || { echo "no overlay $overlay" >&2; exit 2; }
umask 077
random() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
write() {  # file, then KEY=VALUE lines
  local file="$overlay/$1"; shift
  if [ -f "$file" ]; then echo "kept $file"; return; fi
  printf '%s\n' "$@" > "$file"
  echo "wrote $file"
}
write minio-root.env "MINIO_ROOT_USER=minio-root" "MINIO_ROOT_PASSWORD=$(random)"
write pipeline.env "AWS_ACCESS_KEY_ID=kfp-lifecycle-pipeline" "AWS_SECRET_ACCESS_KEY=$(random)"
write serving.env "AWS_ACCESS_KEY_ID=kfp-lifecycle-serving" "AWS_SECRET_ACCESS_KEY=$(random)"
write signing.env "LIFECYCLE_SIGNING_KEY=$(random)"
