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

# The client's npm packages, from the lock file, outside the source tree.
modules=$build/mesh-client
if ! cmp -s "$here/package-lock.json" "$modules/package-lock.json" 2>/dev/null || [[ ! -d $modules/node_modules ]]; then
  rm -rf "$modules" && mkdir -p "$modules"
  cp "$here/package.json" "$here/package-lock.json" "$modules/"
  (cd "$modules" && npm ci --no-audit --no-fund --loglevel=error >"$work/npm.log" 2>&1) ||
    { cat "$work/npm.log" >&2; fail "npm ci of nhs-mesh-client"; }
fi
cp "$here/client.mjs" "$modules/"

umask 077
openssl rand -hex 16 >"$work/secret"
mkdir "$work/pw"
for mb in RR8HC001 503HC001; do openssl rand -hex 12 >"$work/pw/$mb.pw"; done
cat >"$work/carebroker.yaml" <<YAML
listen: 127.0.0.1:0
data_dir: $work/data
tls: {cert: $pki/server.crt, key: $pki/server.key, ca: $pki/ca.crt, crl: $pki/crl.pem}
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
policy: {agreements_dir: $src/tests/agreements}
audit: {signing_key: $pki/audit-signing.key, subject_key: $pki/audit-subject.key}
metrics: {listen: "off"}
limits: {max_message_bytes: 67108864, memory_budget_bytes: 268435456}
mesh:
  listen: 127.0.0.1:0
  shared_secret_file: $work/secret
  workflows:
    - {id: API-DOCS-TEST, workflow: W, purpose: direct-care}
    - {id: NOT_AGREED, workflow: CARE_ASSESSMENT, purpose: direct-care}
  mailboxes:
    - {id: RR8HC001, organisation: RR8, password_file: $work/pw/RR8HC001.pw}
    - {id: 503HC001, organisation: "503", password_file: $work/pw/503HC001.pw}
YAML
mkdir -m 700 "$work/data"
"$build/broker/carebroker" --config "$work/carebroker.yaml" 2>"$work/broker.log" &
pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(grep -o '"mesh":"127.0.0.1:[0-9]*' "$work/broker.log" | grep -o '[0-9]*$' || true)
  [[ -n $port ]] && break
  kill -0 "$pid" 2>/dev/null || fail "the broker exited"
  sleep 0.1
done
[[ -n $port ]] || fail "the broker did not start its MESH listener"

MESH_URL="https://127.0.0.1:$port" PKI=$pki MESH_SHARED_KEY=$(cat "$work/secret") MESH_PASSWORDS=$work/pw \
  CHUNKED_MB=$chunked_mb node "$modules/client.mjs" || fail "nhs-mesh-client checks"
kill -TERM "$pid"
wait "$pid" || fail "the broker did not stop cleanly"
pid=""
echo "PASS"
