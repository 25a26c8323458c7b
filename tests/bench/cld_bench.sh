#!/usr/bin/env bash
# A CLD submission of CLD_MB (default 300) through the broker, minimised row
# by row as its chunks arrive (docs/performance.md): a synthetic return of
# one row per person (valid NHS numbers, names, dates of birth, postcodes;
# every 10,000th person opted out), sent by carebrokerctl in CHUNK_MB chunks
# (SendLarge, default 32) to NHS England under the shipped CLD agreement,
# downloaded back (Download). The return is required by law, so the opted-out
# people's rows go too (each row's wishes are still looked up). Prints MB/s
# and rows/s each way, the rows released, and the broker's resident memory
# idle and its peak
# (VmHWM). A real broker binary on loopback with the dev PKI and a SQLite
# store in a temporary folder. Bounded by CLD_MB and TIMEOUT_S.
#
#   tests/bench/cld_bench.sh [BUILD_DIR]
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
cld_mb=${CLD_MB:-300} chunk_mb=${CHUNK_MB:-32} timeout_s=${TIMEOUT_S:-600}
work=$(mktemp -d /tmp/cb-cld-bench.XXXXXX)
pid=""
cleanup() {
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$src/deploy/pki/dev-pki.sh" "$work/pki" >/dev/null
pki=$work/pki
(umask 077 && openssl rand 32 >"$work/x26.key")
cat >"$work/carebroker.yaml" <<YAML
listen: 127.0.0.1:0
data_dir: $work/data
tls: {cert: $pki/server.crt, key: $pki/server.key, ca: $pki/ca.crt, crl: $pki/crl.pem}
organisations:
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
  - {ods: Y06601, name: Example GP practice, kind: gp_practice}
  - {ods: X26, name: NHS England, kind: nhs_england, receives: cld}
policy:
  agreements_dir: $src/deploy/agreements
  pseudonym_keys: [{organisation: X26, file: $work/x26.key}]
audit: {signing_key: $pki/audit-signing.key, subject_key: $pki/audit-subject.key}
metrics: {listen: "off"}
limits: {max_message_bytes: 67108864}
YAML
mkdir -m 700 -p "$work/data"
"$build/broker/carebroker" --config "$work/carebroker.yaml" 2>"$work/broker.log" &
pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(grep -o '"listen":"127.0.0.1:[0-9]*' "$work/broker.log" | head -1 | grep -o '[0-9]*$' || true)
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n $port ]] || { echo "the broker did not start" >&2; tail -5 "$work/broker.log" >&2; exit 1; }
ctl() {
  local who=$1; shift
  timeout -k 5 "$timeout_s" "$build/broker/cli/carebrokerctl" --target "127.0.0.1:$port" --ca "$pki/ca.crt" \
    --cert "$pki/$who.crt" --key "$pki/$who.key" --timeout 60 "$@"
}
kb() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$pid/status"; }
ms() { date +%s%3N; }

# The return: person i's NHS number is the i-th valid one from 900000000.
awk -v bytes="$((cld_mb << 20))" 'BEGIN {
  print "LA Code,Reporting Period Start Date,Reporting Period End Date,NHS Number,First Name,Last Name,Gender," \
        "Date of Birth,Postcode,Client Type,Event Type,Event Reference,Event Start Date,Event Outcome,Service Type," \
        "Delivery Mechanism,Planned units per week"
  n = 0; size = 0; base = 900000000
  while (size < bytes) {
    do {
      s = 0; d = base++
      for (w = 2; w <= 10; ++w) { s += (d % 10) * w; d = int(d / 10) }
      c = 11 - s % 11
    } while (c == 10)
    nhs = sprintf("%d%d", base - 1, c == 11 ? 0 : c)
    line = sprintf("503,2026-07-01,2026-09-30,%s,Given%d,\"Family, %d\",%s,%02d/%02d/19%02d,LN%d %dAB,Service User," \
                   "Service,SRV-%d,2026-08-01,Continuation of support or services,Long Term Support: Community," \
                   "CASSR Commissioned Support,14", nhs, n, n, n % 2 ? "Female" : "Male", 1 + n % 28, 1 + n % 12,
                   30 + n % 60, 1 + n % 9, n % 10, n)
    print line
    if (n % 10000 == 9999) print nhs > "'"$work/opted-out"'"
    size += length(line) + 1; ++n
  }
}' >"$work/return.csv"
rows=$(($(wc -l <"$work/return.csv") - 1))
opted=$(wc -l <"$work/opted-out")
while read -r nhs; do
  ctl Y06601 consent opt-out --set --nhs-number "$nhs" --source "NHS App" --recorded-by bench >/dev/null
done <"$work/opted-out"
sleep 1
idle=$(kb VmRSS)
mb=$(($(stat -c %s "$work/return.csv") >> 20))
t0=$(ms)
ctl 503 send --to X26 --workflow CLD_RETURN --purpose planning --content-type "text/csv; profile=asc-cld-release-1" \
  --chunk-mib "$chunk_mb" "$work/return.csv" >/dev/null
t1=$(ms); up_peak=$(($(kb VmHWM) / 1024))
ctl X26 receive --out "$work/in" --max 1 --wait 5 >/dev/null
t2=$(ms)
out=$(ls "$work"/in/*)
released=$(($(grep -c '^503,' "$out")))
[[ $released -eq $rows ]] || { echo "released $released rows of $rows ($opted opted out, required by law)" >&2; exit 1; }
if grep -q 'Family' "$out"; then echo "a name went out" >&2; exit 1; fi
echo "CLD_SUBMISSION mb=$mb rows=$rows chunk_mb=$chunk_mb released=$released opted_out=$opted" \
  "upload_mb_per_s=$((mb * 1000 / (t1 - t0))) upload_rows_per_s=$((rows * 1000 / (t1 - t0)))" \
  "download_mb_per_s=$(($(stat -c %s "$out") * 1000 / (t2 - t1) >> 20)) out_mb=$(($(stat -c %s "$out") >> 20))"
echo "CLD_SUBMISSION_RSS idle_mb=$((idle / 1024)) peak_after_upload_mb=$up_peak peak_mb=$(($(kb VmHWM) / 1024))" \
  "above_idle_mb=$((($(kb VmHWM) - idle) / 1024))"
# The store after the return (SQLite and its WAL): the rows as released
# and the audit log, an entry a row.
echo "CLD_SUBMISSION_STORE store_mb=$(($(du -sk "$work/data" | cut -f1) / 1024))"
