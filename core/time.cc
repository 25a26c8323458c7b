#include "core/time.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker {

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

absl::Time FromTimestamp(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

absl::Duration FromDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::Duration DurationOr(const google::protobuf::Duration& d, absl::Duration fallback) {
  const absl::Duration v = FromDuration(d);
  return v > absl::ZeroDuration() ? v : fallback;
}

absl::StatusOr<absl::Duration> ParseDurationWithDays(absl::string_view s) {
  absl::Duration d;
  absl::string_view t = absl::StripAsciiWhitespace(s);
  if (t.size() > 1 && t.back() == 'd') {
    int64_t days;
    if (!absl::SimpleAtoi(t.substr(0, t.size() - 1), &days) || days < 0 || days > 36500) {
      return absl::InvalidArgumentError(absl::StrCat("'", s, "' is not a duration"));
    }
    return absl::Hours(24 * days);
  }
  if (!absl::ParseDuration(t, &d) || d == absl::InfiniteDuration() || d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", s, "' is not a duration (use e.g. 30s, 15m, 2h, 5d)"));
  }
  return d;
}

}  // namespace carebroker
