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
# LARGE_VIA=grpc moves step 1 to carebroker's own API: carebrokerctl send
# (SendLarge, CHUNK_MB chunks, at most the 64 MiB limits.max_message_bytes
# here) and carebrokerctl receive (Download), same figures.
# A real broker binary on loopback with the dev PKI and a SQLite store in a
# temporary folder. Bounded by COUNT, LARGE_MB and TIMEOUT_S.
#
#   tests/bench/mesh_bench.sh [BUILD_DIR]
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
count=${COUNT:-2000} size=${SIZE:-1024} large_mb=${LARGE_MB:-2048} chunk_mb=${CHUNK_MB:-100} via=${LARGE_VIA:-mesh}
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
ctl() {
  local who=$1; shift
  timeout -k 5 "$timeout_s" "$build/broker/cli/carebrokerctl" --target "127.0.0.1:$grpc_port" --ca "$work/pki/ca.crt" \
    --cert "$work/pki/$who.crt" --key "$work/pki/$who.key" --timeout 60 "$@"
}
ms() { date +%s%3N; }
if ((large_mb > 0)) && [[ $via == grpc ]]; then
  head -c "$((large_mb << 20))" /dev/urandom >"$work/large.bin"
  t0=$(ms)
  ctl RR8 send --to 503 --workflow W --purpose direct-care --content-type application/octet-stream \
    --chunk-mib "$chunk_mb" "$work/large.bin" >/dev/null
  t1=$(ms); up_peak=$(($(kb VmHWM) / 1024))
  ctl 503 receive --out "$work/in" --max 1 --wait 5 >/dev/null
  t2=$(ms)
  cmp -s "$work/large.bin" "$work"/in/*.dat || { echo "the downloaded message differs" >&2; exit 1; }
  echo "GRPC_LARGE mb=$large_mb chunk_mb=$chunk_mb upload_mb_per_s=$((large_mb * 1000 / (t1 - t0)))" \
    "download_mb_per_s=$((large_mb * 1000 / (t2 - t1))) broker_peak_mb_after_upload=$up_peak" \
    "broker_peak_mb_after_download=$(($(kb VmHWM) / 1024))"
  echo "GRPC_LARGE_RSS idle_mb=$((idle / 1024)) peak_mb=$(($(kb VmHWM) / 1024)) above_idle_mb=$((($(kb VmHWM) - idle) / 1024))"
elif ((large_mb > 0)); then
  COUNT=0 LARGE_MB=$large_mb run
  echo "MESH_LARGE_RSS idle_mb=$((idle / 1024)) peak_mb=$(($(kb VmHWM) / 1024)) above_idle_mb=$((($(kb VmHWM) - idle) / 1024))"
fi
if ((count > 0)); then
  COUNT=$count LARGE_MB=0 run
  timeout -k 5 $((timeout_s + 20)) "$build/tests/bench/carebroker_load" --host 127.0.0.1 --port "$grpc_port" \
    --pki "$work/pki" --label carebroker-grpc --count "$count" --size "$size" --timeout-s "$timeout_s"
fi
