#!/usr/bin/env bash
# Debian's Prometheus scrapes a real broker under a bounded load, and the
# figures are read back through Prometheus's HTTP API (promtool query):
# a counter and a histogram. `promtool check metrics` lints the exposition
# and `promtool check rules` the shipped alert rules.
#
#   prometheus_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
for tool in prometheus promtool curl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$work"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done
  exit 1
}
# wait_for FILE REGEX SECONDS: the first match of REGEX's group in FILE.
wait_for() {
  local file=$1 re=$2 limit=$3 t0=$SECONDS
  while ((SECONDS - t0 < limit)); do
    if [[ -f $file ]] && grep -Eq "$re" "$file"; then
      grep -Eo "$re" "$file" | head -1 | grep -Eo '[0-9]+$'
      return 0
    fi
    sleep 0.2
  done
  return 1
}

"$src/deploy/pki/dev-pki.sh" "$work/pki" >/dev/null
cat >"$work/carebroker.yaml" <<YAML
listen: 127.0.0.1:0
metrics: {listen: "127.0.0.1:0"}
data_dir: data
tls: {cert: pki/server.crt, key: pki/server.key, ca: pki/ca.crt, crl: pki/crl.pem}
policy: {agreements_dir: $src/tests/agreements}
audit: {signing_key: pki/audit-signing.key, subject_key: pki/audit-subject.key}
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
YAML
"$build/broker/carebroker" --config "$work/carebroker.yaml" 2>"$work/broker.log" &
pids+=($!)
port=$(wait_for "$work/broker.log" 'listening on 127\.0\.0\.1:[0-9]+' 20) || fail "the broker did not start"
mport=$(wait_for "$work/broker.log" 'metrics on 127\.0\.0\.1:[0-9]+' 5) || fail "no metrics listener"

cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$src/deploy/prometheus/alerts.yml]
scrape_configs:
  - job_name: carebroker
    static_configs: [{targets: ["127.0.0.1:$mport"]}]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:0 >"$work/prometheus.log" 2>&1 &
pids+=($!)
pport=$(wait_for "$work/prometheus.log" 'msg="Listening on" address=127\.0\.0\.1:[0-9]+' 30) || fail "Prometheus did not start"
prom=http://127.0.0.1:$pport

# A bounded load: 3,000 messages at 1,000/s, every one received and acked.
count=3000
timeout -k 5 60 "$build/tests/bench/carebroker_load" --host 127.0.0.1 --port "$port" --pki "$work/pki" \
  --count $count --rate 1000 --size 512 --label metrics-test >"$work/load.log" 2>&1 || fail "the load client failed"
grep -q "status=ok" "$work/load.log" || fail "the load did not complete"

# query EXPR: the value of the first sample of an instant query.
query() { promtool query instant "$prom" "$1" 2>/dev/null | sed -n 's/.*=> \([0-9.e+-]*\) @.*/\1/p' | head -1; }
accepted="" t0=$SECONDS
while ((SECONDS - t0 < 30)); do
  accepted=$(query 'sum(carebroker_messages_accepted_total)')
  [[ ${accepted%.*} == "$count" ]] && break
  sleep 1
done
[[ ${accepted%.*} == "$count" ]] || fail "Prometheus has carebroker_messages_accepted_total=${accepted:-none}, want $count"
commits=$(query 'carebroker_send_to_commit_seconds_count')
[[ ${commits%.*} == "$count" ]] || fail "send-to-commit histogram count ${commits:-none}, want $count"
p99=$(query 'histogram_quantile(0.99, sum by (le) (carebroker_send_to_commit_seconds_bucket))')
[[ -n $p99 && $p99 != NaN ]] || fail "no p99 from the send-to-commit histogram"
delivered=$(query 'sum(carebroker_messages_delivered_total)')
((${delivered%.*} >= count)) || fail "delivered ${delivered:-none}, want at least $count"
ready=$(query 'carebroker_ready')
[[ $ready == 1 ]] || fail "carebroker_ready=${ready:-none}"
echo "Prometheus read: accepted=$accepted commits=$commits send-to-commit p99=${p99}s delivered=$delivered"

# The exposition passes Prometheus's own lint, and so do the alert rules.
curl -sf "http://127.0.0.1:$mport/metrics" >"$work/exposition.txt" || fail "cannot scrape /metrics"
promtool check metrics <"$work/exposition.txt" || fail "promtool check metrics found problems"
promtool check rules "$src/deploy/prometheus/alerts.yml" || fail "promtool check rules failed"
# The rules were loaded by Prometheus and evaluate without error.
rules=$(curl -sf "$prom/api/v1/rules") || fail "cannot read the loaded rules"
grep -q '"name":"CarebrokerNotReady"' <<<"$rules" || fail "the alert rules were not loaded"
if grep -q '"health":"err"' <<<"$rules"; then fail "an alert rule failed to evaluate: $rules"; fi
# The Grafana dashboard is JSON and queries only metrics the broker exposes.
for m in $(grep -Eo 'carebroker_[a-z_]+' "$src/deploy/grafana/carebroker.json" | sed -E 's/_(bucket|sum|count)$//' | sort -u); do
  grep -q "^# TYPE $m " "$work/exposition.txt" || fail "the dashboard queries $m, which the broker does not expose"
done
for m in $(grep -Eo 'carebroker_[a-z_]+' "$src/deploy/prometheus/alerts.yml" | sed -E 's/_(bucket|sum|count)$//' | sort -u); do
  grep -q "^# TYPE $m " "$work/exposition.txt" || fail "an alert uses $m, which the broker does not expose"
done
echo "PASS"
