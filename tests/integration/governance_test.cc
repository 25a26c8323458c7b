// The IG officer's documents through the real CLI against a real broker:
// the subject access report rendered and printed by headless Chromium
// (Debian's chromium) and read back from the PDF with poppler's tools.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

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

TEST_F(GovernanceTest, TheDocumentSaysWhatBecameOfEachMessage) {
  v1::SendReceipt held, released;
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_ADMISSION", "direct-care"), &held).ok());
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care"), &released).ok());
  ASSERT_TRUE(RejectAs(*council_, held.message_id(), "UNKNOWN_PATIENT").ok());
  ASSERT_TRUE(RejectAs(*council_, released.message_id(), "UNKNOWN_PATIENT").ok());
  ASSERT_TRUE(OperatorAct(*broker_, v1::MESSAGE_ACTION_RELEASE, released.message_id(), "", "patient found (INC0102)").ok());
  {
    Receiver rx(*council_, 10);
    auto d = rx.Next();
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->message_id(), released.message_id());
    ASSERT_TRUE(rx.Ack(d->message_id()));
  }
  const fs::path html = dir_ / "fates.html";
  AuditRun page = AuditCli(*broker_, "ig-officer",
                           {"--format", "html", "report", "sar", "--nhs-number", kNhs, "--out", html.string()});
  ASSERT_EQ(page.rc, 0) << page.err;
  auto text = ReadFileToString(html.string(), "report");
  ASSERT_TRUE(text.ok());
  // The admission held (rejected by the council); the discharge released, delivered and received.
  const size_t admission = text->find("(HOSPITAL_ADMISSION)"), discharge = text->find("(HOSPITAL_DISCHARGE)");
  ASSERT_NE(admission, std::string::npos);
  ASSERT_NE(discharge, std::string::npos);
  EXPECT_EQ(text->find("held, not delivered", admission), text->find("held, not delivered"));
  EXPECT_LT(text->find("held, not delivered", admission), discharge);
  const size_t fate = text->find("</td><td>", text->find("SOCIAL-CARE v1.1", discharge));
  EXPECT_EQ(text->substr(fate + 9, 10), "delivered ");
  EXPECT_TRUE(Holds(text->substr(fate, 200), "; received "));
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

