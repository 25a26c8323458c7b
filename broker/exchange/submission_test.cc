#include "broker/exchange/submission.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_replace.h"
#include "adapters/cld/cld.h"
#include "audit/log.h"
#include "broker/exchange/intake.h"
#include "adapters/common/csv.h"
#include "core/canonical.h"
#include "core/nhs_number.h"
#include "core/sha256.h"
#include "core/status.h"
#include "tests/testutil/testutil.h"

namespace carebroker {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string TestNhsNumber(int i) { return testing::SyntheticNhsNumber(i); }

constexpr char kHeader[] =
    "LA Code,Reporting Period Start Date,Reporting Period End Date,NHS Number,LA Person Unique Identifier,"
    "First Name,Last Name,Gender,Date of Birth,Postcode,Event Type,Event Reference,Event Start Date,"
    "Event Outcome,Service Type\r\n";

// Row i of a synthetic return: names with commas, quotes and line breaks,
// so rows break off inside quoted fields too.
std::string Row(int i, const std::string& nhs) {
  return absl::StrCat("503,2026-07-01,2026-09-30,", nhs, ",LAS-", i, ",Person", i, ",\"Tester, \"\"", i,
                      "\"\"\nline two\",", i % 2 ? "Female" : "Male", ",", absl::Dec(1 + i % 28, absl::kZeroPad2), "/03/1947,LN", 1 + i % 5,
                      " ", i % 9, "AB,Service,SRV-", i, ",2026-08-01,Continuation of support or services,",
                      "Long Term Support: Community\r\n");
}

class SubmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir("submission");
    for (const char* f : {"c", "k", "a"}) std::ofstream(dir_ / f) << "x";
    std::ofstream(dir_ / "sk") << "stand-in";
    std::ofstream(dir_ / "subj") << std::string(32, 's');
    std::ofstream(dir_ / "x26.key") << std::string(32, 'p');
    for (const char* f : {"sk", "subj", "x26.key"}) {
      std::filesystem::permissions(dir_ / f, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    }
    const std::string source = std::getenv("CB_SOURCE_DIR") != nullptr ? std::getenv("CB_SOURCE_DIR") : ".";
    // Rows of opted-out people are withheld where the opt-out applies; the
    // shipped agreement sends them (below).
    testing::CldAgreementWithOptOutApplying(dir_.string());
    shipped_dir_ = source + "/deploy/agreements";
    config_yaml_ = "listen: 127.0.0.1:1\ndata_dir: d\ntls: {cert: c, key: k, ca: a}\n"
                   "audit: {signing_key: sk, subject_key: subj}\npolicy: {agreements_dir: " +
                   (dir_ / "agreements").string() + ", pseudonym_keys: [{organisation: X26, file: x26.key}]}\n" +
                   "organisations:\n"
                   "  - {ods: \"503\", name: Lincolnshire, kind: local_authority}\n"
                   "  - {ods: X26, name: NHS England, kind: nhs_england, receives: cld}\n";
    auto c = ParseConfig(config_yaml_, "t.yaml", dir_.string(), {});
    ASSERT_TRUE(c.ok()) << c.status();
    config_ = *c;
    auto p = policy::PolicySet::Load((dir_ / "agreements").string());
    ASSERT_TRUE(p.ok()) << p.status();
    policy_ = *p;
    for (int i = 0; i < 12; ++i) {
      file_ += Row(i, i == 7 ? "" : TestNhsNumber(i));  // row 9 (i 7): an LA id only
    }
    file_ = kHeader + file_;
    v1::ConsentChange out;  // person 4 (row 6) has opted out
    out.set_nhs_number(TestNhsNumber(4));
    out.set_national_opt_out(true);
    ASSERT_TRUE(book_.Apply(out).ok());
  }

  v1::SubmissionProgress Start() const {
    v1::SubmissionProgress p;
    p.set_workflow("CLD_RETURN");
    p.set_purpose("planning");
    p.set_recipient("X26");
    return p;
  }
  SubmissionContext Context() const {
    return {*config_, *policy_, book_, entries_, OrgCode("503"), OrgCode("X26"), kId, now_};
  }

