#!/usr/bin/env bash
# Installs whatever is missing from deploy/debian-packages.txt (to build) and
# deploy/debian-packages-test.txt (to test), plus any package names given as
# arguments, with non-interactive apt-get.
#
#   deploy/install-deps.sh [--build] [PACKAGE...]   # --build: what the build needs only
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lists=("$here/debian-packages.txt" "$here/debian-packages-test.txt")
if [[ ${1:-} == --build ]]; then
  lists=("$here/debian-packages.txt")
  shift
fi
mapfile -t wanted < <(cat "${lists[@]}" | grep -v '^\s*#' | grep -v '^\s*$')
wanted+=("$@")
# The tests' npm packages (tests/package/) need Node.js and npm: Debian's,
# unless a Node.js with its own npm is installed already.
if ((${#lists[@]} == 2)) && ! command -v npm >/dev/null; then
  wanted+=(nodejs npm)
fi
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 2; }
  SUDO=sudo
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