// Three discharges to the council, a request under no agreement, and a
// safeguarding override: what the reports below count.
class ReportsTest : public GovernanceTest {
 protected:
  void SetUp() override {
    GovernanceTest::SetUp();
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care")).ok());
    ASSERT_EQ(Send(*trust_, CareSend("Y06601", "HOSPITAL_DISCHARGE", "research")).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    ASSERT_FALSE(SafeguardingOverride().empty());
  }

  AuditRun Report(const std::string& format, const std::vector<std::string>& args) {
    std::vector<std::string> all = {"--format", format, "report"};
    all.insert(all.end(), args.begin(), args.end());
    return AuditCli(*broker_, "ig-officer", all);
  }

  static const nlohmann::json* FlowNamed(const nlohmann::json& j, const std::string& flow) {
    for (const auto& f : j.at("flows")) {
      if (f.at("flow") == flow) return &f;
    }
    return nullptr;
  }
};

TEST_F(ReportsTest, TheRecordOfProcessingIsGeneratedFromTheAgreementsInForceAndTheLog) {
  AuditRun r = Report("json", {"processing", "--agreements", agreements_.string()});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err, "") << "the folder is the set in force: no warning";
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j.at("is_the_set_in_force").get<bool>());
  EXPECT_EQ(j.at("refused_under_no_agreement"), 1);
  ASSERT_EQ(j.at("flows").size(), 7u) << "every flow of the five shipped agreements";
  const auto* discharge = FlowNamed(j, "admission-and-discharge");
  ASSERT_NE(discharge, nullptr);
  EXPECT_EQ(discharge->at("agreement"), "DSA-ACUTE-TO-SOCIAL-CARE");
  EXPECT_EQ(discharge->at("disclosures"), "3");
  EXPECT_EQ(discharge->at("refusals"), "0");
  EXPECT_EQ(discharge->at("controllers"), "RR8, RH8, 503, 511");
  EXPECT_EQ(discharge->at("senders"), "NHS trusts");
  EXPECT_EQ(discharge->at("recipients"), "local authorities");
  EXPECT_EQ(discharge->at("data_subjects"), "adults admitted to hospital who may need care and support after discharge");
  EXPECT_THAT(discharge->at("data").get<std::string>(), HasSubstr("About the person: NHS number, NHS number status, names"));
  EXPECT_THAT(discharge->at("data").get<std::string>(), HasSubstr("special category"));
  EXPECT_EQ(discharge->at("transforms"), "events.admission.consultant: withheld");
  EXPECT_THAT(discharge->at("legal_basis").get<std::string>(), HasSubstr("Article 9(2)(h) health or social care"));
  EXPECT_THAT(discharge->at("consent").get<std::string>(), HasSubstr("implied"));
  EXPECT_EQ(discharge->at("national_opt_out"), "does not apply (never to direct care or safeguarding)");
  EXPECT_THAT(discharge->at("retention").get<std::string>(), HasSubstr("social care record"));
  const auto* cld = FlowNamed(j, "quarterly-return");
  ASSERT_NE(cld, nullptr);
  EXPECT_THAT(cld->at("national_opt_out").get<std::string>(), HasSubstr("exempt, required-by-law"));
  EXPECT_THAT(cld->at("transforms").get<std::string>(), HasSubstr("pseudonymised with the recipient's own key"));
  const auto* concern = FlowNamed(j, "council-to-trust");
  ASSERT_NE(concern, nullptr);
  EXPECT_EQ(concern->at("disclosures"), "1");
  EXPECT_THAT(concern->at("consent").get<std::string>(), HasSubstr("may set aside recorded dissent"));

  // Markdown, the default, for a document repository.
  AuditRun md = AuditCli(*broker_, "ig-officer", {"report", "processing", "--agreements", agreements_.string()});
  ASSERT_EQ(md.rc, 0) << md.err;
  EXPECT_EQ(md.out.rfind("# Record of processing activities\n", 0), 0u);
  EXPECT_TRUE(Holds(md.out, "## DSA-ACUTE-TO-SOCIAL-CARE v1.1: Hospital admission and discharge notices to adult social "
                            "care, flow admission-and-discharge"));
  EXPECT_TRUE(Holds(md.out, "| Disclosures in the period | 3 |"));
  EXPECT_FALSE(Holds(md.out, kNhs));

  // HTML, read by a real browser: a section per flow.
  const fs::path html = dir_ / "processing.html";
  AuditRun page = Report("html", {"processing", "--agreements", agreements_.string(), "--out", html.string()});
  ASSERT_EQ(page.rc, 0) << page.err;
  const std::string dom = Chromium(dir_ / "chromium-processing", "--dump-dom file://" + html.string());
  EXPECT_TRUE(Holds(dom, "<h1>Record of processing activities</h1>"));
  size_t sections = 0;
  for (size_t at = dom.find("<h2>"); at != std::string::npos; at = dom.find("<h2>", at + 1)) ++sections;
  EXPECT_EQ(sections, 7u);
  EXPECT_TRUE(Holds(dom, "<td>Categories of people</td><td>adults at risk of abuse or neglect"));

  // Over a period that holds none of it, nothing is counted.
  AuditRun later = Report("json", {"processing", "--agreements", agreements_.string(), "--from", "2099-01-01T00:00:00Z"});
  ASSERT_EQ(later.rc, 0) << later.err;
  EXPECT_EQ(FlowNamed(nlohmann::json::parse(later.out), "admission-and-discharge")->at("disclosures"), "0");
}

TEST_F(ReportsTest, TheRecordSaysWhenTheFolderIsNotTheSetInForceAndRefusesBadInput) {
  const fs::path changed = dir_ / "changed";
  fs::create_directories(changed);
  for (const auto& f : fs::directory_iterator(agreements_)) fs::copy_file(f.path(), changed / f.path().filename());
  std::ofstream(changed / "council-to-gp.yaml", std::ios::app) << "# edited after the broker loaded it\n";
  AuditRun r = Report("json", {"processing", "--agreements", changed.string()});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("is not the set the broker last loaded"));
  EXPECT_FALSE(nlohmann::json::parse(r.out).at("is_the_set_in_force").get<bool>());

  std::ofstream(changed / "broken.yaml") << "id: DSA-BROKEN\nflows: [{name: x}]\n";
  AuditRun broken = Report("json", {"processing", "--agreements", changed.string()});
  EXPECT_EQ(broken.rc, 2);
  EXPECT_THAT(broken.err, HasSubstr("broken.yaml"));
  AuditRun missing = Report("json", {"processing", "--agreements", (dir_ / "nowhere").string()});
  EXPECT_EQ(missing.rc, 2);
  AuditRun csv = Report("csv", {"processing", "--agreements", agreements_.string()});
  EXPECT_EQ(csv.rc, 2);
  EXPECT_THAT(csv.err, HasSubstr("this report is written as"));
  AuditRun bad_time = Report("json", {"processing", "--agreements", agreements_.string(), "--from", "yesterday"});
  EXPECT_EQ(bad_time.rc, 2);
  EXPECT_THAT(bad_time.err, HasSubstr("not an RFC 3339 time"));
  AuditRun md_sar = Report("markdown", {"sar", "--nhs-number", kNhs});
  EXPECT_EQ(md_sar.rc, 2);
}

