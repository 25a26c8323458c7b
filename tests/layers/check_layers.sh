#!/usr/bin/env bash
# The layer rules (docs/design.md "Layers"), checked on every test run:
#   1. nothing in core/, policy/ or adapters/ includes broker/; connect/ includes
#      only broker/client/ of broker/ (its tests may use the test harness);
#   2. the Merkle and signing code of audit/ includes only core/, itself and proto;
#   3. broker/store includes nothing of audit/ but audit/merkle.h;
#   4. only broker/server, broker/client, the CLIs, connect and tests include gRPC;
#   5. cb_policy's link closure holds neither SQLite nor libpq, cb_audit's no
#      store backend, and carebroker-connect's no exchange, policy engine,
#      store or audit log.
# Usage: check_layers.sh SOURCE_DIR CLOSURE_DIR [BINARY ...]
# CLOSURE_DIR holds TARGET.closure files (one linked item per line) written at
# configure time; each BINARY is an executable whose shared libraries are
# checked for SQLite and libpq (ldd), as linked.
set -uo pipefail
src=$1 closures=$2
shift 2
failures=0
fail() { echo "layer rule broken: $*" >&2; failures=$((failures + 1)); }

# includes DIR... : "file:line:#include ..." for every quoted include under DIR.
includes() { (cd "$src" && grep -s -rnE '^\s*#\s*include\s*[<"]' --include='*.h' --include='*.cc' "$@"); }

while IFS= read -r hit; do fail "rule 1: $hit"; done < <(includes core policy adapters | grep -E '[<"]broker/')
while IFS= read -r hit; do fail "rule 1: $hit"; done < <(
  includes connect | grep -v '_test\.cc:' | grep -E '[<"]broker/' | grep -vE '[<"]broker/client/')
while IFS= read -r hit; do fail "rule 2: $hit"; done < <(
  (cd "$src" && grep -snE '^\s*#\s*include\s*"' audit/merkle.h audit/merkle.cc audit/signer.h audit/signer.cc) |
  grep -vE '"(core/|carebroker/v1/|absl/|google/protobuf/|audit/merkle\.h|audit/signer\.h)')
while IFS= read -r hit; do fail "rule 3: $hit"; done < <(includes broker/store | grep -E '"audit/' | grep -v '"audit/merkle\.h"')
while IFS= read -r hit; do fail "rule 4: $hit"; done < <(
  includes core policy adapters audit broker connect | grep -E '[<"](grpcpp/|grpc/|[^"]*\.grpc\.pb\.h)' |
  grep -vE '^(broker/server|broker/client|broker/cli|connect)/')

closure_has() {  # closure_has TARGET REGEX WHAT
  local f="$closures/$1.closure"
  if [[ ! -s $f ]]; then fail "rule 5: no link closure for $1 ($f)"; return; fi
  while IFS= read -r item; do fail "rule 5: $1 links $item ($3)"; done < <(grep -E "$2" "$f")
}
closure_has cb_policy 'SQLite|sqlite|PostgreSQL|libpq|(^|/)pq' 'SQLite or libpq'
# The audit log works through the store's interface only (cb_store_api).
closure_has cb_audit 'SQLite|sqlite|PostgreSQL|libpq|(^|/)pq|^cb_store_(sqlite|pg)$|^cb_pg$' 'a store backend'
closure_has carebroker-connect '^cb_(exchange|policy|store|audit|audit_verify|pg|server|config)$' \
  'the exchange, policy engine, stores and audit log stay in the broker'
for bin in "$@"; do
  if [[ ! -x $bin ]]; then fail "rule 5: $bin is not built"; continue; fi
  while IFS= read -r lib; do fail "rule 5: $(basename "$bin") loads $lib"; done < <(
    ldd "$bin" | grep -E 'libsqlite3|libpq\.' | awk '{print $1}')
done

# The rules themselves must be able to fail: each planted breach is caught.
planted() {  # planted NAME FILE LINE: a tree holding only FILE with LINE must fail
  local dir
  dir=$(mktemp -d)
  mkdir -p "$dir/closures" "$dir/$(dirname "$2")"
  echo 'cb_core' | tee "$dir/closures/cb_policy.closure" "$dir/closures/cb_audit.closure" > "$dir/closures/carebroker-connect.closure"
  echo "$3" > "$dir/$2"
  if CB_LAYERS_SELF_TEST=0 "$0" "$dir" "$dir/closures" >/dev/null 2>&1; then
    fail "self-test: the checker passed a tree that breaks $1"
  fi
  rm -rf "$dir"
}
if [[ ${CB_LAYERS_SELF_TEST:-1} == 1 ]]; then
  planted "rule 1 (policy)" policy/x.cc '#include "broker/store/store.h"'
  planted "rule 1 (connect)" connect/x.cc '#include "broker/exchange/intake.h"'
  planted "rule 2" audit/merkle.cc '#include "broker/store/store.h"'
  planted "rule 3" broker/store/x.cc '#include "audit/log.h"'
  planted "rule 4" broker/exchange/x.h '#include <grpcpp/server.h>'
  planted "rule 5 (policy)" closures/cb_policy.closure 'SQLite::SQLite3'
  planted "rule 5 (connect)" closures/carebroker-connect.closure 'cb_store'
  planted "rule 5 (audit)" closures/cb_audit.closure 'cb_store_sqlite'
fi

if ((failures > 0)); then
  echo "$failures layer rule(s) broken" >&2
  exit 1
fi
echo "layer rules hold"
