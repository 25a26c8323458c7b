#include "adapters/common/csv.h"

#include "absl/strings/str_cat.h"
#include "broker/core/status.h"

namespace carebroker::adapters {
namespace {

absl::Status Invalid(size_t line, absl::string_view what) {
  return InvalidArgument("CSV_INVALID", absl::StrCat("line ", line, ": ", what));
}

}  // namespace

absl::StatusOr<std::vector<CsvRow>> ParseCsv(absl::string_view text, const CsvLimits& limits) {
  if (text.size() > limits.max_bytes) return Invalid(1, absl::StrCat("the file exceeds ", limits.max_bytes, " bytes"));
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // a BOM, as spreadsheets write
  std::vector<CsvRow> rows;
  CsvRow row;
  std::string field;
  size_t line = 1, row_line = 1;
  size_t i = 0;
  const size_t n = text.size();
  auto end_field = [&]() -> absl::Status {
    if (row.size() >= limits.max_fields) return Invalid(row_line, absl::StrCat("more than ", limits.max_fields, " fields"));
    row.push_back(std::move(field));
    field.clear();
    return absl::OkStatus();
  };
  auto end_row = [&]() -> absl::Status {
    if (absl::Status s = end_field(); !s.ok()) return s;
    if (!(row.size() == 1 && row[0].empty())) {
      if (rows.size() >= limits.max_rows) return Invalid(row_line, absl::StrCat("more than ", limits.max_rows, " rows"));
      rows.push_back(std::move(row));
    }
    row.clear();
    row_line = line;
    return absl::OkStatus();
  };
  while (i < n) {
    const char c = text[i];
    if (c == '"' && field.empty()) {
      // A quoted field: up to the closing quote, "" is one quote.
      const size_t start_line = line;
      ++i;
      for (;;) {
        if (i >= n) return Invalid(start_line, "a quoted field is not closed");
        if (text[i] == '"') {
          if (i + 1 < n && text[i + 1] == '"') {
            field.push_back('"');
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        if (text[i] == '\n') ++line;
        field.push_back(text[i++]);
      }
      if (i < n && text[i] != ',' && text[i] != '\r' && text[i] != '\n') {
        return Invalid(line, "text after a closing quote");
      }
      if (field.empty()) field.reserve(1);  // "" is a present, empty field
      continue;
    }
    if (c == '"') return Invalid(line, "a quote inside an unquoted field");
    if (c == ',') {
      if (absl::Status s = end_field(); !s.ok()) return s;
      ++i;
    } else if (c == '\r' || c == '\n') {
      i += (c == '\r' && i + 1 < n && text[i + 1] == '\n') ? 2 : 1;
      ++line;
      if (absl::Status s = end_row(); !s.ok()) return s;
    } else {
      field.push_back(c);
      ++i;
    }
  }
  if (!field.empty() || !row.empty()) {
    if (absl::Status s = end_row(); !s.ok()) return s;
  }
  return rows;
}

void AppendCsvRow(const CsvRow& row, std::string* out) {
  for (size_t i = 0; i < row.size(); ++i) {
    if (i > 0) out->push_back(',');
    const std::string& f = row[i];
    if (f.find_first_of(",\"\r\n") == std::string::npos) {
      out->append(f);
      continue;
    }
    out->push_back('"');
    for (char c : f) {
      if (c == '"') out->push_back('"');
      out->push_back(c);
    }
    out->push_back('"');
  }
  out->append("\r\n");
}

}  // namespace carebroker::adapters