TEST_F(ReportsTest, TheFlowMapDrawsWhoSentWhatToWhomWithVolumesAndRefusals) {
  AuditRun r = Report("json", {"flows", "--agreements", agreements_.string()});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto edges = nlohmann::json::parse(r.out);
  std::map<std::string, std::pair<std::string, std::string>> by;  // from>to>agreement>flow -> (disclosed, refused)
  for (const auto& e : edges) {
    by[absl::StrCat(e.at("from").get<std::string>(), ">", e.at("to").get<std::string>(), ">",
                    e.at("agreement").get<std::string>(), ">", e.at("flow").get<std::string>())] = {e.at("disclosed"),
                                                                                                 e.at("refused")};
  }
  EXPECT_EQ(by["RR8>503>DSA-ACUTE-TO-SOCIAL-CARE>admission-and-discharge"], std::make_pair(std::string("3"), std::string("0")));
  EXPECT_EQ(by["RR8>Y06601>(none)>"], std::make_pair(std::string("0"), std::string("1")));
  EXPECT_EQ(by["503>RR8>DSA-SAFEGUARDING-ADULTS>council-to-trust"], std::make_pair(std::string("1"), std::string("0")));
  // A flow in force that carried nothing is on the map too, between the kinds it names.
  EXPECT_EQ(by["NHS trusts>GP practices>DSA-ACUTE-TO-PRIMARY-CARE>admission-and-discharge-to-gp"],
            std::make_pair(std::string("0"), std::string("0")));

  const fs::path html = dir_ / "flows.html";
  AuditRun page = Report("html", {"flows", "--agreements", agreements_.string(), "--out", html.string()});
  ASSERT_EQ(page.rc, 0) << page.err;
  auto text = ReadFileToString(html.string(), "map");
  ASSERT_TRUE(text.ok());
  EXPECT_FALSE(Holds(*text, kNhs));
  // Chromium draws the SVG Graphviz made: its nodes and edge labels are in the page.
  const std::string dom = Chromium(dir_ / "chromium-flows", "--dump-dom file://" + html.string());
  EXPECT_TRUE(Holds(dom, "<svg"));
  EXPECT_TRUE(Holds(dom, ">RR8</text>"));
  EXPECT_TRUE(Holds(dom, ">Y06601</text>"));
  EXPECT_TRUE(Holds(dom, ">3 disclosed, 0 refused</text>"));
  EXPECT_TRUE(Holds(dom, ">no agreement</text>"));
  EXPECT_TRUE(Holds(dom, ">nothing sent</text>"));
  // Printed, it is a PDF too.
  const fs::path pdf = dir_ / "flows.pdf";
  AuditRun printed = Report("pdf", {"flows", "--agreements", agreements_.string(), "--out", pdf.string()});
  ASSERT_EQ(printed.rc, 0) << printed.err;
  EXPECT_GE(PdfPages(pdf), 1);
  if (const char* keep = std::getenv("CB_KEEP_DOCUMENTS")) fs::copy_file(pdf, fs::path(keep) / "flows.pdf", fs::copy_options::overwrite_existing);
  EXPECT_TRUE(Holds(Sh("pdftotext " + pdf.string() + " -"), "Data flows"));

  AuditRun no_dot = AuditCli(*broker_, "ig-officer", {"--dot", "/nonexistent/dot", "--format", "html", "report", "flows",
                                                      "--agreements", agreements_.string()});
  EXPECT_EQ(no_dot.rc, 2);
  EXPECT_THAT(no_dot.err, HasSubstr("cannot run /nonexistent/dot"));
}

