#!/usr/bin/env bash
# Builds CoreDNS (what the tests run as the test cluster's kube-dns, so pods
# resolve Service names) from the tools/coredns module into a cache
# directory keyed by version, skipping it when the binary is already there.
# Nothing is downloaded but Go modules.
#
#   MSE_COREDNS  the cache directory (default ~/.cache/mse/coredns-v1.14.7);
#                internal/testenv reads the same variable.
#
# Test-only: never linked into the product. A cold build takes about 2.5
# minutes on 2 cores; later runs return at once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VERSION=v1.14.7 # tools/coredns/go.mod requires github.com/coredns/coredns at this version
DIR=${MSE_COREDNS:-${XDG_CACHE_HOME:-$HOME/.cache}/mse/coredns-$VERSION}
mkdir -p "$DIR"

if [ -x "$DIR/coredns" ]; then
	echo "coredns: present in $DIR"
	exit 0
fi
echo "coredns: building $VERSION"
start=$SECONDS
(cd "$ROOT/tools/coredns" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags=-s -o "$DIR/.coredns.tmp" .)
mv "$DIR/.coredns.tmp" "$DIR/coredns"
echo "coredns: built in $((SECONDS - start))s into $DIR"
