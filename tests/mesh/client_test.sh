#!/usr/bin/env bash
# NHSDigital's nhs-mesh-client (npm 1.0.9, MIT; pinned by package-lock.json)
# drives carebroker's MESH front door unchanged (client.mjs): a real broker
# binary on loopback with the dev PKI and a real clock (the client stamps its
# tokens with it), mesh.listen on, two mailboxes, the test agreements.
#
#   client_test.sh BUILD_DIR SOURCE_DIR PKI_DIR [CHUNKED_MB]
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd) pki=$(cd "$3" && pwd) chunked_mb=${4:-0}
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
done
here=$src/tests/mesh
work=$(mktemp -d /tmp/cb-mesh-client.XXXXXX)
pid=""
cleanup() {
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [[ -f $work/broker.log ]] && tail -20 "$work/broker.log" >&2
  exit 1
}

source "$here/lib.sh"
modules=$(mesh_npm_modules "$build" "$src" 2>"$work/npm.log") || { cat "$work/npm.log" >&2; fail "npm ci of nhs-mesh-client"; }
cp "$here/client.mjs" "$modules/"
start_mesh_broker "$build" "$src" "$pki" "$work" || { pid=${mesh_pid:-}; fail "the broker did not start"; }
pid=$mesh_pid port=$mesh_port

MESH_URL="https://127.0.0.1:$port" PKI=$pki MESH_SHARED_KEY=$(cat "$work/secret") MESH_PASSWORDS=$work/pw \
  CHUNKED_MB=$chunked_mb node "$modules/client.mjs" || fail "nhs-mesh-client checks"
kill -TERM "$pid"
wait "$pid" || fail "the broker did not stop cleanly"
pid=""
echo "PASS"
