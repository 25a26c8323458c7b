# Sourced by tests/mesh/client_test.sh and tests/bench/mesh_bench.sh: starts
# a broker binary with the MESH front door on a free loopback port, the dev
# PKI, two mailboxes (RR8HC001 for RR8, 503HC001 for 503) and the test
# agreements, in folder $work.
#
#   start_mesh_broker BUILD_DIR SOURCE_DIR PKI_DIR WORK [MAX_MESSAGE_BYTES]
#   -> mesh_pid, mesh_port; $work/secret, $work/pw/MAILBOX.pw, $work/broker.log
start_mesh_broker() {
  local build=$1 src=$2 pki=$3 work=$4 max=${5:-67108864}
  (umask 077 && openssl rand -hex 16 >"$work/secret" && mkdir -p "$work/pw" &&
    for mb in RR8HC001 503HC001; do openssl rand -hex 12 >"$work/pw/$mb.pw"; done)
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
limits: {max_message_bytes: $max, memory_budget_bytes: 268435456, max_in_flight_per_stream: 100000}
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
  mkdir -m 700 -p "$work/data"
  "$build/broker/carebroker" --config "$work/carebroker.yaml" 2>"$work/broker.log" &
  mesh_pid=$!
  mesh_port=""
  for _ in $(seq 1 100); do
    mesh_port=$(grep -o '"mesh":"127.0.0.1:[0-9]*' "$work/broker.log" | grep -o '[0-9]*$' || true)
    [[ -n $mesh_port ]] && return 0
    kill -0 "$mesh_pid" 2>/dev/null || { echo "the broker exited:" >&2; tail -5 "$work/broker.log" >&2; return 1; }
    sleep 0.1
  done
  echo "the broker did not start its MESH listener" >&2
  return 1
}

# The npm packages of tests/mesh (nhs-mesh-client), from the lock file, in
# BUILD_DIR/mesh-client (outside the source tree); prints that folder.
mesh_npm_modules() {
  local build=$1 here=$2/tests/mesh modules=$1/mesh-client
  if ! cmp -s "$here/package-lock.json" "$modules/package-lock.json" 2>/dev/null || [[ ! -d $modules/node_modules ]]; then
    rm -rf "$modules" && mkdir -p "$modules"
    cp "$here/package.json" "$here/package-lock.json" "$modules/"
    (cd "$modules" && npm ci --no-audit --no-fund --loglevel=error >&2) || return 1
  fi
  echo "$modules"
}