  // The file in chunks cut at `cuts`, minimised chunk by chunk; each row's
  // entry added to `entries` when given.
  absl::StatusOr<std::string> InChunks(const std::vector<size_t>& cuts, v1::SubmissionProgress* p,
                                       std::vector<v1::AuditEntry>* entries = nullptr) const {
    std::string out;
    size_t from = 0;
    for (size_t i = 0; i <= cuts.size(); ++i) {
      const size_t to = i < cuts.size() ? cuts[i] : file_.size();
      auto rows = MinimiseSubmissionChunk(Context(), absl::string_view(file_).substr(from, to - from),
                                          static_cast<uint32_t>(i + 1), i == cuts.size(), p);
      if (!rows.ok()) return rows.status();
      out += rows->rows;
      for (const AuditRecord& r : rows->row_audit) {
        v1::AuditEntry e;
        if (!e.ParseFromString(r.entry)) return absl::InternalError("an entry does not parse");
        if (e.subject() != r.subject) return absl::InternalError("the record's subject is not the entry's");
        if (entries != nullptr) entries->push_back(std::move(e));
      }
      from = to;
    }
    return out;
  }

  static inline const MessageId kId{"0123456789abcdef0123456789abcdef"};
  audit::EntryMaker entries_{std::string(32, 's')};
  std::filesystem::path dir_;
  std::string shipped_dir_;
  std::string config_yaml_;
  std::shared_ptr<const Config> config_;
  std::shared_ptr<const policy::PolicySet> policy_;
  policy::ConsentBook book_;
  absl::Time now_ = absl::FromCivil(absl::CivilSecond(2026, 11, 20, 10, 0, 0), absl::UTCTimeZone());
  std::string file_;
};

TEST_F(SubmissionTest, UnderTheShippedAgreementAnOptedOutPersonsRowIsSentBecauseTheReturnIsRequiredByLaw) {
  auto shipped = policy::PolicySet::Load(shipped_dir_);
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  v1::SubmissionProgress p = Start();
  const SubmissionContext c{*config_, **shipped, book_, entries_, OrgCode("503"), OrgCode("X26"), kId, now_};
  auto out = MinimiseSubmissionChunk(c, file_, 1, true, &p);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(p.released_rows(), 12u) << "person 4 too";
  EXPECT_TRUE(p.withheld_rows().empty());
  EXPECT_EQ(out->rows.find(TestNhsNumber(4)), std::string::npos) << "pseudonymised like every other row";
  EXPECT_NE(out->rows.find("SRV-4,"), std::string::npos) << "the opted-out person's row is in the return";
  ASSERT_EQ(out->row_audit.size(), 12u);
  EXPECT_EQ(out->row_audit[4].subject, entries_.Subject(TestNhsNumber(4)));
  v1::AuditEntry e;
  ASSERT_TRUE(e.ParseFromString(out->row_audit[4].entry));
  EXPECT_EQ(e.event(), v1::AUDIT_EVENT_ROW_RELEASED) << "their row went in the return, as their SAR says";
}

TEST_F(SubmissionTest, EachRowIsDecidedAndMinimisedAndAnOptedOutPersonsRowWithheld) {
  v1::SubmissionProgress p = Start();
  auto whole = InChunks({}, &p);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(p.rows(), 13u);
  EXPECT_EQ(p.released_rows(), 11u);
  EXPECT_EQ(p.withheld_rows().at("NATIONAL_OPT_OUT"), 1u);
  EXPECT_EQ(p.partial(), "");
  EXPECT_EQ(p.digest(), Sha256(file_)) << "a submission sent whole has the digest of the file";

  auto rows = adapters::ParseCsv(*whole);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 12u) << "the header and the rows released";
  EXPECT_EQ((*rows)[0], cld::Columns());
  auto column = [&](absl::string_view name) {
    return std::find(cld::Columns().begin(), cld::Columns().end(), name) - cld::Columns().begin();
  };
  for (size_t r = 1; r < rows->size(); ++r) {
    const adapters::CsvRow& row = (*rows)[r];
    EXPECT_EQ(row[column("LA Code")], "503");
    EXPECT_EQ(row[column("First Name")], "") << "names are not released";
    EXPECT_EQ(row[column("Last Name")], "");
    const std::string& nhs = row[column("NHS Number")];
    if (row[column("Event Reference")] == "SRV-7") {
      EXPECT_EQ(nhs, "") << "a person known by their LA id only";
    } else {
      EXPECT_GT(nhs.size(), 10u);
      EXPECT_FALSE(IsValidNhsNumber(nhs)) << "pseudonymised";
    }
    EXPECT_EQ(row[column("LA Person Unique Identifier")], "") << "not released";
    EXPECT_EQ(row[column("Date of Birth")].substr(0, 4), "1947");
    EXPECT_THAT(row[column("Date of Birth")], Not(HasSubstr("-03-"))) << "the year only";
    EXPECT_THAT(row[column("Postcode")], Not(HasSubstr(" "))) << "the district only";
    EXPECT_EQ(row[column("Service Type")], "Long Term Support: Community");
  }
  EXPECT_THAT(*whole, Not(HasSubstr(TestNhsNumber(1))));
  EXPECT_THAT(*whole, Not(HasSubstr("Tester")));
  EXPECT_THAT(*whole, Not(HasSubstr("SRV-4,"))) << "the opted-out person's row";
  EXPECT_THAT(p.withheld_fields(), ::testing::Contains("person.names"));

  const v1::AuditEntry patch = SubmissionAuditPatch(p);
  EXPECT_EQ(patch.detail(), "CLD submission: 12 rows, 11 released, 1 withheld (NATIONAL_OPT_OUT 1); CLD out");
  EXPECT_EQ(patch.payload_digest(), Sha256(file_));
  EXPECT_THAT(patch.withheld_fields(), ::testing::Contains("person.names"));
}

