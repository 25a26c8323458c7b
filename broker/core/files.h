// Small file and time helpers shared across layers.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"

namespace carebroker {

// The whole file at `path`. INVALID_ARGUMENT "cannot read <what> <path>"
// when it cannot be opened (reason FILE_UNREADABLE).
absl::StatusOr<std::string> ReadFileToString(const std::string& path, absl::string_view what);

// Microsecond-precision conversion used on the wire.
google::protobuf::Timestamp ToTimestamp(absl::Time t);
absl::Time FromTimestamp(const google::protobuf::Timestamp& t);

}  // namespace carebroker
