#!/usr/bin/env bash
# Builds the Kubernetes control plane the tests start (kube-apiserver,
# kube-scheduler, kube-controller-manager, kubelet, kube-proxy, etcd from the tools/k8s
# module, and kwok with its stage files) into one cache directory keyed by version,
# skipping what is already there. Nothing is downloaded but Go modules.
#
#   MSE_K8S_TOOLS  the cache directory (default ~/.cache/mse/k8s-v1.37.2);
#                  internal/testenv reads the same variable.
#
# A cold build takes several minutes on 2 cores; later runs return at once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

K8S_VERSION=v1.37.2 # tools/k8s/go.mod requires k8s.io/kubernetes at this version
KWOK_VERSION=v0.8.0
DIR=${MSE_K8S_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/mse/k8s-$K8S_VERSION}
mkdir -p "$DIR"

export CGO_ENABLED=0
export GOFLAGS=${GOFLAGS:-}

# build NAME: tools/k8s/cmd/NAME -> $DIR/NAME, written under a temporary name
# and renamed so an interrupted build never leaves a half binary behind.
build() {
	local name=$1
	if [ -x "$DIR/$name" ]; then
		echo "k8s-tools: $name present"
		return
	fi
	echo "k8s-tools: building $name"
	local start=$SECONDS
	(cd "$ROOT/tools/k8s" && go build -trimpath -ldflags=-s -o "$DIR/.$name.tmp" "./cmd/$name")
	mv "$DIR/.$name.tmp" "$DIR/$name"
	echo "k8s-tools: $name built in $((SECONDS - start))s"
}

for name in etcd kube-apiserver kube-scheduler kube-controller-manager kubelet kube-proxy; do
	build "$name"
done

if [ ! -x "$DIR/kwok" ]; then
	echo "k8s-tools: building kwok $KWOK_VERSION"
	start=$SECONDS
	tmp=$(mktemp -d "$DIR/.kwok.XXXXXX")
	GOBIN=$tmp go install -trimpath -ldflags=-s "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
	mv "$tmp/kwok" "$DIR/kwok"
	rmdir "$tmp"
	echo "k8s-tools: kwok built in $((SECONDS - start))s"
fi

# kwok exits without stage files (how fake pods and nodes move between states);
# they ship in its module under kustomize/stage.
if [ ! -d "$DIR/kwok-stage" ]; then
	moddir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [ -z "$moddir" ] || [ ! -d "$moddir/kustomize/stage" ]; then
		echo "k8s-tools: kwok $KWOK_VERSION module has no kustomize/stage (looked in '$moddir')" >&2
		exit 1
	fi
	tmp=$(mktemp -d "$DIR/.kwok-stage.XXXXXX")
	cp -r "$moddir/kustomize/stage/." "$tmp/"
	chmod -R u+w "$tmp"
	mv "$tmp" "$DIR/kwok-stage"
fi

echo "k8s-tools: ready in $DIR"
