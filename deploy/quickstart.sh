#!/usr/bin/env bash
# Quick start: installs what is missing, builds a Release build, makes a dev
# PKI and data folder under ./var/ (kept between runs), and runs the broker
# in the foreground on 127.0.0.1:7443 with the embedded SQLite store, and
# the MESH front door on https://127.0.0.1:8443.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}

# (tests/mesh/quickstart_test.sh runs this against binaries it has built.)
if [[ ${QUICKSTART_SKIP_BUILD:-0} != 1 ]]; then
  deploy/install-deps.sh
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" --target carebroker carebrokerctl carebroker-audit
fi

mkdir -p var
deploy/pki/dev-pki.sh var/pki
[[ -f var/carebroker.yaml ]] || cp deploy/config/carebroker.yaml var/carebroker.yaml
[[ -d var/agreements ]] || cp -r deploy/agreements var/agreements
mkdir -p var/keys/mesh
[[ -f var/keys/X26.key ]] || (umask 077 && openssl rand -out var/keys/X26.key 32)
# The MESH front door's dev shared secret and mailbox passwords.
for f in shared-secret RR8HC001.pw 503HC001.pw X26HC001.pw; do
  [[ -f var/keys/mesh/$f ]] || (umask 077 && openssl rand -hex 16 >"var/keys/mesh/$f")
done

ctl="$build/broker/cli/carebrokerctl"
audit="$build/broker/cli/carebroker-audit"
cat <<MSG

carebroker is starting on 127.0.0.1:7443 (mutual TLS; store in var/data), with the
MESH front door on https://127.0.0.1:8443.
In another terminal, from $root:

  export CAREBROKER_TARGET=127.0.0.1:7443 CAREBROKER_CA=var/pki/ca.crt

  # Leeds Teaching Hospitals (RR8) sends a discharge event to Lincolnshire (503):
  $ctl --cert var/pki/RR8.crt --key var/pki/RR8.key \\
      send --to 503 --workflow HOSPITAL_DISCHARGE --purpose direct-care \\
      --idempotency-key first-1 --care-record deploy/examples/discharge.json

  # Lincolnshire receives it into a folder (and acknowledges it):
  $ctl --cert var/pki/503.crt --key var/pki/503.key receive --out var/inbox-503 --max 1

  # The hospital tracks it (use the id printed by send):
  $ctl --cert var/pki/RR8.crt --key var/pki/RR8.key track MESSAGE_ID

  # The same through the MESH API, as a trust's MESH client would (curl here):
  token() { deploy/examples/mesh-token.sh \$1 var/keys/mesh/\$1.pw var/keys/mesh/shared-secret; }
  mesh() { curl -sS --cacert var/pki/ca.crt --cert var/pki/\$1.crt --key var/pki/\$1.key \\
      -H "authorization: \$(token \$2)" -H 'accept: application/vnd.mesh.v2+json' "\${@:3}"; }
  mesh RR8 RR8HC001 -X POST https://127.0.0.1:8443/messageexchange/RR8HC001/outbox \\
      -H 'mex-to: 503HC001' -H 'mex-workflowid: TOC_FHIR_IP_DISCH' \\
      -H 'content-type: application/json; proto=carebroker.v1.CareRecord' --data-binary @deploy/examples/discharge.json
  mesh 503 503HC001 https://127.0.0.1:8443/messageexchange/503HC001/inbox

  # An IG officer at 503 reads the audit log and verifies it with the public key:
  $audit --cert var/pki/ig-officer.crt --key var/pki/ig-officer.key query
  $audit --cert var/pki/ig-officer.crt --key var/pki/ig-officer.key \\
      --public-key var/pki/audit-signing.pub verify

Stop the broker with Ctrl-C.
MSG
exec "$build/broker/carebroker" --config var/carebroker.yaml
