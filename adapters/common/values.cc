#include "adapters/common/values.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/civil_time.h"
#include "core/time.h"
#include "core/clock.h"
#include "core/files.h"
#include "core/nhs_number.h"
#include "core/status.h"
#include "core/reasons.h"

namespace carebroker::adapters {

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp ts;
  const absl::Duration since = t - absl::UnixEpoch();
  const int64_t seconds = absl::ToInt64Seconds(absl::Floor(since, absl::Seconds(1)));
  ts.set_seconds(seconds);
  ts.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(since - absl::Seconds(seconds))));
  return ts;
}

namespace {

bool Num(absl::string_view s, size_t n, int* out) {
  if (s.size() != n) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(s, out);
}

}  // namespace

absl::StatusOr<v1::Date> ParseDate(absl::string_view s, absl::string_view where, bool uk_slashes) {
  // Made only when needed: building a status costs more than the parse.
  const auto bad = [&] {
    return InvalidArgument(reason::kDateInvalid, absl::StrCat(where, uk_slashes ? ": expected a date YYYY-MM-DD or DD/MM/YYYY"
                                                                          : ": expected a date YYYY, YYYY-MM or YYYY-MM-DD"));
  };
  int y = 0, m = 0, d = 0;
  if (uk_slashes && s.size() == 10 && s[2] == '/' && s[5] == '/') {
    if (!Num(s.substr(0, 2), 2, &d) || !Num(s.substr(3, 2), 2, &m) || !Num(s.substr(6), 4, &y)) return bad();
  } else {
    if (!Num(s.substr(0, 4), 4, &y)) return bad();
    if (s.size() > 4 && (s.size() < 7 || s[4] != '-' || !Num(s.substr(5, 2), 2, &m))) return bad();
    if (s.size() > 7 && (s.size() != 10 || s[7] != '-' || !Num(s.substr(8, 2), 2, &d))) return bad();
  }
  const absl::CivilDay day(y, m == 0 ? 1 : m, d == 0 ? 1 : d);
  if (y < 1800 || day.year() != y || (m != 0 && day.month() != m) || (d != 0 && day.day() != d)) return bad();
  v1::Date out;
  out.set_year(y);
  out.set_month(m);
  out.set_day(d);
  return out;
}

std::string FormatDate(const v1::Date& d) {
  if (d.year() == 0) return "";
  if (d.month() == 0) return absl::StrFormat("%04d", d.year());
  if (d.day() == 0) return absl::StrFormat("%04d-%02d", d.year(), d.month());
  return absl::StrFormat("%04d-%02d-%02d", d.year(), d.month(), d.day());
}

absl::StatusOr<google::protobuf::Timestamp> ParseDateTime(absl::string_view s, absl::string_view where) {
  if (s.size() <= 10) {
    auto d = ParseDate(s, where);
    if (!d.ok()) return d.status();
    return ToProto(absl::FromCivil(absl::CivilDay(d->year(), d->month() == 0 ? 1 : d->month(), d->day() == 0 ? 1 : d->day()),
                                   UkZone()));
  }
  absl::Time t;
  std::string err;
  const std::string text(s);
  // An offset can only follow the time, which starts after YYYY-MM-DDT.
  const bool zoned = absl::EndsWith(text, "Z") || text.find_first_of("+-", 11) != std::string::npos;
  if (zoned) {
    if (absl::ParseTime("%Y-%m-%dT%H:%M:%E*S%Ez", text, &t, &err) ||
        absl::ParseTime("%Y-%m-%dT%H:%M%Ez", text, &t, &err)) {
      return ToProto(t);
    }
  } else if (absl::ParseTime("%Y-%m-%dT%H:%M:%E*S", text, UkZone(), &t, &err) ||
             absl::ParseTime("%Y-%m-%dT%H:%M", text, UkZone(), &t, &err)) {
    return ToProto(t);
  }
  return InvalidArgument(reason::kDateInvalid, absl::StrCat(where, ": expected a dateTime YYYY-MM-DDThh:mm:ss with Z or +hh:mm"));
}

std::string FormatDateTime(const google::protobuf::Timestamp& ts) {
  return absl::FormatTime(ts.nanos() == 0 ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%dT%H:%M:%E*SZ", FromTimestamp(ts),
                          absl::UTCTimeZone());
}

absl::StatusOr<std::string> CheckedNhsNumber(absl::string_view raw, absl::string_view where,
                                             const ReadOptions& options) {
  std::string n = absl::StrReplaceAll(absl::StripAsciiWhitespace(raw), {{" ", ""}, {"-", ""}});
  if (IsValidNhsNumber(n) || (options.keep_invalid_nhs_numbers && !n.empty() && n.size() <= 32)) return n;
  return InvalidArgument(reason::kNhsNumberInvalid,
                         absl::StrCat(where, ": the NHS number is not ten digits with a valid Modulus 11 check digit"));
}

}  // namespace carebroker::adapters
