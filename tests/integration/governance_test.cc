// The IG officer's documents through the real CLI against a real broker:
// the subject access report rendered and printed by headless Chromium
// (Debian's chromium) and read back from the PDF with poppler's tools.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <regex>

#include "broker/cli/audit/audit_cli.h"
#include "broker/cli/audit/documents.h"
#include "core/files.h"
#include "core/time.h"
#include "tests/integration/policy_fixture.h"

namespace carebroker::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A command's standard output; `rc` its exit status.
std::string Sh(const std::string& cmd, int* rc = nullptr) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  if (rc != nullptr) *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

// Headless Chromium as the tool itself starts it, for a real browser's view of a page.
std::string Chromium(const fs::path& scratch, const std::string& args) {
  fs::create_directories(scratch);
  return Sh(absl::StrCat("chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking "
                         "--disable-component-update --disable-sync --user-data-dir=",
                         scratch.string(), " ", args, " 2>/dev/null"));
}

// Whether `text` holds `part`, without printing the whole document when not.
::testing::AssertionResult Holds(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "the document does not hold \"" << part << "\"";
}

int PdfPages(const fs::path& pdf) {
  std::smatch m;
  const std::string info = Sh("pdfinfo " + pdf.string());
  return std::regex_search(info, m, std::regex("Pages:\\s+(\\d+)")) ? std::stoi(m[1]) : -1;
}

std::string PdfPage(const fs::path& pdf, int page) {
  return Sh(absl::StrCat("pdftotext -layout -f ", page, " -l ", page, " ", pdf.string(), " -"));
}

TEST(Documents, WordsForThePerson) {
  using audit_cli::Esc;
  using audit_cli::FieldWords;
  using audit_cli::UkTime;
  EXPECT_EQ(Esc("<a href=\"x\">O'Brien & co</a>"), "&lt;a href=&quot;x&quot;&gt;O&#39;Brien &amp; co&lt;/a&gt;");
  EXPECT_EQ(FieldWords({"person.nhs_number", "person.names.family", "events.discharge", "events.admission.ward",
                        "person.birth_date"}),
            "About the person: NHS number, family name, date of birth; Care events: discharge, admission ward");
  EXPECT_EQ(FieldWords({}), "");
  // UK local time: GMT in winter, BST in summer.
  EXPECT_EQ(UkTime(ToTimestamp(absl::FromCivil(absl::CivilMinute(2026, 12, 5, 9, 3), absl::UTCTimeZone()))),
            "5 December 2026, 09:03");
  EXPECT_EQ(UkTime(ToTimestamp(absl::FromCivil(absl::CivilMinute(2026, 7, 1, 23, 30), absl::UTCTimeZone()))),
            "2 July 2026, 00:30");
  v1::LegalBasis none;
  EXPECT_EQ(audit_cli::BasisWords(none), "not recorded");
  EXPECT_EQ(audit_cli::ReasonWords("NATIONAL_OPT_OUT"), "the person's national data opt-out");
  EXPECT_EQ(audit_cli::ReasonWords("SOMETHING_NEW"), "something new");
}

class GovernanceTest : public PolicyTest {};

