// Documents for people outside the broker (a subject access report, a
// record of processing, a data-flow map): HTML pages that print well, PDF
// through headless Chromium and SVG through Graphviz, and the words for
// the log's codes. A page loads nothing: its content security policy
// forbids every fetch, so what is printed is what the page holds.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/cli/audit/audit_io.h"
#include "carebroker/v1/policy.pb.h"

namespace carebroker::audit_cli {

// `s` with & < > " ' escaped for HTML text and attribute values.
std::string Esc(absl::string_view s);

// A whole page: `title`, an A4 print style with "Page N of M" at the foot
// of each printed page beside `footer`, and `body` (HTML).
std::string Page(absl::string_view title, absl::string_view footer, absl::string_view body);

// An HTML table: `head` cells, then `rows` of HTML cells (already escaped);
// a row of one cell is a detail of the row before it, across every column.
std::string Table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows);

// Runs `argv` (argv[0] found on PATH) in its own process group, stdin from
// /dev/null, stdout and stderr to the file `log`; kills the group after
// `timeout`. FAILED_PRECONDITION when it cannot start, fails or times out,
// with the end of its output.
absl::Status RunTool(const std::vector<std::string>& argv, const std::string& log, absl::Duration timeout);

// A new private folder for a tool's files, removed when this goes.
class ScratchDir {
 public:
  static absl::StatusOr<ScratchDir> Make();
  ScratchDir(ScratchDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir();
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// The PDF headless Chromium (the program `chromium`) prints of `html`.
absl::StatusOr<std::string> PrintPdf(const std::string& html, const std::string& chromium);

// The SVG Graphviz (the program `dot`) draws of the DOT graph `graph`.
absl::StatusOr<std::string> RenderSvg(const std::string& graph, const std::string& dot);

// Writes a document: HTML (o.format html) to o.out_file or `out`; a PDF
// (o.format pdf) to o.out_file, which it needs. The exit code.
int WriteDocument(const Options& o, const std::string& html, std::ostream& out, std::ostream& err);

// Words for the log's codes, for people who do not read them.
std::string BasisWords(const v1::LegalBasis& b);        // "UK GDPR Article 6(1)(e) public task; ..."
std::string ReasonWords(absl::string_view reason);      // "CONSENT_DISSENT" -> "an objection ..."
// Field paths of the canonical record, grouped in words: "About the person:
// NHS number, names; Care events: discharge".
std::string FieldWords(const std::vector<std::string>& paths);
// A time as UK local time, e.g. "5 December 2026, 14:03".
std::string UkTime(const google::protobuf::Timestamp& t);

}  // namespace carebroker::audit_cli
