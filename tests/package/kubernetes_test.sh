#!/usr/bin/env bash
# The container image and the Kubernetes manifests, as far as this machine
# can take them without a container engine or a cluster (neither runs here):
#
# 1. deploy/kubernetes/{sqlite,postgresql} are validated against the
#    Kubernetes API schemas (npm kubernetes-models, pinned by the lock file)
#    and checked to fit the image and one another (kubernetes/check.mjs);
#    broken copies of them (a wrong probe, root, a file outside any mount)
#    are refused.
# 2. Each pod is run as its manifest describes: the package's files
#    (cmake --install, what the image's apt-get install lays down) over the
#    host's /usr and /etc read-only, every ConfigMap and Secret mounted
#    where the manifest says with the kubelet's layout and modes, the data
#    volume the one writable place, the manifest's command, environment,
#    uid, gid and fsGroup, no capabilities (kubernetes/pod.mjs, in a mount
#    namespace, the broker PID 1 of its own PID namespace). Its probes must
#    answer, a message must go through it, SIGHUP to PID 1 must reload it and
#    SIGTERM stop it within the grace period.
#
#   kubernetes_test.sh BUILD_DIR SOURCE_DIR   (as root; CB_PG_URI and
#                                              CB_PG_CA for the PostgreSQL pod)
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
if [[ $(id -u) != 0 ]]; then
  echo "SKIP: mount namespaces and a pod's uid need root (CI runs as root)"
  exit 77
fi
for tool in node npm unshare setpriv pgrep pkill curl openssl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
done
[[ -n ${CB_PG_URI:-} && -n ${CB_PG_CA:-} ]] || { echo "FAIL: CB_PG_URI and CB_PG_CA are not set (tests/pg.sh)" >&2; exit 1; }
here=$src/tests/package/kubernetes
work=$(mktemp -d /tmp/cb-k8s.XXXXXX)
chmod 755 "$work"
pid=""
cleanup() {
  # The pod's broker first: it is PID 1 of its namespace and changed its
  # uid, so unshare's --kill-child does not reach it.
  [[ -n $pid ]] && { pkill -9 -P "$pid" 2>/dev/null; kill -9 "$pid" 2>/dev/null; } || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [[ -f $work/pod.log ]] && tail -20 "$work/pod.log" >&2
  exit 1
}

# The checker's npm packages, from the lock file, outside the source tree.
modules=$build/kubernetes-check
if ! cmp -s "$here/package-lock.json" "$modules/package-lock.json" 2>/dev/null || [[ ! -d $modules/node_modules ]]; then
  rm -rf "$modules" && mkdir -p "$modules"
  cp "$here/package.json" "$here/package-lock.json" "$modules/"
  (cd "$modules" && npm ci --no-audit --no-fund --loglevel=error >"$work/npm.log" 2>&1) ||
    { cat "$work/npm.log" >&2; fail "npm ci of the checker's packages"; }
fi
cp "$here/check.mjs" "$here/pod.mjs" "$modules/"
dockerfile=$src/deploy/container/Dockerfile
check() { node "$modules/check.mjs" "$dockerfile" "$1"; }

# 1. The manifests, then broken copies of them.
for variant in sqlite postgresql; do
  check "$src/deploy/kubernetes/$variant" >"$work/$variant.json" 2>"$work/check.log" ||
    { cat "$work/check.log" >&2; fail "deploy/kubernetes/$variant does not pass the check"; }
