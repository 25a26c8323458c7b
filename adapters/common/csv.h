// RFC 4180 CSV: fields separated by commas, rows by CRLF or LF; a field in
// double quotes may hold commas, quotes (doubled) and line breaks.
#pragma once

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace carebroker::adapters {

using CsvRow = std::vector<std::string>;

struct CsvLimits {
  size_t max_bytes = 64 << 20;
  size_t max_rows = 1'000'000;
  size_t max_fields = 200;
};

// One row's fields: views of the text, or of the reader's scratch for a
// quoted field with doubled quotes; valid during the callback only.
using CsvRowView = std::vector<absl::string_view>;

// Calls `each` with every row in order, blank lines skipped, stopping at the
// first error it returns. CSV_INVALID naming the line for a stray quote, an
// unclosed quoted field or a limit exceeded; never the data.
absl::Status ForEachCsvRow(absl::string_view text, const CsvLimits& limits,
                           absl::FunctionRef<absl::Status(const CsvRowView& row)> each);

// Where rows end in `text`, a piece of a file read in pieces (a file arriving
// in chunks): just past the first and the last line break outside a quoted
// field, both 0 when there is none. `quoted`: the piece starts inside a
// quoted field (the piece before it broke off in the middle of one).
struct CsvRowEnds {
  size_t first = 0;
  size_t last = 0;
};
CsvRowEnds FindCsvRowEnds(absl::string_view text, bool quoted = false);

// Every row, as ForEachCsvRow reads them.
absl::StatusOr<std::vector<CsvRow>> ParseCsv(absl::string_view text, const CsvLimits& limits = {});

// One row, CRLF-terminated; fields quoted only when they must be.
void AppendCsvRow(const CsvRow& row, std::string* out);

}  // namespace carebroker::adapters
