// Values every adapter reads and writes the same way: dates, times, NHS
// numbers. Errors name `where` (an element path or column), never the value.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "carebroker/v1/record.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace carebroker::adapters {

// Keeps nanoseconds (FHIR times may carry them); FromTimestamp in
// core/time.h is the way back.
google::protobuf::Timestamp ToProto(absl::Time t);

// ISO 8601 date YYYY, YYYY-MM or YYYY-MM-DD (FHIR date); with
// `uk_slashes` also DD/MM/YYYY (council and CLD files).
absl::StatusOr<v1::Date> ParseDate(absl::string_view s, absl::string_view where, bool uk_slashes = false);
// YYYY-MM-DD, YYYY-MM or YYYY as far as the date is known; "" for none.
std::string FormatDate(const v1::Date& d);

// FHIR dateTime: a date (midnight UK time) or YYYY-MM-DDThh:mm[:ss[.s]] with
// Z or +hh:mm (without a zone: UK local time).
absl::StatusOr<google::protobuf::Timestamp> ParseDateTime(absl::string_view s, absl::string_view where);
// UTC, e.g. 2026-11-22T10:00:00Z (fractions only when present).
std::string FormatDateTime(const google::protobuf::Timestamp& ts);

// How adapters read what they are given.
struct ReadOptions {
  // Keep an NHS number that fails Modulus 11 (spaces removed) instead of
  // refusing the input: for flows whose agreement accepts unverified
  // identifiers, which the broker decides after parsing.
  bool keep_invalid_nhs_numbers = false;
};

// An NHS number without spaces or hyphens; NHS_NUMBER_INVALID naming
// `where` unless it is ten digits with the right Modulus 11 check digit
// (or options.keep_invalid_nhs_numbers).
absl::StatusOr<std::string> CheckedNhsNumber(absl::string_view raw, absl::string_view where,
                                             const ReadOptions& options = {});

}  // namespace carebroker::adapters
