// Time on the wire and in the stores: protobuf Timestamp and Duration at
// microsecond precision, the stores' integer microseconds, and the
// durations people write in config ("30s", "90m", "5d").
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace carebroker {

// Microsecond-precision conversion used on the wire.
google::protobuf::Timestamp ToTimestamp(absl::Time t);
absl::Time FromTimestamp(const google::protobuf::Timestamp& t);
absl::Duration FromDuration(const google::protobuf::Duration& d);
// `d`, or `fallback` when `d` is unset (or not positive).
absl::Duration DurationOr(const google::protobuf::Duration& d, absl::Duration fallback);

// Microseconds since the Unix epoch: how both stores keep times.
inline int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }
inline int64_t Micros(const google::protobuf::Timestamp& t) { return t.seconds() * 1000000 + t.nanos() / 1000; }
inline absl::Time FromMicros(int64_t us) { return absl::FromUnixMicros(us); }

// Parses a duration: absl forms ("30s", "1h30m", "250ms") plus days ("5d").
// INVALID_ARGUMENT naming the text otherwise; negative and infinite
// durations are refused.
absl::StatusOr<absl::Duration> ParseDurationWithDays(absl::string_view s);

}  // namespace carebroker
