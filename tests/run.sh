#!/usr/bin/env bash
# Installs what is missing, builds (warnings are errors), and runs every test
# with ctest. Exits non-zero on any failure.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build}
jobs=$(nproc)

deploy/install-deps.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCB_WERROR=ON -DCB_TESTS=ON
cmake --build "$build" -j "$jobs"
# The lock annotations, checked by clang's thread-safety analysis.
CC=clang CXX=clang++ cmake -S . -B "$build-clang" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCB_THREAD_SAFETY=ON >/dev/null
cmake --build "$build-clang" -j "$jobs" --target cb_server cb_ctl cb_mesh
# A fresh dev PKI for every run (made by the dev_pki test fixture).
rm -rf "$build/test-pki"
# A throwaway PostgreSQL cluster on loopback for the PostgreSQL store's
# tests (CB_PG_URI); if it cannot start, the run fails.
source tests/pg.sh
pg_start || { echo "tests/run.sh: PostgreSQL DID NOT START" >&2; exit 1; }
trap pg_stop EXIT
if ! ctest --test-dir "$build" --output-on-failure -j "$jobs"; then
  echo "tests/run.sh: TESTS FAILED" >&2
  exit 1
fi
# Each adapter's parser under libFuzzer (ASan, UBSan) for a bounded time.
if ! tests/fuzz.sh; then
  echo "tests/run.sh: FUZZING FOUND A CRASH (inputs in build-fuzz/crashes/)" >&2
  exit 1
fi
# The unit tests and two integration tests once more under ASan and UBSan
# (about 9 minutes on 2 cores, most of it building).
if ! tests/sanitize.sh; then
  echo "tests/run.sh: A SANITIZER FOUND A DEFECT (or a test failed under it)" >&2
  exit 1
fi