// ------------------------------------------------------- override review

class OverrideReviewTest : public GovernanceTest {
 protected:
  AuditRun Officer(const std::vector<std::string>& args) { return AuditCli(*broker_, "ig-officer", args); }

  // The override entry's index, as `overrides pending` lists it.
  std::string PendingIndex(const std::string& message_id) {
    AuditRun p = Officer({"--format", "json", "overrides", "pending"});
    EXPECT_EQ(p.rc, 0) << p.err;
    for (const auto& row : nlohmann::json::parse(p.out)) {
      if (row.at("message") == message_id) return row.at("index");
    }
    return "";
  }
};

TEST_F(OverrideReviewTest, AnOfficerReviewsEachOverrideAndTheReviewIsAnAuditEntryUnderTheirName) {
  const std::string id = SafeguardingOverride();
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care")).ok()) << "not an override";
  AuditRun p = Officer({"--format", "json", "overrides", "pending"});
  ASSERT_EQ(p.rc, 0) << p.err;
  auto rows = nlohmann::json::parse(p.out);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].at("message"), id);
  EXPECT_EQ(rows[0].at("overdue"), "no") << "due in five days";
  EXPECT_EQ(rows[0].at("justification"), "Section 42 enquiry: risk of serious harm");
  const std::string index = rows[0].at("index");
  // With no days to review in, it is overdue already.
  AuditRun late = Officer({"--format", "json", "overrides", "pending", "--review-days", "0", "--overdue-only"});
  ASSERT_EQ(late.rc, 0) << late.err;
  EXPECT_EQ(nlohmann::json::parse(late.out).size(), 1u);

  AuditRun r = Officer({"overrides", "review", index, "--outcome", "appropriate", "--note",
                        "Risk of serious harm confirmed by the safeguarding lead"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("reviewed the override at entry ", index, " (message ", id, "): appropriate")));
  AuditRun after = Officer({"--format", "json", "overrides", "pending"});
  ASSERT_EQ(after.rc, 0);
  EXPECT_EQ(nlohmann::json::parse(after.out).size(), 0u) << "reviewed: no longer pending";

  // The report shows the review; the log holds it under the officer's organisation.
  AuditRun report = Officer({"--format", "json", "report", "overrides"});
  ASSERT_EQ(report.rc, 0) << report.err;
  auto reported = nlohmann::json::parse(report.out);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0].at("review"), "appropriate");
  EXPECT_EQ(reported[0].at("reviewer"), "503");
  EXPECT_EQ(reported[0].at("review_note"), "Risk of serious harm confirmed by the safeguarding lead");
  AuditRun q = Officer({"--format", "json", "query", "--event", "override-reviewed"});
  ASSERT_EQ(q.rc, 0) << q.err;
  auto entries = nlohmann::json::parse(q.out);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].at("actor"), "503");
  EXPECT_EQ(entries[0].at("message"), id);
  EXPECT_EQ(entries[0].at("reasons"), "APPROPRIATE");
  // It carries the override's person: the subject access report shows the outcome.
  AuditRun person = Officer({"--format", "json", "query", "--nhs-number", kNhs, "--event", "override-reviewed"});
  ASSERT_EQ(person.rc, 0) << person.err;
  EXPECT_EQ(nlohmann::json::parse(person.out).size(), 1u);
  const fs::path html = dir_ / "sar.html";
  ASSERT_EQ(Officer({"--format", "html", "report", "sar", "--nhs-number", kNhs, "--out", html.string()}).rc, 0);
  auto page = ReadFileToString(html.string(), "report");
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(Holds(*page, "found appropriate by an IG officer at 503"));

  // A second review is recorded too, and the latest stands.
  ASSERT_EQ(Officer({"overrides", "review", index, "--outcome", "inappropriate", "--note", "Caldicott guardian: no"}).rc, 0);
  reported = nlohmann::json::parse(Officer({"--format", "json", "report", "overrides"}).out);
  EXPECT_EQ(reported[0].at("review"), "inappropriate");
  AuditRun v = Officer({"verify"});
  EXPECT_EQ(v.rc, 0) << v.err;
}

