#include "broker/cli/audit/documents.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/files.h"
#include "core/reasons.h"
#include "core/time.h"

extern char** environ;

namespace carebroker::audit_cli {

std::string Esc(absl::string_view s) {
  return absl::StrReplaceAll(s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}, {"'", "&#39;"}});
}

std::string Page(absl::string_view title, absl::string_view footer, absl::string_view body) {
  // Margin boxes carry the page numbers; tables repeat their heads on each
  // printed page and rows do not break across pages.
  return absl::StrCat(R"(<!DOCTYPE html>
<html lang="en-GB">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>)", Esc(title), R"(</title>
<style>
@page { size: A4; margin: 18mm 15mm 20mm 15mm;
  @bottom-left { content: ")", Esc(footer), R"("; font: 8pt sans-serif; color: #555; }
  @bottom-right { content: "Page " counter(page) " of " counter(pages); font: 8pt sans-serif; color: #555; } }
body { font: 10.5pt/1.4 "DejaVu Sans", Arial, sans-serif; color: #111; max-width: 60em; margin: 1.5em auto; }
h1 { font-size: 17pt; margin: 0 0 0.2em; }
h2 { font-size: 13pt; margin: 1.4em 0 0.4em; break-after: avoid; }
p.lead { color: #333; margin-top: 0; }
table { border-collapse: collapse; width: 100%; font-size: 8.5pt; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
th, td { border: 1px solid #999; padding: 3px 5px; text-align: left; vertical-align: top; }
th { background: #e8edf2; }
td.num { text-align: right; }
span.when { white-space: nowrap; }
tr.detail td { border-top: none; padding-left: 1.5em; }
tr.detail { break-before: avoid; }
.none { color: #555; font-style: italic; }
.mono { font-family: "DejaVu Sans Mono", monospace; font-size: 8pt; word-break: break-all; }
.map svg { max-width: 100%; height: auto; }
@media print { body { margin: 0; max-width: none; } }
</style>
</head>
<body>
)", body, "</body>\n</html>\n");
}

std::string Table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
  std::string s = "<table>\n<thead><tr>";
  for (const auto& h : head) absl::StrAppend(&s, "<th>", Esc(h), "</th>");
  s += "</tr></thead>\n<tbody>\n";
  for (const auto& r : rows) {
    if (r.size() == 1 && head.size() > 1) {  // a detail row under the one before, across every column
      absl::StrAppend(&s, "<tr class=\"detail\"><td colspan=\"", head.size(), "\">", r[0], "</td></tr>\n");
      continue;
    }
    s += "<tr>";
    for (const auto& c : r) absl::StrAppend(&s, "<td>", c, "</td>");
    s += "</tr>\n";
  }
  return s + "</tbody>\n</table>\n";
}

namespace {

std::string Tail(const std::string& file, size_t n) {
  auto text = ReadFileToString(file, "output");
  if (!text.ok()) return "";
  std::string t = std::string(absl::StripAsciiWhitespace(*text));
  return t.size() > n ? "..." + t.substr(t.size() - n) : t;
}

}  // namespace

absl::Status RunTool(const std::vector<std::string>& argv, const std::string& log, absl::Duration timeout) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &fa, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return absl::FailedPreconditionError(absl::StrCat("cannot run ", argv[0], ": ", std::strerror(rc)));
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (true) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) return absl::FailedPreconditionError(absl::StrCat(argv[0], ": ", std::strerror(errno)));
    if (absl::Now() > deadline) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      return absl::FailedPreconditionError(
          absl::StrCat(argv[0], " did not finish within ", absl::FormatDuration(timeout), ": ", Tail(log, 300)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(-pid, SIGKILL);  // what it left behind in its group (Chromium's helpers)
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        argv[0], WIFEXITED(status) ? absl::StrCat(" failed with exit status ", WEXITSTATUS(status))
                                   : absl::StrCat(" was killed by signal ", WTERMSIG(status)),
        ": ", Tail(log, 300)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ScratchDir> ScratchDir::Make() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/carebroker-audit.XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot make a temporary folder: ", std::strerror(errno)));
  }
  return ScratchDir(pattern);
}

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

absl::StatusOr<std::string> PrintPdf(const std::string& html, const std::string& chromium) {
  auto dir = ScratchDir::Make();
  if (!dir.ok()) return dir.status();
  const std::string page = dir->path() + "/document.html", pdf = dir->path() + "/document.pdf";
  if (!WriteFileAtomically(dir->path(), "document.html", html)) {
    return absl::FailedPreconditionError(absl::StrCat("cannot write ", page));
  }
  // Headless, with nothing that reaches the network; as root Chromium's
  // sandbox cannot start, so it runs without.
  std::vector<std::string> argv = {chromium,
                                   "--headless",
                                   "--disable-gpu",
                                   "--no-first-run",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   "--disable-extensions",
                                   "--user-data-dir=" + dir->path() + "/profile",
                                   "--no-pdf-header-footer",
                                   "--print-to-pdf=" + pdf};
  if (geteuid() == 0) argv.push_back("--no-sandbox");
  argv.push_back("file://" + page);
  absl::Status s = RunTool(argv, dir->path() + "/chromium.log", absl::Seconds(120));
  if (!s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot print the PDF (headless Chromium; install Debian's chromium or give --chromium PATH): ",
                     s.message()));
  }
  auto out = ReadFileToString(pdf, "PDF");
  if (!out.ok() || !absl::StartsWith(*out, "%PDF-")) {
    return absl::FailedPreconditionError(absl::StrCat(chromium, " printed no PDF: ", Tail(dir->path() + "/chromium.log", 300)));
  }
  return out;
}

absl::StatusOr<std::string> RenderSvg(const std::string& graph, const std::string& dot) {
  auto dir = ScratchDir::Make();
  if (!dir.ok()) return dir.status();
  if (!WriteFileAtomically(dir->path(), "flows.dot", graph)) {
    return absl::FailedPreconditionError(absl::StrCat("cannot write ", dir->path(), "/flows.dot"));
  }
  const std::string svg = dir->path() + "/flows.svg";
  absl::Status s = RunTool({dot, "-Tsvg", "-o", svg, dir->path() + "/flows.dot"}, dir->path() + "/dot.log",
                           absl::Seconds(60));
  if (!s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot draw the map (Graphviz; install Debian's graphviz or give --dot PATH): ", s.message()));
  }
  auto out = ReadFileToString(svg, "SVG");
  if (!out.ok()) return out.status();
  // The drawing alone, without the XML prologue and DOCTYPE, to sit inside the page.
  const size_t at = out->find("<svg");
  if (at == std::string::npos) return absl::FailedPreconditionError(absl::StrCat(dot, " drew no SVG"));
  return out->substr(at);
}

int WriteDocument(const Options& o, const std::string& html, std::ostream& out, std::ostream& err) {
  std::string bytes = html;
  if (o.format == "pdf") {
    if (o.out_file.empty()) {
      err << "carebroker-audit: --format pdf needs --out FILE\n";
      return 2;
    }
    auto pdf = PrintPdf(html, o.chromium);
    if (!pdf.ok()) return Failed(err, pdf.status());
    bytes = *std::move(pdf);
  }
  if (o.out_file.empty()) {
    out << bytes;
    return 0;
  }
  std::filesystem::path p(o.out_file);
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  if (!WriteFileAtomically(dir, p.filename().string(), bytes)) {
    err << "carebroker-audit: cannot write " << o.out_file << "\n";
    return 2;
  }
  out << "wrote " << o.out_file << " (" << bytes.size() << " bytes, " << o.format << ")\n";
  return 0;
}

std::string BasisWords(const v1::LegalBasis& b) {
  static const std::map<int, std::string> art6 = {
      {v1::ARTICLE6_CONSENT, "6(1)(a) consent"},
      {v1::ARTICLE6_CONTRACT, "6(1)(b) contract"},
      {v1::ARTICLE6_LEGAL_OBLIGATION, "6(1)(c) legal obligation"},
      {v1::ARTICLE6_VITAL_INTERESTS, "6(1)(d) vital interests"},
      {v1::ARTICLE6_PUBLIC_TASK, "6(1)(e) public task"},
      {v1::ARTICLE6_LEGITIMATE_INTERESTS, "6(1)(f) legitimate interests"}};
  static const std::map<int, std::string> art9 = {
      {v1::ARTICLE9_EXPLICIT_CONSENT, "9(2)(a) explicit consent"},
      {v1::ARTICLE9_SOCIAL_PROTECTION, "9(2)(b) employment and social protection"},
      {v1::ARTICLE9_VITAL_INTERESTS, "9(2)(c) vital interests"},
      {v1::ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST, "9(2)(g) substantial public interest"},
      {v1::ARTICLE9_HEALTH_OR_SOCIAL_CARE, "9(2)(h) health or social care"},
      {v1::ARTICLE9_PUBLIC_HEALTH, "9(2)(i) public health"},
      {v1::ARTICLE9_ARCHIVING_RESEARCH_STATISTICS, "9(2)(j) archiving, research and statistics"},
      {v1::ARTICLE9_NOT_APPLICABLE, "none (no special category data)"}};
  static const std::map<int, std::string> common = {
      {v1::COMMON_LAW_BASIS_IMPLIED_CONSENT, "implied consent"},
      {v1::COMMON_LAW_BASIS_EXPLICIT_CONSENT, "explicit consent"},
      {v1::COMMON_LAW_BASIS_STATUTORY_GATEWAY, "a statutory gateway"},
      {v1::COMMON_LAW_BASIS_OVERRIDING_PUBLIC_INTEREST, "overriding public interest"},
      {v1::COMMON_LAW_BASIS_NOT_CONFIDENTIAL, "not confidential"}};
  std::vector<std::string> parts;
  if (auto it = art6.find(b.article6()); it != art6.end()) parts.push_back("UK GDPR Article " + it->second);
  if (auto it = art9.find(b.article9()); it != art9.end()) parts.push_back("Article " + it->second);
  if (auto it = common.find(b.common_law()); it != common.end()) parts.push_back("common law: " + it->second);
  if (!b.statutory().empty()) parts.push_back(b.statutory());
  return parts.empty() ? "not recorded" : absl::StrJoin(parts, "; ");
}

std::string ReasonWords(absl::string_view reason) {
  static const std::map<std::string, std::string, std::less<>> words = {
      {reason::kNoAgreement, "no data-sharing agreement allows it"},
      {reason::kAgreementExpired, "the agreement had ended"},
      {reason::kAgreementNotYetValid, "the agreement was not yet in force"},
      {reason::kPayloadKindNotAllowed, "the agreement does not allow information of this kind"},
      {reason::kOverrideJustificationMissing, "a safeguarding override was asked for without a justification"},
      {reason::kConsentDissent, "an objection recorded by or for the person"},
      {reason::kConsentRequired, "the person's consent is needed and was not recorded"},
      {reason::kNationalOptOut, "the person's national data opt-out"},
      {reason::kSafeguardingOverride, "set aside for safeguarding"}};
  auto it = words.find(reason);
  return it == words.end() ? absl::StrCat(absl::AsciiStrToLower(absl::StrReplaceAll(reason, {{"_", " "}})))
                           : it->second;
}

std::string FieldWords(const std::vector<std::string>& paths) {
  static const std::map<std::string, std::string, std::less<>> groups = {
      {"person", "About the person"}, {"events", "Care events"}, {"social_care", "Social care"}};
  static const std::map<std::string, std::string, std::less<>> words = {
      {"nhs_number", "NHS number"}, {"nhs_number_status", "NHS number status"}, {"gp_practice", "GP practice"},
      {"birth_date", "date of birth"}, {"ods", "ODS code"}, {"names.family", "family name"},
      {"names.given", "given names"}, {"address.postcode", "postcode"}, {"address.lines", "address lines"},
      {"local_identifiers.value", "local identifiers"}};
  std::map<std::string, std::vector<std::string>> by_group;
  std::vector<std::string> order;
  for (const auto& p : paths) {
    std::vector<std::string> parts = absl::StrSplit(p, '.');
    const std::string group = parts.size() > 1 ? parts.front() : "";
    std::string leaf = parts.back();
    auto w = words.find(leaf);
    leaf = w != words.end() ? w->second : absl::StrReplaceAll(leaf, {{"_", " "}});
    if (parts.size() > 2) {
      const std::string sub = absl::StrCat(parts[parts.size() - 2], ".", parts.back());
      auto named = words.find(sub);
      leaf = named != words.end() ? named->second : absl::StrCat(absl::StrReplaceAll(parts[parts.size() - 2], {{"_", " "}}), " ", leaf);
    }
    if (!by_group.count(group)) order.push_back(group);
    by_group[group].push_back(leaf);
  }
  std::vector<std::string> out;
  for (const auto& g : order) {
    auto it = groups.find(g);
    std::string label = it != groups.end() ? it->second : g.empty() ? "" : absl::StrReplaceAll(g, {{"_", " "}});
    if (!label.empty()) label[0] = absl::ascii_toupper(label[0]);
    out.push_back(label.empty() ? absl::StrJoin(by_group[g], ", ") : absl::StrCat(label, ": ", absl::StrJoin(by_group[g], ", ")));
  }
  return absl::StrJoin(out, "; ");
}

std::string UkTime(const google::protobuf::Timestamp& t) {
  static const absl::TimeZone uk = [] {
    absl::TimeZone z;
    return absl::LoadTimeZone("Europe/London", &z) ? z : absl::UTCTimeZone();
  }();
  return std::string(absl::StripLeadingAsciiWhitespace(absl::FormatTime("%e %B %Y, %H:%M", FromTimestamp(t), uk)));
}

}  // namespace carebroker::audit_cli
