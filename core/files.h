// Reading and writing whole files.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace carebroker {

// The whole file at `path`. INVALID_ARGUMENT "cannot read <what> <path>"
// when it cannot be opened (reason FILE_UNREADABLE).
absl::StatusOr<std::string> ReadFileToString(const std::string& path, absl::string_view what);

// Writes `data` to dir/name so that the file appears whole or not at all:
// a hidden temporary file, fsync, rename, fsync of the folder. False on any
// failure (the temporary may be left behind).
bool WriteFileAtomically(const std::string& dir, const std::string& name, absl::string_view data);

// Whether `dir` takes new data now: creates a hidden file there, writes a
// block of zeros, syncs it and removes it. The error names the folder and
// the system's reason (a full disk, a read-only file system, permissions).
absl::Status ProbeWritable(const std::string& dir);

}  // namespace carebroker
