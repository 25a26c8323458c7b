// RFC 4180 CSV: fields separated by commas, rows by CRLF or LF; a field in
// double quotes may hold commas, quotes (doubled) and line breaks.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace carebroker::adapters {

using CsvRow = std::vector<std::string>;

struct CsvLimits {
  size_t max_bytes = 64 << 20;
  size_t max_rows = 1'000'000;
  size_t max_fields = 200;
};

// Every row, blank lines skipped. CSV_INVALID naming the line for a stray
// quote, an unclosed quoted field or a limit exceeded; never the data.
absl::StatusOr<std::vector<CsvRow>> ParseCsv(absl::string_view text, const CsvLimits& limits = {});

// One row, CRLF-terminated; fields quoted only when they must be.
void AppendCsvRow(const CsvRow& row, std::string* out);

}  // namespace carebroker::adapters
