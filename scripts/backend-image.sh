#!/usr/bin/env bash
# Builds the image of mse-backend itself (deploy/backend.yaml): a static
# mse-backend (-trimpath, no VCS stamp, no build id) as the entrypoint, and
# this machine's CA certificates, packed reproducibly by
# `mse-backend backend-image` into an OCI image layout tar.
#
#   scripts/backend-image.sh [OUT.tar] [REF]   default out/backend-image.tar, localhost/mse/backend:dev
#
# Push it with `crane push OUT.tar REF` or
# `skopeo copy oci-archive:OUT.tar docker://REF`, and name it (by digest) in
# your overlay of deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/backend-image.tar}
REF=${2:-localhost/mse/backend:dev}
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
mkdir -p "$(dirname "$OUT")"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false -ldflags=-buildid= -o "$BIN/mse-backend" ./cmd/mse-backend
"$BIN/mse-backend" backend-image --out "$OUT" --ref "$REF" --backend-binary "$BIN/mse-backend"