TEST_F(GovernanceTest, TheSubjectAccessReportIsADocumentThePersonCanBeSentAndItPrints) {
  // Disclosures to the council, one refused, an objection set aside for a
  // safeguarding concern, and someone else's record that must not appear.
  constexpr int kDisclosures = 60;
  for (int i = 0; i < kDisclosures; ++i) {
    ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care")).ok());
  }
  EXPECT_EQ(Send(*trust_, CareSend("Y06601", "HOSPITAL_DISCHARGE", "research")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_FALSE(SafeguardingOverride().empty());
  v1::CareRecord other = SyntheticCareRecord();
  other.mutable_person()->set_nhs_number("9876543210");
  other.mutable_person()->mutable_names(0)->set_family("Otherperson");
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care", other)).ok());
  {
    Receiver rx(*council_, 1);
    ASSERT_TRUE(rx.Next().has_value());
  }

  const fs::path html = dir_ / "sar.html", pdf = dir_ / "sar.pdf";
  AuditRun page = AuditCli(*broker_, "ig-officer",
                           {"--format", "html", "report", "sar", "--nhs-number", kNhs, "--out", html.string()});
  ASSERT_EQ(page.rc, 0) << page.err;
  auto text = ReadFileToString(html.string(), "report");
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(Holds(*text, "NHS number 943 476 5919"));
  EXPECT_FALSE(Holds(*text, "987 654 3210"));
  EXPECT_FALSE(Holds(*text, "9876543210"));
  EXPECT_FALSE(Holds(*text, "Synthetic")) << "no name, no record content: only what the log holds";
  EXPECT_TRUE(Holds(*text, "Section 42 enquiry: risk of serious harm"));
  EXPECT_TRUE(Holds(*text, "no data-sharing agreement allows it")) << "the research request's refusal, in words";
  EXPECT_TRUE(Holds(*text, "About the person: postcode, date of birth, family name, NHS number"));
  EXPECT_TRUE(Holds(*text, "UK GDPR Article 6(1)(e) public task; Article 9(2)(h) health or social care; common "
                          "law: implied consent; Care Act 2014 s74"));

  // A real browser reads it as the page it is: every section, the tables
  // and their rows (DOM after parsing).
  const std::string dom = Chromium(dir_ / "chromium-dom", "--dump-dom file://" + html.string());
  EXPECT_TRUE(Holds(dom, "<h1>Information shared about you</h1>"));
  for (const char* h : {"Who received information about you", "The agreements it was shared under, and the law they rest on", "When your objection was set aside for safeguarding",
                        "Requests to share that were refused", "Your recorded wishes", "How this record was checked"}) {
    EXPECT_TRUE(Holds(dom, absl::StrCat("<h2>", h, "</h2>"))) << h;
  }
  size_t rows = 0;
  for (size_t at = dom.find("<tr><td>"); at != std::string::npos; at = dom.find("<tr><td>", at + 1)) ++rows;
  // Disclosures (60 and the concern), their two agreements, one override,
  // one refusal, one wish; and under each disclosure what it held.
  EXPECT_EQ(rows, size_t{kDisclosures + 1 + 2 + 1 + 1 + 1});
  size_t details = 0;
  for (size_t at = dom.find("<tr class=\"detail\">"); at != std::string::npos;
       at = dom.find("<tr class=\"detail\">", at + 1)) {
    ++details;
  }
  EXPECT_EQ(details, size_t{kDisclosures + 1});

  // Printed through the tool's own Chromium: A4 pages, each numbered "Page
  // N of M" with M the PDF's own page count, the table's head repeated on
  // each page the table spans.
  AuditRun printed = AuditCli(*broker_, "ig-officer",
                              {"--format", "pdf", "report", "sar", "--nhs-number", kNhs, "--out", pdf.string()});
  ASSERT_EQ(printed.rc, 0) << printed.err;
  EXPECT_THAT(printed.out, HasSubstr("pdf"));
  const int pages = PdfPages(pdf);
  if (const char* keep = std::getenv("CB_KEEP_DOCUMENTS")) fs::copy_file(pdf, fs::path(keep) / "sar.pdf", fs::copy_options::overwrite_existing);
  ASSERT_GE(pages, 3) << "61 disclosures do not fit on two A4 pages";
  for (int p = 1; p <= pages; ++p) {
    EXPECT_TRUE(Holds(PdfPage(pdf, p), absl::StrCat("Page ", p, " of ", pages))) << "page " << p;
  }
  EXPECT_TRUE(Holds(PdfPage(pdf, 1), "Information shared about you"));
  EXPECT_TRUE(Holds(PdfPage(pdf, 2), "happened")) << "the table's head on the next page";
  EXPECT_TRUE(Holds(PdfPage(pdf, pages), "byte for byte")) << "how it was checked, last";
  const std::string all = Sh("pdftotext " + pdf.string() + " -");
  EXPECT_TRUE(Holds(all, "How this record was checked"));
  EXPECT_TRUE(Holds(all, "Section 42 enquiry"));
  EXPECT_FALSE(Holds(all, "9876543210"));
}

TEST_F(GovernanceTest, TheDocumentIsRefusedWithoutWhatItNeeds) {
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care")).ok());
  // A PDF needs a file; html and pdf are for documents only.
  AuditRun no_file = AuditCli(*broker_, "ig-officer", {"--format", "pdf", "report", "sar", "--nhs-number", kNhs});
  EXPECT_EQ(no_file.rc, 2);
  EXPECT_THAT(no_file.err, HasSubstr("--format pdf needs --out FILE"));
  AuditRun query = AuditCli(*broker_, "ig-officer", {"--format", "html", "query"});
  EXPECT_EQ(query.rc, 2);
  EXPECT_THAT(query.err, HasSubstr("for a report's documents"));
  AuditRun csv_out = AuditCli(*broker_, "ig-officer", {"--format", "csv", "report", "sar", "--nhs-number", kNhs,
                                                       "--out", (dir_ / "x.csv").string()});
  EXPECT_EQ(csv_out.rc, 2);
  EXPECT_THAT(csv_out.err, HasSubstr("--out is for a document"));
  // A Chromium that cannot be run is named, and nothing is written.
  const fs::path pdf = dir_ / "never.pdf";
  AuditRun no_browser = AuditCli(*broker_, "ig-officer",
                                 {"--chromium", "/nonexistent/chromium", "--format", "pdf", "report", "sar",
                                  "--nhs-number", kNhs, "--out", pdf.string()});
  EXPECT_EQ(no_browser.rc, 2);
  EXPECT_THAT(no_browser.err, HasSubstr("cannot run /nonexistent/chromium"));
  EXPECT_FALSE(fs::exists(pdf));
  // Offline from a store file without the subject key: refused, as a query is.
  AuditRun offline = AuditCli(*broker_, "ig-officer",
                              {"--store", (dir_ / "data" / "carebroker.db").string(), "--format", "html", "report",
                               "sar", "--nhs-number", kNhs});
  EXPECT_EQ(offline.rc, 2);
  EXPECT_THAT(offline.err, HasSubstr("--subject-key"));
  AuditRun bad = AuditCli(*broker_, "ig-officer", {"--format", "html", "report", "sar", "--nhs-number", "1234567890"});
  EXPECT_EQ(bad.rc, 2);
  EXPECT_THAT(bad.err, HasSubstr("not a valid NHS number"));
}

}  // namespace
}  // namespace carebroker::testing