TEST_F(SubmissionTest, ChunksCutAnywhereGiveTheSameRowsAsTheWholeFile) {
  v1::SubmissionProgress whole_p = Start();
  auto whole = InChunks({}, &whole_p);
  ASSERT_TRUE(whole.ok()) << whole.status();
  // Every cut into two chunks: inside the header, a quoted field, a doubled
  // quote, between CR and LF.
  for (size_t cut = 1; cut < file_.size(); ++cut) {
    v1::SubmissionProgress p = Start();
    auto two = InChunks({cut}, &p);
    ASSERT_TRUE(two.ok()) << "cut at " << cut << ": " << two.status();
    ASSERT_EQ(*two, *whole) << "cut at " << cut;
    EXPECT_EQ(p.released_rows(), 11u);
  }
  // Three and more chunks, one of them holding no row end at all.
  v1::SubmissionProgress p = Start();
  auto many = InChunks({5, 6, 7, 400, 401, 900, 1500}, &p);
  ASSERT_TRUE(many.ok()) << many.status();
  EXPECT_EQ(*many, *whole);
  EXPECT_NE(p.digest(), Sha256(file_)) << "chained over the chunks";
  // d1 = H(c1), dn = H(d(n-1) || cn): the sender can recompute it.
  v1::SubmissionProgress q = Start();
  ASSERT_TRUE(InChunks({700}, &q).ok());
  EXPECT_EQ(q.digest(), Sha256(Sha256(file_.substr(0, 700)) + file_.substr(700)));
}

