#!/usr/bin/env bash
# The MESH front door under load, beside the same broker's gRPC API in the
# same run (docs/performance.md):
#   1. a LARGE_MB message (default 2048) in CHUNK_MB chunks (default 100, MESH's
#      most) up and down through the MESH API, in MB/s, with the broker's
#      resident memory idle and its peak (VmHWM) after;
#   2. COUNT small messages (default 2000, SIZE bytes) sent, listed,
#      downloaded and acknowledged through the MESH API (mesh_load.mjs, Node's
#      https with keep-alive, CONCURRENCY in flight), in msgs/s;
#   3. the same COUNT through gRPC (carebroker_load: SendStream and Receive
#      with acks), its RESULT line.
# A real broker binary on loopback with the dev PKI and a SQLite store in a
# temporary folder. Bounded by COUNT, LARGE_MB and TIMEOUT_S.
#
#   tests/bench/mesh_bench.sh [BUILD_DIR]
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
count=${COUNT:-2000} size=${SIZE:-1024} large_mb=${LARGE_MB:-2048} chunk_mb=${CHUNK_MB:-100}
timeout_s=${TIMEOUT_S:-600}
work=$(mktemp -d /tmp/cb-mesh-bench.XXXXXX)
mesh_pid=""
cleanup() {
  [[ -n $mesh_pid ]] && kill -9 "$mesh_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
source "$src/tests/mesh/lib.sh"
"$src/deploy/pki/dev-pki.sh" "$work/pki" >/dev/null
modules=$(mesh_npm_modules "$build" "$src")
cp "$src/tests/bench/mesh_load.mjs" "$modules/"
start_mesh_broker "$build" "$src" "$work/pki" "$work"
grpc_port=$(grep -o '"listen":"127.0.0.1:[0-9]*' "$work/broker.log" | head -1 | grep -o '[0-9]*$')
kb() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$mesh_pid/status"; }
sleep 1
idle=$(kb VmRSS)
run() {
  MESH_URL="https://127.0.0.1:$mesh_port" PKI=$work/pki MESH_SHARED_KEY=$(cat "$work/secret") MESH_PASSWORDS=$work/pw \
    TIMEOUT_S=$timeout_s SIZE=$size CHUNK_MB=$chunk_mb BROKER_PID=$mesh_pid node "$modules/mesh_load.mjs"
}
if ((large_mb > 0)); then
  COUNT=0 LARGE_MB=$large_mb run
  echo "MESH_LARGE_RSS idle_mb=$((idle / 1024)) peak_mb=$(($(kb VmHWM) / 1024)) above_idle_mb=$((($(kb VmHWM) - idle) / 1024))"
fi
if ((count > 0)); then
  COUNT=$count LARGE_MB=0 run
  timeout -k 5 $((timeout_s + 20)) "$build/tests/bench/carebroker_load" --host 127.0.0.1 --port "$grpc_port" \
    --pki "$work/pki" --label carebroker-grpc --count "$count" --size "$size" --timeout-s "$timeout_s"
fi
