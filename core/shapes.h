// The shapes of the words every layer checks: ODS codes, workflows,
// purposes, postcode districts. Shape only: whether an organisation is
// registered or a purpose is known is the config's and the policy's business.
#pragma once

#include "absl/strings/string_view.h"

namespace carebroker {

// 3 to 10 upper-case letters or digits: RR8, Y06601, 503.
bool IsOdsCodeShape(absl::string_view s);
// UPPER_SNAKE, 1-64 characters, starting with a letter: HOSPITAL_DISCHARGE.
bool IsWorkflowShape(absl::string_view s);
// Lower-case words joined by single '-', 1-64 characters: direct-care.
bool IsPurposeShape(absl::string_view s);
// A postcode's outward code in capitals: LS1, SW1A, B33.
bool IsPostcodeDistrictShape(absl::string_view s);

}  // namespace carebroker
