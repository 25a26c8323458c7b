#!/usr/bin/env bash
# carebroker as a peer in the team's peer benchmark (bench/peers): copy the peers folder
# somewhere writable, link this script into it, and run it beside the others:
#
#   cp -r <the peers folder> /tmp/peers && peers=/tmp/peers
#   ln -sf "$PWD/tests/bench/peer-carebroker.sh" $peers/peer-carebroker.sh
#   CAREBROKER_BUILD=$PWD/build PEERS="rabbitmq-quorum nats-jetstream carebroker" $peers/run_all.sh
#
# Like nats.sh: starts the broker on 127.0.0.1:<free port> with a fresh
# mktemp -d data folder and dev PKI, runs the load client with the knobs of
# lib.sh (COUNT SIZE WINDOW RATE PREFETCH LOAD_TIMEOUT), prints the RESULT and
# SERVER_CPU lines, and stops the broker by its PID.
# CAREBROKER_BUILD: the build folder (default: the repository's build/).
# CAREBROKER_LABEL: the peer name in the RESULT line (default carebroker), so
# two builds can run side by side in one run_all.sh (docs/performance.md).
# CB_EXTRA_LIMITS: more keys for the limits section, e.g. ", intake_threads: 1".
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
build=${CAREBROKER_BUILD:-$repo/build}
for b in "$build/broker/carebroker" "$build/tests/bench/carebroker_load"; do
  [[ -x $b ]] || { echo "missing $b: build carebroker first (tests/run.sh)" >&2; exit 2; }
done

work=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && stop_pid "$server_pid" 10
  [[ ${KEEP_WORK:-0} == 1 ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$repo/deploy/pki/dev-pki.sh" "$work/pki" >/dev/null
port=$(free_port)
cat >"$work/carebroker.yaml" <<YAML
listen: 127.0.0.1:$port
metrics: {listen: "127.0.0.1:0"}
data_dir: data
tls: {cert: pki/server.crt, key: pki/server.key, ca: pki/ca.crt, crl: pki/crl.pem}
limits: {max_in_flight_per_stream: 100000, max_pending_per_stream: 100000${CB_EXTRA_LIMITS:-}}
policy: {agreements_dir: $repo/tests/agreements}
audit: {signing_key: pki/audit-signing.key, subject_key: pki/audit-subject.key}
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
YAML
"$build/broker/carebroker" --config "$work/carebroker.yaml" 2>"$work/broker.log" &
server_pid=$!
wait_port "$port" "$server_pid" 20
sync_trace_start "$work/strace.txt" "$server_pid"
cpu0=$(cpu_ticks "$server_pid")
rc=0
# shellcheck disable=SC2046
timeout -k 5 $((LOAD_TIMEOUT + 20)) "$build/tests/bench/carebroker_load" --host 127.0.0.1 --port "$port" \
  --pki "$work/pki" --label "${CAREBROKER_LABEL:-carebroker}" $(load_args) || rc=$?
server_cpu_line "$cpu0" "$(cpu_ticks "$server_pid")"
sync_trace_stop "$work/strace.txt" "${CAREBROKER_LABEL:-carebroker}"
exit "$rc"
