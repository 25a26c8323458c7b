#!/usr/bin/env bash
# The unit tests, the store conformance suite and two integration tests
# (exchange_test, hostile_test: a real server on loopback) under
# AddressSanitizer and UndefinedBehaviorSanitizer, built with clang in the
# fuzzers' build folder (tests/fuzz.sh), so the adapters compile once. Any
# report fails the run. `--all` adds every other integration test.
# Not ThreadSanitizer: Debian's Abseil is not built with it, so TSan cannot
# see absl::Mutex and reports a race on everything it guards; the lock
# annotations are checked statically instead (clang -Wthread-safety).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=$(nproc)
unit="core_test audit_test config_test hl7v2_test fhir_test council_test formats_test policy_test intake_test
  submission_test mailboxes_test mailbox_rules_test executor_test send_pipeline_test sqlite_conformance_test"
integration="exchange_test hostile_test"
case "${1:-}" in
  --all) integration="$integration large_message_test mesh_api_test observability_test reload_test
           policy_integration_test governance_test ctl_test" ;;
  "") ;;
  *) echo "usage: tests/sanitize.sh [--all]" >&2; exit 2 ;;
esac
build=${FUZZ_BUILD_DIR:-build-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCB_FUZZ=ON >/dev/null
tests=$(echo $unit $integration)
# shellcheck disable=SC2086
cmake --build "$build" -j "$jobs" --target $tests
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
rm -rf "$build/test-pki"
ctest --test-dir "$build" -j "$jobs" --output-on-failure -R "^(dev_pki|${tests// /|})\$"
