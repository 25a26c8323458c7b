// NHS number: ten digits, the tenth a Modulus 11 check digit (NHS Data
// Dictionary). A check of 10 means the number was never issued.
#pragma once

#include "absl/strings/string_view.h"

namespace carebroker {

// True when `s` is exactly ten ASCII digits whose check digit is right.
bool IsValidNhsNumber(absl::string_view s);

}  // namespace carebroker
