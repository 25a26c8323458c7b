// DHSC Adult Social Care Client Level Data (CLD), Release 1 column names:
// a CSV with one row per event (Request, Assessment, Service, Review), the
// person's details repeated on each row. Columns are matched by name in any
// order (case and surrounding spaces ignored); absent columns are empty.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "adapters/common/values.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker::cld {

// The Release 1 submission header names, in the order WriteCld writes them.
const std::vector<std::string>& Columns();

struct Submission {
  std::string la_code;               // LA Code (the council's ODS code, e.g. 503)
  std::string period_start;          // Reporting Period Start Date, YYYY-MM-DD
  std::string period_end;            // Reporting Period End Date
  std::vector<v1::CareRecord> people;  // one record per person, events in row order
};

// Rows are grouped into people by NHS Number, else LA Person Unique
// Identifier (a row with neither is an error). INVALID_ARGUMENT with reason
// CLD_INVALID, CSV_INVALID, DATE_INVALID or NHS_NUMBER_INVALID, naming the
// row and column, never the value.
absl::StatusOr<Submission> ReadCld(absl::string_view csv, const adapters::ReadOptions& options = {});

// Header and one row per event of each person. CLD_UNSUPPORTED for events
// CLD has no row for (hospital events, safeguarding): send those elsewhere.
absl::StatusOr<std::string> WriteCld(const Submission& submission);

}  // namespace carebroker::cld