TEST_F(SubmissionTest, EveryRowIsAnEntryAboutItsPersonWhereverTheChunksAreCut) {
  v1::SubmissionProgress whole_p = Start();
  std::vector<v1::AuditEntry> whole;
  ASSERT_TRUE(InChunks({}, &whole_p, &whole).ok());
  ASSERT_EQ(whole.size(), 12u) << "one per row, none for the header";
  for (int i = 0; i < 12; ++i) {
    const v1::AuditEntry& e = whole[i];
    SCOPED_TRACE(i);
    EXPECT_EQ(e.detail(), absl::StrCat("CLD submission row ", i + 2)) << "counted as in errors, the header row 1";
    EXPECT_EQ(e.message_id(), kId.str());
    EXPECT_EQ(e.sender(), "503");
    EXPECT_EQ(e.actor(), "503");
    EXPECT_EQ(e.recipient(), "X26");
    EXPECT_EQ(e.workflow(), "CLD_RETURN");
    EXPECT_EQ(e.purpose(), "planning");
    EXPECT_EQ(e.agreement_id(), "DSA-ASC-CLD");
    EXPECT_FALSE(e.flow().empty());
    EXPECT_TRUE(e.has_legal_basis());
    EXPECT_EQ(e.at().seconds(), absl::ToUnixSeconds(now_));
    // The subject is the person's real NHS number's, not the pseudonym's.
    EXPECT_EQ(e.subject(), i == 7 ? "" : entries_.Subject(TestNhsNumber(i))) << "row 9 names no NHS number";
    EXPECT_EQ(e.SerializeAsString().find(TestNhsNumber(i)), std::string::npos) << "no NHS number in clear";
    if (i == 4) {
      EXPECT_EQ(e.event(), v1::AUDIT_EVENT_ROW_WITHHELD);
      EXPECT_THAT(e.reasons(), ::testing::ElementsAre("NATIONAL_OPT_OUT"));
      EXPECT_TRUE(e.released_fields().empty());
    } else {
      EXPECT_EQ(e.event(), v1::AUDIT_EVENT_ROW_RELEASED);
      EXPECT_TRUE(e.reasons().empty());
      // The row's own fields: row 9 has no NHS number to release.
      EXPECT_EQ(absl::c_linear_search(e.released_fields(), "person.nhs_number"), i != 7) << "as a pseudonym";
      EXPECT_THAT(e.released_fields(), Not(::testing::Contains("person.names")));
      EXPECT_THAT(e.withheld_fields(), ::testing::Contains("person.names"));
    }
  }
  // Cut anywhere, the same entries, each row once.
  for (size_t cut : {size_t{1}, size_t{200}, size_t{333}, file_.size() / 2, file_.size() - 3}) {
    v1::SubmissionProgress p = Start();
    std::vector<v1::AuditEntry> two;
    ASSERT_TRUE(InChunks({cut}, &p, &two).ok());
    ASSERT_EQ(two.size(), whole.size()) << "cut at " << cut;
    for (size_t i = 0; i < two.size(); ++i) EXPECT_EQ(Canonical(two[i]), Canonical(whole[i])) << "cut at " << cut;
  }
}

TEST_F(SubmissionTest, ABadRowRefusesItsChunkNamingRowAndColumnAndTheChunkMaySendAgain) {
  v1::SubmissionProgress p = Start();
  const std::string first = std::string(kHeader) + Row(0, TestNhsNumber(0)) + Row(1, TestNhsNumber(1));
  ASSERT_TRUE(MinimiseSubmissionChunk(Context(), first, 1, false, &p).ok());
  const v1::SubmissionProgress before = p;
  std::string bad = Row(2, TestNhsNumber(2));
  bad.replace(bad.find("2026-08-01"), 10, "2026-13-45");
  auto refused = MinimiseSubmissionChunk(Context(), bad, 2, true, &p);
  EXPECT_EQ(ReasonOf(refused.status()), "DATE_INVALID");
  EXPECT_THAT(refused.status().message(), HasSubstr("row 4, column Event Start Date"));
  EXPECT_THAT(refused.status().message(), Not(HasSubstr("2026-13-45"))) << "no value in an error";
  EXPECT_EQ(p.SerializeAsString(), before.SerializeAsString()) << "the progress is unchanged";
  auto again = MinimiseSubmissionChunk(Context(), Row(2, TestNhsNumber(2)), 2, true, &p);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(p.released_rows(), 3u);
  ASSERT_EQ(again->row_audit.size(), 1u) << "the row sent again is audited once, when it is taken";
  EXPECT_EQ(again->row_audit[0].subject, entries_.Subject(TestNhsNumber(2)));

  // An NHS number failing Modulus 11 (the flow takes only verified ones).
  v1::SubmissionProgress q = Start();
  std::string nhs = TestNhsNumber(0);
  nhs[9] = nhs[9] == '9' ? '0' : static_cast<char>(nhs[9] + 1);  // one check digit is right
  std::string wrong = std::string(kHeader) + Row(0, nhs);
  EXPECT_EQ(ReasonOf(MinimiseSubmissionChunk(Context(), wrong, 1, true, &q).status()), "NHS_NUMBER_INVALID");
}

