// Errors are absl::Status with a stable reason code attached as a payload.
// The server maps them to gRPC (with a google.rpc.ErrorInfo detail) in one
// place, broker/server/grpc_status.h. Messages never carry patient data.
#pragma once

#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace carebroker {

// The ErrorInfo domain of every carebroker error.
inline constexpr absl::string_view kErrorDomain = "carebroker.nhs.uk";

// A status with `code`, a machine-readable `reason` (UPPER_SNAKE, stable
// across releases) and a human `message` (no patient data).
absl::Status Error(absl::StatusCode code, absl::string_view reason, absl::string_view message);

// The reason attached by Error(), or "" when there is none.
std::string ReasonOf(const absl::Status& s);

inline absl::Status InvalidArgument(absl::string_view reason, absl::string_view message) {
  return Error(absl::StatusCode::kInvalidArgument, reason, message);
}

// INVALID_ARGUMENT CONFIG_INVALID "<key>: <why>", for a config setting.
absl::Status ConfigInvalid(absl::string_view key, absl::string_view why);

}  // namespace carebroker
