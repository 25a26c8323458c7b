#!/usr/bin/env bash
# Prints an NHSMESH Authorization header value for MAILBOX, as a MESH client
# makes one (MESH API: "MESH Authorization header"): a new nonce, nonce count
# 1, the time now in UTC, and the HMAC-SHA256 under the environment's shared
# secret of "mailbox:nonce:count:password:timestamp". Each is good once.
#
#   deploy/examples/mesh-token.sh MAILBOX PASSWORD_FILE SHARED_SECRET_FILE
#   curl ... -H "authorization: $(deploy/examples/mesh-token.sh RR8HC001 var/keys/mesh/RR8HC001.pw var/keys/mesh/shared-secret)"
set -euo pipefail
(($# == 3)) || { echo "usage: $0 MAILBOX PASSWORD_FILE SHARED_SECRET_FILE" >&2; exit 2; }
mailbox=$1
password=$(tr -d '\n' <"$2")
secret=$(tr -d '\n' <"$3")
nonce=$(cat /proc/sys/kernel/random/uuid)
ts=$(date -u +%Y%m%d%H%M)
hmac=$(printf '%s' "$mailbox:$nonce:1:$password:$ts" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
echo "NHSMESH $mailbox:$nonce:1:$ts:$hmac"