done
broken() {  # broken NAME SED-EXPRESSION EXPECTED-FAULT
  rm -rf "$work/broken" && cp -r "$src/deploy/kubernetes/sqlite" "$work/broken"
  sed -i "$2" "$work/broken/carebroker.yaml"
  cmp -s "$work/broken/carebroker.yaml" "$src/deploy/kubernetes/sqlite/carebroker.yaml" && fail "$1: the edit changed nothing"
  if check "$work/broken" >/dev/null 2>"$work/check.log"; then fail "$1 passed the check"; fi
  grep -q "$3" "$work/check.log" || { cat "$work/check.log" >&2; fail "$1: no fault naming '$3'"; }
}
broken "a probe of a path the broker does not serve" 's|path: /readyz|path: /ready|' "readinessProbe asks /ready"
broken "a pod run as root" 's|runAsUser: 999|runAsUser: 0|' "the image's user is 999:999"
broken "a key outside any mount" 's|/etc/carebroker/audit/audit-signing.key|/etc/carebroker/signing.key|' "audit.signing_key /etc/carebroker/signing.key is in no mount"
broken "a replica count that is a string" 's|replicas: 1|replicas: "1"|' "spec/replicas must be integer"
broken "a mount with no volume" 's|- {name: crl, mountPath|- {name: crls, mountPath|' "names no volume crls"
broken "a config on another port" 's|listen: 0.0.0.0:7443|listen: 0.0.0.0:7444|' "the grpc port is 7443"

# 2. The image's files: the package's install, at the image's paths.
DESTDIR=$work/image cmake --install "$build" --prefix /usr >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "cmake --install"; }
entry=$(sed -n 's/^ENTRYPOINT \["\([^"]*\)".*/\1/p' "$dockerfile")
[[ -x $work/image$entry ]] || fail "the image has no $entry"

# What the operator puts into the Secrets and ConfigMaps (deploy/kubernetes/README.md).
pki=$build/test-pki
[[ -f $pki/server.key ]] || "$src/deploy/pki/dev-pki.sh" "$pki" >/dev/null
openssl rand -out "$work/X26.key" 32
echo "unused: the test server trusts loopback" >"$work/pgpassword"
agreements="{$(for f in "$src"/deploy/agreements/*.yaml; do printf '"%s":"%s",' "$(basename "$f")" "$f"; done | sed 's/,$//')}"
sources() {
  cat <<EOF
{
 "secret/carebroker-tls": {"server.crt": "$pki/server.crt", "server.key": "$pki/server.key", "ca.crt": "$pki/ca.crt"},
 "secret/carebroker-audit-keys": {"audit-signing.key": "$pki/audit-signing.key", "audit-subject.key": "$pki/audit-subject.key"},
 "secret/carebroker-pseudonym-keys": {"X26.key": "$work/X26.key"},
 "secret/carebroker-postgres": {"ca.crt": "$CB_PG_CA", "password": "$work/pgpassword"},
 "configMap/carebroker-crl": {"crl.pem": "$pki/crl.pem"},
 "configMap/carebroker-agreements": $agreements
 $1
}
EOF
}

