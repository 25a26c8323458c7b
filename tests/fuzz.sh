#!/usr/bin/env bash
# Builds the adapters' libFuzzer targets with clang (ASan and UBSan) and runs
# each for a bounded time over its seed corpus. Any crash fails the run; the
# crashing input is left in build-fuzz/crashes/ for a test case.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${FUZZ_BUILD_DIR:-build-fuzz}
seconds=${FUZZ_SECONDS:-20}
samples=${CB_SAMPLES_DIR:-$root/tests/data/samples}
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCB_FUZZ=ON \
  -DCB_SAMPLES_DIR="$samples" >/dev/null
cmake --build "$build" -j "$(nproc)" --target hl7v2_fuzz fhir_fuzz council_json_fuzz cld_fuzz
mkdir -p "$build/crashes"
run() {
  local name=$1; shift
  # A fresh working corpus seeded from the given folders (the source tree is read only).
  local corpus="$build/corpus/$name"
  rm -rf "$corpus"; mkdir -p "$corpus"
  for seed in "$@"; do
    if [[ -d $seed ]]; then find "$seed" -maxdepth 1 -type f -exec cp {} "$corpus/" \; ; else echo "fuzz: no seeds in $seed"; fi
  done
  echo "fuzz: $name for ${seconds}s over $(ls "$corpus" | wc -l) seeds"
  "$build/adapters/${name}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$build/crashes/${name}-" -print_final_stats=1 "$corpus" 2>&1 | tail -n 6
}
run hl7v2 adapters/testdata/hl7v2
run fhir adapters/testdata/fhir "$samples/fhir/r4-base" "$samples/fhir/nhs-api-json/pds" "$samples/fhir/nhs-api-json/bars" \
  "$samples/fhir/ukcore"
run council_json adapters/testdata/council
run cld adapters/testdata/cld
echo "fuzz: no crashes"
