#!/usr/bin/env bash
# Builds the S3 server the tests run (versitygw, posix backend) from its Go
# module into a cache keyed on its version, once: a run that finds the binary
# does nothing. testenv.S3 looks for it at the same place (or $MSE_VERSITYGW).
# Cold build on 2 busy cores: 2.5–3.5 minutes (140 s and 217 s seen), downloads included.
set -euo pipefail
VERSION=v1.8.0
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mse/versitygw-$VERSION"
BIN="$CACHE/versitygw"
if [ -x "$BIN" ]; then
	echo "versitygw $VERSION: cached at $BIN"
	exit 0
fi
mkdir -p "$CACHE"
TMP=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)
# Outside this module (go install MOD@VERSION ignores the current go.mod, but
# a GOFLAGS=-mod=vendor or a go.work around would not).
(cd "$TMP" && GOBIN="$TMP" CGO_ENABLED=0 GOWORK=off GOFLAGS= go install "github.com/versity/versitygw/cmd/versitygw@$VERSION")
mv "$TMP/versitygw" "$BIN"
echo "versitygw $VERSION: built in $(( $(date +%s) - start ))s at $BIN"
