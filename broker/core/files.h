// Small file and time helpers shared across layers.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace carebroker {

// The whole file at `path`. INVALID_ARGUMENT "cannot read <what> <path>"
// when it cannot be opened (reason FILE_UNREADABLE).
absl::StatusOr<std::string> ReadFileToString(const std::string& path, absl::string_view what);

// Writes `data` to dir/name so that the file appears whole or not at all:
// a hidden temporary file, fsync, rename, fsync of the folder. False on any
// failure (the temporary may be left behind).
bool WriteFileAtomically(const std::string& dir, const std::string& name, absl::string_view data);

// Microsecond-precision conversion used on the wire.
google::protobuf::Timestamp ToTimestamp(absl::Time t);
absl::Time FromTimestamp(const google::protobuf::Timestamp& t);
absl::Duration FromDuration(const google::protobuf::Duration& d);
// `d`, or `fallback` when `d` is unset (or not positive).
absl::Duration DurationOr(const google::protobuf::Duration& d, absl::Duration fallback);

}  // namespace carebroker
