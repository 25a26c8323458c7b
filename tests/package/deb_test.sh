#!/usr/bin/env bash
# The Debian package, for real: cpack builds carebroker_<version>_amd64.deb
# from this build, dpkg installs it into this machine, the installed broker
# starts as the carebroker user with the installed config (a dev PKI made
# with the installed dev-pki.sh), the installed carebrokerctl sends a
# message through it and receives it, and systemd-analyze verifies the
# installed units. Everything is purged again at the end.
#
#   deb_test.sh BUILD_DIR SOURCE_DIR     (as root: dpkg installs system-wide)
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
if [[ $(id -u) != 0 ]]; then
  echo "SKIP: installing a package needs root (CI runs as root)"
  exit 77
fi
for tool in cpack dpkg dpkg-deb dpkg-shlibdeps systemd-analyze runuser; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
done
# (grep -q reads from variables, never from a pipe: with pipefail, a writer
# cut off by grep's early exit would fail the pipeline.)
if [[ $(dpkg-query -W -f='${Status}' carebroker 2>/dev/null || true) == *"install ok installed"* ]]; then
  echo "FAIL: a carebroker package is installed already; this test does not replace it" >&2
  exit 1
fi
if [[ -e /etc/carebroker || -e /var/lib/carebroker ]]; then
  echo "FAIL: /etc/carebroker or /var/lib/carebroker exists; this test does not touch them" >&2
  exit 1
fi
work=$(mktemp -d)
chmod 755 "$work"
pid=""
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  dpkg --purge carebroker >/dev/null 2>&1 || true
  rm -rf /etc/carebroker /var/lib/carebroker
  getent passwd carebroker >/dev/null && deluser --system carebroker >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [[ -f $work/broker.log ]] && tail -20 "$work/broker.log" >&2
  exit 1
}

# 1. Build the package.
version=$(sed -n 's/^CPACK_PACKAGE_VERSION:STRING=//p;s/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt" | head -1)
(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/pkg" >"$work/cpack.log" 2>&1) ||
  { cat "$work/cpack.log" >&2; fail "cpack -G DEB failed"; }
deb="$work/pkg/carebroker_${version}_amd64.deb"
[[ -f $deb ]] || fail "no $deb (made: $(ls "$work/pkg"))"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/carebroker ./usr/bin/carebrokerctl ./usr/bin/carebroker-audit ./usr/bin/carebroker-connect \
         ./lib/systemd/system/carebroker.service ./lib/systemd/system/carebroker-connect.service \
         ./etc/carebroker/carebroker.yaml ./etc/carebroker/connect.yaml ./etc/carebroker/agreements/hospital-to-council.yaml \
         ./usr/share/carebroker/dev-pki.sh; do
  grep -q " $f\$" <<<"$contents" || fail "the package has no $f"
done
depends=$(dpkg-deb -f "$deb" Depends)
grep -q 'libgrpc++' <<<"$depends" || fail "Depends does not name the gRPC library: $depends"
conffiles=$(dpkg-deb -I "$deb" conffiles)
grep -qx /etc/carebroker/carebroker.yaml <<<"$conffiles" || fail "the config is not a conffile"

# 2. Install it: the user, its folders.
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i failed"; }
getent passwd carebroker >/dev/null || fail "no carebroker user"
[[ $(stat -c '%U %a' /var/lib/carebroker) == "carebroker 700" ]] || fail "/var/lib/carebroker is $(stat -c '%U %a' /var/lib/carebroker)"
[[ $(stat -c '%G %a' /etc/carebroker) == "carebroker 750" ]] || fail "/etc/carebroker is $(stat -c '%G %a' /etc/carebroker)"

# 3. The units as installed.
systemd-analyze verify /lib/systemd/system/carebroker.service /lib/systemd/system/carebroker-connect.service \
  >"$work/verify.log" 2>&1 || { cat "$work/verify.log" >&2; fail "systemd-analyze verify"; }
[[ -s $work/verify.log ]] && { cat "$work/verify.log" >&2; fail "systemd-analyze verify warned"; }

# 4. Keys where the installed config expects them, readable by carebroker only.
/usr/share/carebroker/dev-pki.sh /etc/carebroker/pki >/dev/null
install -d -m 0750 -g carebroker /etc/carebroker/keys /etc/carebroker/keys/mesh
(umask 077 && openssl rand -out /etc/carebroker/keys/X26.key 32)
for f in shared-secret RR8HC001.pw 503HC001.pw X26HC001.pw; do
  (umask 077 && openssl rand -hex 16 >/etc/carebroker/keys/mesh/$f)
  chown carebroker:carebroker /etc/carebroker/keys/mesh/$f
done
chown carebroker:carebroker /etc/carebroker/keys/X26.key /etc/carebroker/pki/server.key \
  /etc/carebroker/pki/audit-signing.key /etc/carebroker/pki/audit-subject.key
chgrp carebroker /etc/carebroker/pki && chmod 750 /etc/carebroker/pki

# 5. The installed broker, as its unit runs it (ports of its own here).
runuser -u carebroker -- /usr/bin/carebroker --config /etc/carebroker/carebroker.yaml \
  --data-dir /var/lib/carebroker --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --mesh-listen 127.0.0.1:0 \
  >"$work/broker.log" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(grep -o '"event":"broker.started","listen":"127.0.0.1:[0-9]*' "$work/broker.log" | grep -o '[0-9]*$' || true)
  [[ -n $port ]] && break
  kill -0 "$pid" 2>/dev/null || fail "the installed broker exited"
  sleep 0.2
done
[[ -n $port ]] || fail "the installed broker did not start"
[[ -f /var/lib/carebroker/carebroker.db ]] || fail "no store in /var/lib/carebroker"

# 6. A message through it with the installed carebrokerctl.
pki=/etc/carebroker/pki
ctl() { local who=$1; shift; /usr/bin/carebrokerctl --target "127.0.0.1:$port" --ca $pki/ca.crt --cert "$pki/$who.crt" --key "$pki/$who.key" "$@"; }
id=$(ctl RR8 send --to 503 --workflow HOSPITAL_DISCHARGE --purpose direct-care \
  --care-record "$src/deploy/examples/discharge.json" 2>"$work/send.log") ||
  { cat "$work/send.log" >&2; fail "send through the installed broker"; }
[[ -n $id ]] || fail "send printed no message id"
ctl 503 receive --out "$work/inbox" --max 1 >"$work/receive.log" 2>&1 || { cat "$work/receive.log" >&2; fail "receive"; }
inbox=$(ls "$work/inbox")
grep -q "$id" <<<"$inbox" || fail "message $id did not arrive (inbox: $inbox)"
echo "PASS: $deb installed, started as carebroker, carried message $id; units verified"
