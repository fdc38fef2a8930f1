#!/usr/bin/env bash
# Builds kube-router (its network-policy controller is what the tests run on
# the test kubelet, so NetworkPolicies are enforced on real pods) from the
# tools/kube-router module into a cache directory keyed by version, skipping
# it when the binary is already there. Nothing is downloaded but Go modules.
#
#   MSE_KUBE_ROUTER  the cache directory (default ~/.cache/mse/kube-router-v2.1.0);
#                    internal/testenv reads the same variable.
#
# Test-only: kube-router v2.1.0 has reported security flaws; it is never linked
# into the product, and runs only against the tests' throwaway cluster.
# A cold build takes about 3 minutes on 2 cores; later runs return at once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VERSION=v2.1.0 # tools/kube-router/go.mod requires github.com/cloudnativelabs/kube-router/v2 at this version
DIR=${MSE_KUBE_ROUTER:-${XDG_CACHE_HOME:-$HOME/.cache}/mse/kube-router-$VERSION}
mkdir -p "$DIR"

if [ -x "$DIR/kube-router" ]; then
	echo "kube-router: present in $DIR"
	exit 0
fi
echo "kube-router: building $VERSION"
start=$SECONDS
(cd "$ROOT/tools/kube-router" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$DIR/.kube-router.tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
mv "$DIR/.kube-router.tmp" "$DIR/kube-router"
echo "kube-router: built in $((SECONDS - start))s into $DIR"
