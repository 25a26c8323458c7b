// Council social-care JSON (docs/council-json.md): the canonical record as a
// council's case-management system would write it - one person and their
// events (referral, assessment, care package, review, safeguarding concern,
// and the hospital events councils receive) with camelCase keys, ISO dates
// (YYYY-MM-DD), UTC times, and short words for coded values.
//
// Reading is strict: an unknown key, a wrong type or a bad date is an error
// naming the JSON path (never the value). NHS numbers are Modulus 11 checked.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "adapters/common/values.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker::council {

inline constexpr int kSchemaVersion = 1;

// INVALID_ARGUMENT: COUNCIL_JSON_INVALID, DATE_INVALID or NHS_NUMBER_INVALID.
absl::StatusOr<v1::CareRecord> ReadCouncilJson(absl::string_view json, const adapters::ReadOptions& options = {},
                                               size_t max_bytes = 16 << 20);

// Pretty-printed when indent >= 0.
std::string WriteCouncilJson(const v1::CareRecord& record, int indent = -1);

}  // namespace carebroker::council