ctl() { "$build/broker/cli/carebrokerctl" --target 127.0.0.1:7443 --ca "$pki/ca.crt" --cert "$pki/$1.crt" --key "$pki/$1.key" "${@:2}"; }
run_pod() {  # run_pod VARIANT [SOURCES-EXTRA]
  local variant=$1 stage=$work/stage-$1
  sources "${2:-}" >"$work/sources.json"
  node "$modules/pod.mjs" "$work/$variant.json" "$stage" "$work/image" "$work/sources.json" >"$work/run-pod.sh" ||
    fail "$variant: the pod cannot be staged"
  touch "$work/staged"
  # Its own PID namespace: the broker is PID 1, as in a container.
  unshare --mount --propagation private --pid --fork --kill-child bash "$work/run-pod.sh" >"$work/pod.log" 2>&1 &
  pid=$!
  local code=""
  for _ in $(seq 1 150); do
    code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/readyz || true)
    [[ $code == 200 ]] && break
    kill -0 "$pid" 2>/dev/null || fail "$variant: the pod's broker exited"
    sleep 0.2
  done
  [[ $code == 200 ]] || fail "$variant: /readyz answered '$code', not 200 (the readiness probe)"
  [[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/healthz) == 200 ]] || fail "$variant: /healthz (the liveness probe)"
  grep -q '"event":"broker.started"' "$work/pod.log" || fail "$variant: no broker.started line"

  local id
  id=$(ctl RR8 send --to 503 --workflow HOSPITAL_DISCHARGE --purpose direct-care \
    --care-record "$src/deploy/examples/discharge.json" 2>"$work/send.log") ||
    { cat "$work/send.log" >&2; fail "$variant: send through the pod"; }
  rm -rf "$work/inbox"
  ctl 503 receive --out "$work/inbox" --max 1 >"$work/receive.log" 2>&1 || { cat "$work/receive.log" >&2; fail "$variant: receive"; }
  # (grep -q reads from variables here, never from a pipe: with pipefail, a
  # writer cut off by grep's early exit would fail the pipeline.)
  local inbox scrape
  inbox=$(ls "$work/inbox")
  grep -q "$id" <<<"$inbox" || fail "$variant: message $id did not arrive"
  scrape=$(curl -s http://127.0.0.1:9464/metrics)
  grep -q '^carebroker_messages_accepted_total' <<<"$scrape" ||
    fail "$variant: the scrape has no carebroker_messages_accepted_total"

  # What the pod wrote: only its data volume, as uid 999.
  local owners
  owners=$(find "$stage/volumes" -newer "$work/staged" -type f -printf '%U\n' | sort -u | tr '\n' ' ')
  [[ $owners == "999 " ]] || fail "$variant: the pod wrote files owned by '$owners'"

  # The broker as PID 1 of the pod: `kill -HUP 1` reloads (deploy/kubernetes/README.md),
  # SIGTERM (the kubelet's stop) ends it within the grace period.
  local init
  init=$(pgrep -P "$pid" -x carebroker) || fail "$variant: no carebroker process under the pod's namespace"
  grep -q '^NSpid:.*[[:space:]]1$' "/proc/$init/status" || fail "$variant: the broker is not PID 1 in its namespace"
  kill -HUP "$init"
  for _ in $(seq 1 50); do grep -q '"event":"config.reloaded","actor":"SIGHUP"' "$work/pod.log" && break; sleep 0.1; done
  grep -q '"event":"config.reloaded","actor":"SIGHUP"' "$work/pod.log" || fail "$variant: SIGHUP to PID 1 did not reload"
  kill -TERM "$init"
  local waited=0
  while kill -0 "$pid" 2>/dev/null && ((waited < 400)); do sleep 0.1; waited=$((waited + 1)); done
  kill -0 "$pid" 2>/dev/null && fail "$variant: still running 40 s (terminationGracePeriodSeconds) after SIGTERM"
  wait "$pid" || fail "$variant: the broker exited with $? after SIGTERM"
  grep -q '"event":"broker.stopping"' "$work/pod.log" || fail "$variant: no broker.stopping line after SIGTERM"
  pid=""
  echo "PASS: $variant pod: ready, carried message $id, stopped on SIGTERM"
}

run_pod sqlite
[[ -n $(find "$work/stage-sqlite/volumes" -name carebroker.db) ]] || fail "sqlite: the store is not on the data volume"

# The PostgreSQL pod against the test's server: the manifest's config with
# the database address of that server (a fresh database) in place of the
# in-cluster Service's name.
db=k8s_pod_$$
"${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}/psql" -q "$CB_PG_URI" -c "CREATE DATABASE $db" >/dev/null ||
  fail "cannot create database $db"
node -e 'const p = JSON.parse(require("fs").readFileSync(process.argv[1])); process.stdout.write(p.mounts.find((m) => m.data?.["carebroker.yaml"]).data["carebroker.yaml"])' \
  "$work/postgresql.json" | sed "s|connection: .*|connection: ${CB_PG_URI%/*}/$db|" >"$work/pg-config.yaml"
grep -q "connection: ${CB_PG_URI%/*}/$db" "$work/pg-config.yaml" || fail "the PostgreSQL config has no connection line"
run_pod postgresql ", \"configMap/carebroker-config\": {\"carebroker.yaml\": \"$work/pg-config.yaml\"}"
