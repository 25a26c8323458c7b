#!/usr/bin/env bash
# The quick start, as a reader runs it: deploy/quickstart.sh in a fresh
# folder (its dev PKI, keys and config under var/, the broker on 127.0.0.1:7443
# and the MESH front door on 127.0.0.1:8443), then the commands it prints,
# copied from its output: the carebrokerctl send, receive and track, and the
# MESH API through curl (send, then the council's inbox, download, ack).
#
#   quickstart_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
root=$(mktemp -d /tmp/cb-quickstart.XXXXXX)
pid=""
cleanup() {
  [[ -n $pid ]] && { pkill -P "$pid" 2>/dev/null; kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; } || true
  rm -rf "$root"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [[ -f $root/out.log ]] && tail -30 "$root/out.log" >&2
  exit 1
}
for port in 7443 8443; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is in use"; fi
done
ln -s "$src/deploy" "$root/deploy"
(cd "$root" && QUICKSTART_SKIP_BUILD=1 BUILD_DIR=$build exec deploy/quickstart.sh >"$root/out.log" 2>&1) &
pid=$!
for _ in $(seq 1 200); do
  grep -q '"event":"broker.started"' "$root/out.log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || fail "the quick start exited"
  sleep 0.1
done
grep -q '"mesh":"127.0.0.1:8443"' "$root/out.log" || fail "no MESH front door on 127.0.0.1:8443"

# The printed commands, as printed (the lines between the markers).
block() { sed -n "/# $1/,/^\$/p" "$root/out.log" | sed '1d'; }
cd "$root"
eval "$(block 'The same through the MESH API' | sed -n '1,3p')"  # token() and mesh()
sent=$(eval "$(block 'The same through the MESH API' | sed -n '4,6p')") || fail "the printed MESH send"
id=$(node -e 'const r = JSON.parse(process.argv[1]); if (!r.message_id) process.exit(1); console.log(r.message_id)' "$sent") ||
  fail "the MESH send answered: $sent"
inbox=$(eval "$(block 'The same through the MESH API' | sed -n '7p')") || fail "the printed MESH inbox"
grep -q "\"$id\"" <<<"$inbox" || fail "the council's inbox does not list $id: $inbox"
# The council's MESH client downloads it (rendered as council JSON) and acknowledges it.
got=$(mesh 503 503HC001 "https://127.0.0.1:8443/messageexchange/503HC001/inbox/$id")
grep -q '9990000018' <<<"$got" || fail "the download is not the discharge: $got"
status=$(mesh 503 503HC001 -o /dev/null -w '%{http_code}' -X PUT \
  "https://127.0.0.1:8443/messageexchange/503HC001/inbox/$id/status/acknowledged")
[[ $status == 200 ]] || fail "acknowledge answered $status"

# And the carebrokerctl commands printed above them.
eval "$(grep -E '^\s+export CAREBROKER_TARGET' "$root/out.log")"
eval "$(block 'Leeds Teaching Hospitals (RR8) sends' )" >"$root/send.out" || fail "the printed carebrokerctl send"
grep -Eq '[0-9a-f]{32}' "$root/send.out" || fail "send printed no message id"
eval "$(block 'Lincolnshire receives it')" >/dev/null || fail "the printed carebrokerctl receive"
ls "$root"/var/inbox-503/* >/dev/null 2>&1 || fail "receive wrote nothing to var/inbox-503"
echo "PASS"
