// Agreements: data-sharing agreements read from a folder of YAML files (one
// agreement per file, schema proto carebroker.v1.Agreement) and validated
// as a whole. Every problem in every file is reported, each as
// "FILE:LINE: key.path: reason", so an IG officer can fix a set in one pass.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "carebroker/v1/policy.pb.h"

namespace carebroker::policy {

// One agreement as loaded, with where it came from.
struct LoadedAgreement {
  v1::Agreement agreement;
  std::string file;
  absl::Time valid_from;        // first instant in force
  absl::Time valid_until;       // first instant no longer in force
};

struct AgreementSet {
  std::vector<LoadedAgreement> agreements;  // sorted by id
  std::string digest;  // SHA-256 (hex) over the file names and contents, in name order
};

// Reads every *.yaml / *.yml file in `dir` (not recursively). On any error
// the status is INVALID_ARGUMENT (reason AGREEMENTS_INVALID) whose message
// lists every error, one per line.
absl::StatusOr<AgreementSet> LoadAgreements(const std::string& dir);

// Validates one agreement file's text; appends errors to `errors`.
// Exposed for tests and for `carebrokerctl policy lint`.
void ParseAgreement(absl::string_view text, absl::string_view file, std::vector<LoadedAgreement>* out,
                    std::vector<std::string>* errors);

// Purposes on the wire: "direct-care" <-> PURPOSE_DIRECT_CARE.
v1::Purpose PurposeFromWire(absl::string_view s);  // PURPOSE_UNSPECIFIED if unknown
std::string PurposeToWire(v1::Purpose p);

// Midnight at the start of `date` (YYYY-MM-DD) in UK local time.
absl::StatusOr<absl::Time> ParseUkDate(absl::string_view date);

}  // namespace carebroker::policy