TEST_F(OverrideReviewTest, ReviewsAreRefusedUnlessByAnOfficerOfAnOverrideWithANote) {
  SafeguardingOverride();
  const std::string index = PendingIndex(
      nlohmann::json::parse(Officer({"--format", "json", "overrides", "pending"}).out)[0].at("message"));
  ASSERT_FALSE(index.empty());
  // Only IG officers review.
  AuditRun agency = AuditCli(*broker_, "RR8", {"overrides", "review", index, "--outcome", "appropriate", "--note", "x"});
  EXPECT_EQ(agency.rc, 1);
  EXPECT_THAT(agency.err, HasSubstr("PERMISSION_DENIED"));
  // Entry 0 is the agreements being loaded, not an override; far past the end, nothing.
  AuditRun not_override = Officer({"overrides", "review", "0", "--outcome", "appropriate", "--note", "x"});
  EXPECT_EQ(not_override.rc, 1);
  EXPECT_THAT(not_override.err, HasSubstr("OVERRIDE_NOT_FOUND"));
  AuditRun beyond = Officer({"overrides", "review", "99999", "--outcome", "appropriate", "--note", "x"});
  EXPECT_EQ(beyond.rc, 1);
  EXPECT_THAT(beyond.err, HasSubstr("OVERRIDE_NOT_FOUND"));
  AuditRun blank = Officer({"overrides", "review", index, "--outcome", "appropriate", "--note", "   "});
  EXPECT_EQ(blank.rc, 1);
  EXPECT_THAT(blank.err, HasSubstr("REVIEW_NOTE_INVALID"));
  AuditRun outcome = Officer({"overrides", "review", index, "--outcome", "fine", "--note", "x"});
  EXPECT_EQ(outcome.rc, 2);
  AuditRun offline = Officer({"--store", (dir_ / "data" / "carebroker.db").string(), "overrides", "review", index,
                              "--outcome", "appropriate", "--note", "x"});
  EXPECT_EQ(offline.rc, 2);
  EXPECT_THAT(offline.err, HasSubstr("a review is recorded by the broker"));
  // None of these was recorded: it is still pending.
  EXPECT_EQ(PendingIndex(nlohmann::json::parse(Officer({"--format", "json", "overrides", "pending"}).out)[0].at("message")),
            index);
  AuditRun q = Officer({"--format", "json", "query", "--event", "override-reviewed"});
  EXPECT_EQ(nlohmann::json::parse(q.out).size(), 0u);
}

// The broker's own count, on a clock the test moves: pending at once,
// overdue after governance.review_days (5), none once reviewed.
class OverdueReviewTest : public OverrideReviewTest {
 protected:
  const Clock& BrokerClock() override { return clock_; }

  // The gauge's value once it reads `want`, within 15 s; -1 if it never does.
  double GaugeBecomes(const std::string& name, double want) {
    double got = -1;
    for (int i = 0; i < 150; ++i) {
      std::smatch m;
      const std::string body = HttpCall(broker_->metrics_port(), "/metrics").body;
      if (std::regex_search(body, m, std::regex("\n" + name + " ([0-9.e+]+)"))) got = std::stod(m[1]);
      if (got == want) return got;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return got;
  }

  FakeClock clock_{absl::Now()};
};

TEST_F(OverdueReviewTest, OverdueReviewsAreAMetric) {
  EXPECT_EQ(GaugeBecomes("carebroker_override_reviews_pending", 0), 0);
  SafeguardingOverride();
  EXPECT_EQ(GaugeBecomes("carebroker_override_reviews_pending", 1), 1);
  EXPECT_EQ(GaugeBecomes("carebroker_override_reviews_overdue", 0), 0);
  clock_.Advance(absl::Hours(24 * 5) + absl::Minutes(1));
  EXPECT_EQ(GaugeBecomes("carebroker_override_reviews_overdue", 1), 1);
  const std::string index = PendingIndex(
      nlohmann::json::parse(Officer({"--format", "json", "overrides", "pending"}).out)[0].at("message"));
  ASSERT_EQ(Officer({"overrides", "review", index, "--outcome", "appropriate", "--note", "late, but justified"}).rc, 0);
  EXPECT_EQ(GaugeBecomes("carebroker_override_reviews_overdue", 0), 0);
  EXPECT_EQ(GaugeBecomes("carebroker_override_reviews_pending", 0), 0);
}

}  // namespace
}  // namespace carebroker::testing
