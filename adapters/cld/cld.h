// DHSC Adult Social Care Client Level Data (CLD), Release 1 column names:
// a CSV with one row per event (Request, Assessment, Service, Review), the
// person's details repeated on each row. Columns are matched by name in any
// order (case and surrounding spaces ignored); absent columns are empty.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "adapters/common/csv.h"
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

// A CLD file a row at a time, for one too large to hold whole (a submission
// arriving in chunks: broker/exchange/submission.h). ReadCld reads with it.
class RowReader {
 public:
  // From the header row (row 1). CLD_INVALID naming the column: a repeated
  // or unknown column name, no Event Type, neither NHS Number nor LA Person
  // Unique Identifier.
  static absl::StatusOr<RowReader> FromHeader(const adapters::CsvRowView& names);

  struct Row {
    v1::CareRecord record;   // the row's person, with the row's one event
    std::string person_key;  // "n:" NHS number, else "l:" LA person id
  };
  // Row `row_number` (counted from the header). Its LA Code and reporting
  // period must match those of earlier rows, kept in `seen` (which takes
  // them from the first row that states them); errors as ReadCld's.
  absl::StatusOr<Row> Read(const adapters::CsvRowView& cells, size_t row_number, Submission* seen,
                           const adapters::ReadOptions& options = {}) const;

 private:
  RowReader() = default;
  std::vector<int> column_of_;  // each column's place in the table; negative: not a record field
  int event_type_ = -1, nhs_number_ = -1, la_person_ = -1;
  std::array<int, 3> submission_ = {-1, -1, -1};  // LA Code, period start, period end
};

// One row per event of `record` under `details`' LA Code and reporting
// period, with no header; errors as WriteCld's, naming `which` (e.g.
// "person 3").
absl::Status AppendCldRows(const Submission& details, const v1::CareRecord& record, std::string* out,
                           absl::string_view which);

// Header and one row per event of each person. CLD_UNSUPPORTED for events
// CLD has no row for (hospital events, safeguarding): send those elsewhere.
absl::StatusOr<std::string> WriteCld(const Submission& submission);

}  // namespace carebroker::cld
