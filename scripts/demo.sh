#!/usr/bin/env bash
# The whole deploy flow on one machine: a Flask runtime image built from
# Debian packages (cached), a backend on embedded defaults in a temporary
# directory, examples/helloworld encrypted, uploaded, spawned in a sandboxed
# simulated enclave inside that runtime, verified, given its key, started,
# and served over TLS by gunicorn. Exits 0 only if all of that happened.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin
TMP=$(mktemp -d)
BACKEND_PID=
cleanup() {
	status=$?
	if [ -n "$BACKEND_PID" ]; then
		if [ -n "${APP_ID:-}" ]; then "$BIN/mse" cloud stop "$APP_ID" >/dev/null 2>&1 || true; fi
		kill "$BACKEND_PID" 2>/dev/null || true
		wait "$BACKEND_PID" 2>/dev/null || true
	fi
	if [ $status -ne 0 ] && [ -f "$TMP/backend.log" ]; then
		echo "--- backend log ---"; tail -n 40 "$TMP/backend.log"
	fi
	rm -rf "$TMP"
	exit $status
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

RUNTIME_DIR=${MSE_RUNTIME_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mse/runtimes}
for tool in mmdebstrap runc; do
	command -v "$tool" >/dev/null || { echo "make demo needs $tool: apt-get install mmdebstrap runc"; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "make demo needs root: the local runner gives each node its own UID and cgroup (runc)"; exit 1; }

say "Building the runtime: Debian bookworm + Python 3 + Flask + gunicorn, an OCI image (cached in $RUNTIME_DIR)"
"$BIN/mse-backend" runtime build flask --data-dir "$TMP/data" --runtime-dir "$RUNTIME_DIR" 2>"$TMP/build.log" ||
	{ tail -n 20 "$TMP/build.log"; exit 1; }

say "Starting mse-backend on embedded defaults (SQLite, local bundles, sandboxed local runner, sim TEE) in $TMP"
"$BIN/mse-backend" serve --data-dir "$TMP/data" --runtime-dir "$RUNTIME_DIR" --api-addr 127.0.0.1:0 --router-addr 127.0.0.1:0 \
	--poll-interval 200ms >"$TMP/backend.out" 2>"$TMP/backend.log" &
BACKEND_PID=$!
for _ in $(seq 100); do
	grep -q '^  API:' "$TMP/backend.out" 2>/dev/null && break
	kill -0 "$BACKEND_PID" 2>/dev/null || { echo "the backend exited"; exit 1; }
	sleep 0.1
done
cat "$TMP/backend.out"
API=$(awk '/^  API:/ {print $2}' "$TMP/backend.out")

export MSE_CONFIG_DIR="$TMP/config"
say "Logging in with the admin token the backend wrote (mode 0600)"
"$BIN/mse" cloud login --url "$API" --token "$(cat "$TMP/data/admin-token")"

say "Deploying examples/helloworld, verifying the simulated enclave before sending the code key"
cd "$ROOT/examples/helloworld"
"$BIN/mse" cloud deploy --simulation -y | tee "$TMP/deploy.out"
cd "$ROOT"
APP_ID=$(basename "$(ls "$TMP/config/contexts/"*.toml)" .toml)
DOMAIN=$(awk -F'https://' '/^Your app is running at/ {print $2}' "$TMP/deploy.out" | cut -d: -f1 | cut -d/ -f1)
FPR=$(sed -n 's/.*--fingerprint \([0-9a-f]\{64\}\).*/\1/p' "$TMP/deploy.out")
ROUTER=$(sed -n "s/^router_addr = ['\"]\(.*\)['\"]$/\1/p" "$TMP/config/contexts/$APP_ID.toml")

# The lines deploy prints are safe to paste: every value in them was
# validated (domain, router address) and shell-quoted by mse, so eval runs
# exactly the command shown, whatever the backend answered.
say "Fetching the app's page over TLS pinned to the verified certificate (the curl line deploy printed)"
CURL=$(grep '^  curl ' "$TMP/deploy.out" | sed 's/^  //')
echo "\$ $CURL"
PAGE=$(eval "$CURL" --silent --show-error --fail)
echo "$PAGE"
[ "$PAGE" = "Hello world!" ] || { echo "unexpected page: $PAGE"; exit 1; }

say "Verifying the enclave again as a third party would: the verify line deploy printed"
VERIFY=$(grep '^  mse cloud verify ' "$TMP/deploy.out" | sed 's/^  //')
echo "\$ $VERIFY"
eval "\"\$BIN/\"$VERIFY" | tee "$TMP/verify.out"
grep -q "$FPR" "$TMP/verify.out" || { echo "verify did not check the fingerprint $FPR"; exit 1; }

say "The runtimes the operator offers"
"$BIN/mse" cloud runtimes

say "Status, list and logs"
"$BIN/mse" cloud status "$APP_ID"
"$BIN/mse" cloud list
"$BIN/mse" cloud logs "$APP_ID" --tail 2 | tail -n 5

say "Stopping the app"
"$BIN/mse" cloud stop "$APP_ID"
APP_ID=
say "Demo complete: deployed, verified, served and stopped."
