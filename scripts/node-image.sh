#!/usr/bin/env bash
# Builds the node image of the kubernetes runner (--node-image): /mse-node and
# /mse-fetch, statically linked and built reproducibly (-trimpath, no VCS
# stamp, no build id), packed by `mse-backend node-image` into an OCI image
# layout tar. The same source and Go toolchain give the same digest.
#
#   scripts/node-image.sh [OUT.tar] [REF]      default out/node-image.tar, localhost/mse/node:dev
#   MSE_NODE_IMAGE_IMPORT=1 ...                also `ctr -n k8s.io images import` it
#                                              (containerd of a local kubelet)
#
# It prints the --node-image and --node-measurement flags for mse-backend.
# Push it to a registry with `crane push OUT.tar REF` or
# `skopeo copy oci-archive:OUT.tar docker://REF`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/node-image.tar}
REF=${2:-localhost/mse/node:dev}
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
mkdir -p "$(dirname "$OUT")"

export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
for c in mse-node mse-fetch mse-backend; do
	go build -trimpath -buildvcs=false -ldflags=-buildid= -o "$BIN/$c" "./cmd/$c"
done
"$BIN/mse-backend" node-image --out "$OUT" --ref "$REF" \
	--node-binary "$BIN/mse-node" --fetch-binary "$BIN/mse-fetch"

if [ "${MSE_NODE_IMAGE_IMPORT:-}" = 1 ]; then
	if ! command -v ctr >/dev/null; then
		echo "node-image: ctr not found (apt-get install containerd)" >&2
		exit 1
	fi
	ctr -n k8s.io images import "$OUT"
fi
