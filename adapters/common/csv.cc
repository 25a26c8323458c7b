#include "adapters/common/csv.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/reasons.h"

namespace carebroker::adapters {
namespace {

absl::Status Invalid(size_t line, absl::string_view what) {
  return InvalidArgument(reason::kCsvInvalid, absl::StrCat("line ", line, ": ", what));
}

}  // namespace

absl::Status ForEachCsvRow(absl::string_view text, const CsvLimits& limits,
                           absl::FunctionRef<absl::Status(const CsvRowView& row)> each) {
  if (text.size() > limits.max_bytes) return Invalid(1, absl::StrCat("the file exceeds ", limits.max_bytes, " bytes"));
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // a BOM, as spreadsheets write
  // A field is a view of the text, or (a quoted field with doubled quotes)
  // of the row's scratch, which may move while the row is read: views are
  // made once the row is complete.
  struct Span {
    bool scratch;
    size_t offset, size;
  };
  std::vector<Span> spans;
  std::string scratch;
  CsvRowView row;
  size_t rows = 0, line = 1, row_line = 1, i = 0;
  const size_t n = text.size();
  const char* const data = text.data();
  auto end_row = [&]() -> absl::Status {
    if (!(spans.size() == 1 && spans[0].size == 0)) {  // a blank line is no row
      if (rows >= limits.max_rows) return Invalid(row_line, absl::StrCat("more than ", limits.max_rows, " rows"));
      ++rows;
      row.clear();
      for (const Span& f : spans) {
        row.emplace_back((f.scratch ? scratch.data() : data) + f.offset, f.size);
      }
      if (absl::Status s = each(row); !s.ok()) return s;
    }
    spans.clear();
    scratch.clear();
    row_line = line;
    return absl::OkStatus();
  };
  while (i < n) {
    for (;;) {  // the fields of one row
      if (spans.size() >= limits.max_fields) return Invalid(row_line, absl::StrCat("more than ", limits.max_fields, " fields"));
      if (i < n && data[i] == '"') {
        // A quoted field: up to the closing quote, "" is one quote.
        const size_t start_line = line;
        Span f{false, ++i, 0};
        for (;;) {
          const void* q = i < n ? std::memchr(data + i, '"', n - i) : nullptr;
          if (q == nullptr) return Invalid(start_line, "a quoted field is not closed");
          const size_t at = static_cast<size_t>(static_cast<const char*>(q) - data);
          line += static_cast<size_t>(std::count(data + i, data + at, '\n'));
          if (at + 1 < n && data[at + 1] == '"') {  // a doubled quote: the field goes to the scratch
            if (!f.scratch) f = Span{true, scratch.size(), 0};  // i is still the field's start
            scratch.append(data + i, at + 1 - i);  // up to and with one quote
            i = at + 2;
            continue;
          }
          if (f.scratch) {
            scratch.append(data + i, at - i);
            f.size = scratch.size() - f.offset;
          } else {
            f.size = at - f.offset;
          }
          i = at + 1;
          break;
        }
        if (i < n && data[i] != ',' && data[i] != '\r' && data[i] != '\n') {
          return Invalid(line, "text after a closing quote");
        }
        spans.push_back(f);
      } else {
        const size_t start = i;
        while (i < n && data[i] != ',' && data[i] != '\r' && data[i] != '\n' && data[i] != '"') ++i;
        if (i < n && data[i] == '"') return Invalid(line, "a quote inside an unquoted field");
        spans.push_back(Span{false, start, i - start});
      }
      if (i >= n) return end_row();
      if (data[i] == ',') {
        ++i;
        continue;
      }
      i += (data[i] == '\r' && i + 1 < n && data[i + 1] == '\n') ? 2 : 1;
      ++line;
      if (absl::Status s = end_row(); !s.ok()) return s;
      break;
    }
  }
  return absl::OkStatus();
}

CsvRowEnds FindCsvRowEnds(absl::string_view text, bool quoted) {
  CsvRowEnds ends;
  const char* const data = text.data();
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    if (quoted) {  // to the closing quote; a doubled quote closes and reopens
      const void* q = std::memchr(data + i, '"', n - i);
      if (q == nullptr) break;
      i = static_cast<size_t>(static_cast<const char*>(q) - data) + 1;
      quoted = false;
      continue;
    }
    const char* next = std::find_if(data + i, data + n, [](char c) { return c == '"' || c == '\n'; });
    if (next == data + n) break;
    i = static_cast<size_t>(next - data) + 1;
    if (*next == '"') {
      quoted = true;
    } else {
      if (ends.first == 0) ends.first = i;
      ends.last = i;
    }
  }
  return ends;
}

absl::StatusOr<std::vector<CsvRow>> ParseCsv(absl::string_view text, const CsvLimits& limits) {
  std::vector<CsvRow> rows;
  absl::Status s = ForEachCsvRow(text, limits, [&](const CsvRowView& row) {
    rows.emplace_back(row.begin(), row.end());
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
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
