#!/usr/bin/env bash
# carebroker on PostgreSQL with one and with two replicas, beside SQLite, on
# this machine: the load client (tests/bench/carebroker_load) through real
# gRPC and mutual TLS on loopback, a throwaway PostgreSQL cluster
# (tests/pg.sh). Prints each run's RESULT line and the CPU the brokers and
# PostgreSQL used per message.
#
#   tests/bench/replicas.sh                     # all modes, 50,000 messages each
#   COUNT=20000 RATE=2000 tests/bench/replicas.sh pg2-cross
#
# Modes: sqlite (one broker, embedded store); pg1 (one replica on
# PostgreSQL); pg2-cross (two replicas, sends to A and receives from B);
# pg2-pairs (two replicas, each with its own sender and recipient, run at
# once: the aggregate is what two replicas carry).
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
build=${CAREBROKER_BUILD:-$repo/build}
COUNT=${COUNT:-50000} SIZE=${SIZE:-2048} RATE=${RATE:-0} WINDOW=${WINDOW:-1000} POOL=${POOL:-2}
modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(sqlite pg1 pg2-cross pg2-pairs)
for b in "$build/broker/carebroker" "$build/tests/bench/carebroker_load"; do
  [[ -x $b ]] || { echo "missing $b: build first (tests/run.sh)" >&2; exit 2; }
done

source "$repo/tests/pg.sh"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pg_stop
  rm -rf "$work"
}
trap cleanup EXIT
pg_start >/dev/null
"$repo/deploy/pki/dev-pki.sh" "$work/pki" >/dev/null
chmod 600 "$work"/pki/*.key

ticks() {  # CPU ticks (user + system) of the given processes
  local t=0 p
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
pg_pids() { local pm; pm=$(head -n 1 "$PG_DIR/data/postmaster.pid"); echo "$pm $(ps -o pid= --ppid "$pm")"; }

# start_broker NAME STORE_YAML: starts a broker on a free port; sets $port and $pid.
start_broker() {
  local name=$1 store=$2 i
  mkdir -p "$work/$name"
  cat >"$work/$name/carebroker.yaml" <<YAML
listen: 127.0.0.1:0
metrics: {listen: "127.0.0.1:0"}
data_dir: $work/$name/data
tls: {cert: $work/pki/server.crt, key: $work/pki/server.key, ca: $work/pki/ca.crt, crl: $work/pki/crl.pem}
limits: {max_in_flight_per_stream: 100000, max_pending_per_stream: 100000}
policy: {agreements_dir: $repo/tests/agreements}
audit: {signing_key: $work/pki/audit-signing.key, subject_key: $work/pki/audit-subject.key}
$store
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust}
  - {ods: RH8, name: Royal Devon University Healthcare NHS Foundation Trust, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
  - {ods: "511", name: Example council, kind: local_authority}
YAML
  "$build/broker/carebroker" --config "$work/$name/carebroker.yaml" 2>"$work/$name/broker.log" &
  pid=$!
  pids+=("$pid")
  for i in $(seq 1 100); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/$name/broker.log" | head -n 1)
    [[ -n $port ]] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  cat "$work/$name/broker.log" >&2
  echo "broker $name did not start" >&2
  exit 1
}

new_db() {
  "$PG_BIN/psql" -q "$CB_PG_URI" -c "CREATE DATABASE $1" >/dev/null
  echo "  postgres: {connection: \"${CB_PG_URI%/*}/$1\", pool_size: $POOL}"
}

load() {  # load LABEL PORT RECEIVE_PORT SENDER RECIPIENT
  timeout -k 5 600 "$build/tests/bench/carebroker_load" --host 127.0.0.1 --port "$2" --receive-port "$3" \
    --sender "$4" --recipient "$5" --pki "$work/pki" --label "$1" --count "$COUNT" --size "$SIZE" \
    --window "$WINDOW" --rate "$RATE" --prefetch 1000 --timeout-s 500
}

# measure LABEL MESSAGES COMMAND...: runs the command, then prints the CPU
# the brokers (${brokers[@]}) and PostgreSQL used per message meanwhile.
measure() {
  local label=$1 n=$2 hz b0 p0
  shift 2
  hz=$(getconf CLK_TCK)
  b0=$(ticks "${brokers[@]}")
  p0=$(ticks $(pg_pids))
  "$@"
  awk -v l="$label" -v n="$n" -v b="$(($(ticks "${brokers[@]}") - b0))" -v p="$(($(ticks $(pg_pids)) - p0))" \
    -v hz="$hz" 'BEGIN { printf "CPU %s: brokers %.0f us/msg, postgres %.0f us/msg\n", l, b / hz * 1e6 / n, p / hz * 1e6 / n }'
}

pairs() {  # both pairs at once, one per replica
  load pg2-pairs-A "$a" "$a" RR8 503 >"$work/pairs-a.txt" &
  local la=$!
  load pg2-pairs-B "$b" "$b" RH8 511 >"$work/pairs-b.txt" &
  local lb=$!
  wait "$la" "$lb" || true
  cat "$work/pairs-a.txt" "$work/pairs-b.txt"
}

# Bytes the database holds per message (tables with their indexes).
report_size() {  # report_size DB MESSAGES
  "$PG_BIN/psql" -qAt "${CB_PG_URI%/*}/$1" -c "SELECT 'STORE bytes/msg: messages ' ||
    pg_total_relation_size('messages') / $2 || ', bodies ' || pg_total_relation_size('bodies') / $2 ||
    ', audit ' || pg_total_relation_size('audit') / $2 || ' (' || (SELECT count(*) FROM audit) || ' entries)'"
}

for mode in "${modes[@]}"; do
  pids=()
  case $mode in
    sqlite)
      start_broker s "store: {sqlite: {file: carebroker.db}}"; a=$port; brokers=("$pid")
      measure sqlite "$COUNT" load sqlite "$a" "$a" RR8 503
      ;;
    pg1)
      store="store:
$(new_db bench_pg1)"
      start_broker a1 "$store"; a=$port; brokers=("$pid")
      measure pg1 "$COUNT" load pg1 "$a" "$a" RR8 503
      report_size bench_pg1 "$COUNT"
      ;;
    pg2-cross)
      store="store:
$(new_db bench_pg2c)"
      start_broker a2 "$store"; a=$port; brokers=("$pid")
      start_broker b2 "$store"; b=$port; brokers+=("$pid")
      measure pg2-cross "$COUNT" load pg2-cross "$a" "$b" RR8 503
      ;;
    pg2-pairs)
      store="store:
$(new_db bench_pg2p)"
      start_broker a3 "$store"; a=$port; brokers=("$pid")
      start_broker b3 "$store"; b=$port; brokers+=("$pid")
      measure pg2-pairs "$((2 * COUNT))" pairs
      ;;
    *) echo "unknown mode $mode (sqlite, pg1, pg2-cross, pg2-pairs)" >&2; exit 2 ;;
  esac
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
done
