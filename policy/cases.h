// Offline evaluation of requests against a set of agreements, for
// `carebrokerctl policy test` (a table of cases with expected decisions)
// and `policy explain` (one request, and why). No broker, no network: the
// same PolicySet::Decide and Minimiser the broker runs.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "carebroker/v1/policy_cases.pb.h"
#include "policy/engine.h"

namespace carebroker::policy {

// Reads a YAML cases file (schema carebroker.v1.PolicyCases). Every error,
// in the file's shape or in any case, is reported as FILE:LINE: key: reason.
absl::StatusOr<v1::PolicyCases> LoadPolicyCases(const std::string& path);

// Checks one case's request (ODS shapes, workflow, known purpose, date);
// appends "key: reason" strings to `errors`.
void CheckCaseRequest(const v1::PolicyCase& c, std::vector<std::string>* errors);

struct CaseOutcome {
  Decision decision;
  bool has_record = false;
  std::vector<std::string> withheld;  // from the record, when it has one
  std::vector<std::string> released;  // leaf paths left in the minimised record
};

// Decides one case. `base_dir` resolves a relative record path; `today` is
// used when the case names no date. Errors: an unreadable or malformed
// record, a bad date.
absl::StatusOr<CaseOutcome> EvaluateCase(const PolicySet& set, const v1::PolicyCase& c,
                                         const std::string& base_dir, absl::Time today);

// The differences between what a case expects and what it got, one line
// each; empty when it passes.
std::vector<std::string> CheckExpectation(const v1::CaseExpectation& want, const CaseOutcome& got);

}  // namespace carebroker::policy
