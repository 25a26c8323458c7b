#!/usr/bin/env bash
# Quick start: installs what is missing, builds a Release build, makes a dev
# PKI and data folder under ./var/ (kept between runs), and runs the broker
# in the foreground on 127.0.0.1:7443 with the embedded SQLite store.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}

deploy/install-deps.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target carebroker carebrokerctl carebroker-audit

mkdir -p var
deploy/pki/dev-pki.sh var/pki
[[ -f var/carebroker.yaml ]] || cp deploy/config/carebroker.yaml var/carebroker.yaml
[[ -d var/agreements ]] || cp -r deploy/agreements var/agreements
mkdir -p var/keys
[[ -f var/keys/X26.key ]] || (umask 077 && openssl rand -out var/keys/X26.key 32)

ctl="$build/broker/cli/carebrokerctl"
audit="$build/broker/cli/carebroker-audit"
cat <<MSG

carebroker is starting on 127.0.0.1:7443 (mutual TLS; store in var/data).
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

  # An IG officer at 503 reads the audit log and verifies it with the public key:
  $audit --cert var/pki/ig-officer.crt --key var/pki/ig-officer.key query
  $audit --cert var/pki/ig-officer.crt --key var/pki/ig-officer.key \\
      --public-key var/pki/audit-signing.pub verify

Stop the broker with Ctrl-C.
MSG
exec "$build/broker/carebroker" --config var/carebroker.yaml