TEST_F(SubmissionTest, NamedErrorsForAFileThatIsNotASubmission) {
  auto refuse = [&](const std::string& chunk, bool last) {
    v1::SubmissionProgress p = Start();
    return MinimiseSubmissionChunk(Context(), chunk, 1, last, &p).status();
  };
  EXPECT_EQ(ReasonOf(refuse("", true)), "CLD_INVALID") << "no header";
  EXPECT_EQ(ReasonOf(refuse("Name,Shoe Size\r\nx,9\r\n", true)), "CLD_INVALID") << "not CLD columns";
  EXPECT_EQ(ReasonOf(refuse(std::string(kHeader) + "503,\"never closed\r\n", true)), "CSV_INVALID");
  EXPECT_EQ(ReasonOf(refuse(std::string(kHeader) + std::string(kMaxSubmissionRowBytes + 1, 'x'), false)),
            "CLD_INVALID")
      << "a row longer than the limit is not carried";
  // A row stating another LA Code or period than the rows before.
  std::string other = Row(1, TestNhsNumber(1));
  other.replace(0, 14, "503,2026-04-01");
  EXPECT_EQ(ReasonOf(refuse(std::string(kHeader) + Row(0, TestNhsNumber(0)) + other, true)), "CLD_INVALID");
}

TEST_F(SubmissionTest, AdmitTakesAFileOfManyPeopleAsASubmissionForARecipientTakingCld) {
  audit::EntryMaker entries(std::string(32, 's'));
  v1::SendRequest req;
  req.set_recipient("X26");
  req.set_workflow("CLD_RETURN");
  req.set_purpose("planning");
  req.set_content_type("text/csv; profile=asc-cld-release-1");
  req.set_payload(file_);
  AuditRecord denial;
  auto admitted = Admit(*config_, *policy_, book_, entries, OrgCode("503"), req, now_, &denial);
  ASSERT_TRUE(admitted.ok()) << admitted.status();
  EXPECT_EQ(admitted->agreement_id, "DSA-ASC-CLD");
  EXPECT_EQ(admitted->message.subject, "") << "about no one person: no consent re-check at delivery";
  EXPECT_EQ(admitted->message.progress, "") << "sent whole: finished at once";
  EXPECT_EQ(admitted->message.audit.subject, "");
  v1::AuditEntry entry;
  ASSERT_TRUE(entry.ParseFromString(admitted->message.audit.entry));
  EXPECT_EQ(entry.detail(), "CLD submission: 12 rows, 11 released, 1 withheld (NATIONAL_OPT_OUT 1); CLD out");
  EXPECT_EQ(entry.payload_digest(), Sha256(file_));
  EXPECT_EQ(std::count(admitted->message.payload.begin(), admitted->message.payload.end(), '\n'), 12)
      << "the header and 11 rows, none with a line break inside (names are not released)";
  ASSERT_EQ(admitted->message.row_audit.size(), 12u) << "stored with the message";
  v1::AuditEntry row;
  ASSERT_TRUE(row.ParseFromString(admitted->message.row_audit[0].entry));
  EXPECT_EQ(row.message_id(), admitted->message.id.str());

  // The first of several chunks: the progress is kept for the next.
  req.set_payload(file_.substr(0, 1000));
  auto first = Admit(*config_, *policy_, book_, entries, OrgCode("503"), req, now_, &denial, 0, 3);
  ASSERT_TRUE(first.ok()) << first.status();
  v1::SubmissionProgress p;
  ASSERT_TRUE(p.ParseFromString(first->message.progress));
  EXPECT_EQ(p.recipient(), "X26");
  EXPECT_FALSE(p.partial().empty()) << "a row broke off at the chunk's end";

  v1::SendRequest routed = req;
  routed.clear_recipient();
  routed.set_route("council-of-residence");
  EXPECT_EQ(ReasonOf(Admit(*config_, *policy_, book_, entries, OrgCode("503"), routed, now_, &denial, 0, 3).status()),
            "ROUTE_NEEDS_RECORD");
  // A recipient that does not take CLD cannot take a submission.
  auto canonical = ParseConfig(absl::StrReplaceAll(config_yaml_, {{", receives: cld", ""}}), "t.yaml", dir_.string(), {});
  ASSERT_TRUE(canonical.ok()) << canonical.status();
  EXPECT_EQ(ReasonOf(Admit(**canonical, *policy_, book_, entries, OrgCode("503"), req, now_, &denial, 0, 3).status()),
            "FORMAT_UNSUPPORTED");
}

TEST_F(SubmissionTest, AFlowThatNoLongerAllowsRefusesTheChunkNotJustItsRows) {
  v1::SubmissionProgress p = Start();
  p.set_purpose("research");  // no flow of the CLD agreement
  auto refused = MinimiseSubmissionChunk(Context(), file_, 1, true, &p);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(refused.status()), "NO_AGREEMENT");
}

}  // namespace
}  // namespace carebroker
