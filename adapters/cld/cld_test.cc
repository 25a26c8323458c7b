#include "adapters/cld/cld.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "adapters/common/csv.h"
#include "core/status.h"
#include "google/protobuf/util/message_differencer.h"

namespace carebroker::cld {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::CareRecord Person(const std::string& nhs, const std::string& la_id) {
  v1::CareRecord r;
  v1::Person* p = r.mutable_person();
  if (!nhs.empty()) p->set_nhs_number(nhs);
  v1::LocalIdentifier* id = p->add_local_identifiers();
  id->set_value(la_id);
  id->set_type("LA");
  id->set_assigner("503");
  v1::PersonName* n = p->add_names();
  n->add_given("Alice");
  n->set_family("O'Tester, \"Jr\"\nsecond line");  // quotes, a comma and a newline
  p->set_sex(v1::SEX_FEMALE);
  p->mutable_birth_date()->set_year(1947);
  p->mutable_birth_date()->set_month(3);
  p->mutable_birth_date()->set_day(1);
  p->mutable_address()->set_postcode("LN1 1AA");
  p->set_gp_practice("Y06601");
  p->set_ethnicity("White: English, Welsh, Scottish, Northern Irish or British");
  v1::SocialCareProfile* s = p->mutable_social_care();
  s->set_client_type("Service User");
  s->set_primary_support_reason("Physical Support: Personal care support");
  s->set_dementia("No");
  s->add_linked_person_ids("LAS-7");
  return r;
}

Submission Sample() {
  Submission s{"503", "2026-07-01", "2026-09-30", {}};
  v1::CareRecord a = Person("9990000018", "LAS-1");
  v1::CareEvent* e = a.add_events();
  e->set_reference("REQ-1");
  e->set_outcome("Progress to assessment, review or reassessment");
  e->mutable_referral()->set_route_of_access("Discharge from hospital");
  e->mutable_referral()->mutable_received_date()->set_year(2026);
  e->mutable_referral()->mutable_received_date()->set_month(7);
  e->mutable_referral()->mutable_received_date()->set_day(2);
  e = a.add_events();
  e->set_reference("ASM-1");
  e->mutable_assessment()->set_assessment_type("Long Term Assessment");
  e->mutable_assessment()->set_eligible_needs_identified(true);
  e->mutable_assessment()->set_method("Face to face");
  e = a.add_events();
  e->set_reference("SRV-1");
  v1::CarePackage* c = e->mutable_care_package();
  c->set_service_type("Long Term Support: Community");
  c->set_delivery_mechanism("CASSR Commissioned Support");
  c->set_planned_units_per_week(14);
  c->set_unit_cost(24.5);
  c->set_cost_frequency("Hourly");
  c->mutable_start_date()->set_year(2026);
  c->mutable_start_date()->set_month(8);
  c->mutable_start_date()->set_day(1);
  v1::CareRecord b = Person("", "LAS-2");
  e = b.add_events();
  e->set_reference("REV-1");
  e->mutable_review()->set_review_reason("Planned");
  e->mutable_review()->set_outcomes_achieved("Fully achieved");
  s.people = {a, b};
  return s;
}

TEST(Cld, ASubmissionRoundTripsPersonByPerson) {
  const Submission s = Sample();
  auto csv = WriteCld(s);
  ASSERT_TRUE(csv.ok()) << csv.status();
  auto back = ReadCld(*csv);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->la_code, "503");
  EXPECT_EQ(back->period_start, "2026-07-01");
  EXPECT_EQ(back->period_end, "2026-09-30");
  ASSERT_EQ(back->people.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    std::string diff;
    google::protobuf::util::MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    EXPECT_TRUE(d.Compare(s.people[i], back->people[i])) << diff;
  }
}

TEST(Cld, HeaderCarriesTheReleaseOneNames) {
  auto rows = adapters::ParseCsv(*WriteCld(Sample()));
  ASSERT_TRUE(rows.ok());
  const auto& h = rows->front();
  for (const char* name : {"LA Code", "NHS Number", "LA Person Unique Identifier", "Date of Birth", "Event Type",
                           "Event Reference", "Event Start Date", "Request: Route of Access", "Eligible Needs Identified",
                           "Service Type", "Provider CQC Location ID", "Review Outcomes Achieved",
                           "Cost Frequency (Unit Type)", "Planned units per week", "Autism Spectrum Disorder (ASD)",
                           "Adult 3 Linked Person_ID"}) {
    EXPECT_NE(std::find(h.begin(), h.end(), name), h.end()) << name;
  }
  EXPECT_EQ(rows->size(), 5u) << "header and one row per event";
  EXPECT_EQ((*rows)[1][std::find(h.begin(), h.end(), "Event Type") - h.begin()], "Request");
}

TEST(Cld, ColumnsInAnyOrderAnyCaseAndUkDates) {
  const std::string csv =
      "event type , Event Start Date,nhs number,LA CODE,Service Type\n"
      "Service,01/08/2026,999 000 0018,503,\"Long Term Support: Nursing Care\"\n"
      "Service,2026-09-01,9990000018,503,Short Term Support: ST-Max\n";
  auto s = ReadCld(csv);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->people.size(), 1u);
  const v1::CareRecord& r = s->people[0];
  EXPECT_EQ(r.person().nhs_number(), "9990000018");
  ASSERT_EQ(r.events_size(), 2);
  EXPECT_EQ(r.events(0).care_package().start_date().month(), 8);
  EXPECT_EQ(r.events(1).care_package().service_type(), "Short Term Support: ST-Max");
}

TEST(Cld, BadFilesGetErrorsNamingRowAndColumn) {
  const std::string head = "Event Type,NHS Number,Event Start Date,Assessment Type\n";
  const struct {
    std::string csv;
    const char* reason;
    const char* says;
  } cases[] = {
      {"", "CLD_INVALID", "no header"},
      {"NHS Number,Favourite Colour\n", "CLD_INVALID", "\"Favourite Colour\" is not a CLD Release 1 column"},
      {"NHS Number\n9990000018\n", "CLD_INVALID", "Event Type column is required"},
      {"Event Type\nService\n", "CLD_INVALID", "NHS Number or LA Person Unique Identifier is required"},
      {head + "Visit,9990000018,,\n", "CLD_INVALID", "row 2, column Event Type"},
      {head + "Service,9990000019,,\n", "NHS_NUMBER_INVALID", "row 2, column NHS Number"},
      {head + "Service,9990000018,2026-13-01,\n", "DATE_INVALID", "row 2, column Event Start Date"},
      {head + "Service,9990000018,,Long Term\n", "CLD_INVALID", "row 2, column Assessment Type: not applicable"},
      {head + "Service,9990000018\n", "CLD_INVALID", "row 2: has 2 fields"},
      {head + "Service,,,\n", "CLD_INVALID", "row 2: neither"},
      {head + "Service,\"9990000018,,\n", "CSV_INVALID", "line 2: a quoted field is not closed"},
      {head + "Serv\"ice,9990000018,,\n", "CSV_INVALID", "line 2: a quote inside an unquoted field"},
  };
  for (const auto& c : cases) {
    auto s = ReadCld(c.csv);
    ASSERT_FALSE(s.ok()) << c.csv;
    EXPECT_EQ(ReasonOf(s.status()), c.reason) << c.csv << ": " << s.status();
    EXPECT_THAT(s.status().message(), HasSubstr(c.says)) << c.csv;
    EXPECT_THAT(s.status().message(), Not(HasSubstr("9990000019")));
  }
}

TEST(Cld, HospitalEventsHaveNoRow) {
  Submission s = Sample();
  s.people[0].add_events()->mutable_discharge()->set_discharge_destination("19");
  auto csv = WriteCld(s);
  ASSERT_FALSE(csv.ok());
  EXPECT_EQ(ReasonOf(csv.status()), "CLD_UNSUPPORTED");
}

TEST(Csv, QuotedFieldsKeepCommasQuotesAndNewlines) {
  std::string out;
  const adapters::CsvRow row{"plain", "a,b", "say \"hi\"", "two\r\nlines", ""};
  adapters::AppendCsvRow(row, &out);
  adapters::AppendCsvRow({"x"}, &out);
  auto rows = adapters::ParseCsv(out);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0], row);
  auto lf = adapters::ParseCsv("a,b\n\nc,\"d\"\n");
  ASSERT_TRUE(lf.ok());
  ASSERT_EQ(lf->size(), 2u) << "blank lines skipped";
  EXPECT_EQ((*lf)[1][1], "d");
}

TEST(Csv, DoubledQuotesLineCountsLimitsAndStops) {
  auto rows = adapters::ParseCsv("\"\"\"a\"\"\",\"b\"\"\",\"\",\"x\ny\"\r\nlast,row");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u) << "a last row needs no line end";
  EXPECT_EQ((*rows)[0], (adapters::CsvRow{"\"a\"", "b\"", "", "x\ny"}));
  EXPECT_EQ((*rows)[1], (adapters::CsvRow{"last", "row"}));

  const struct {
    const char* csv;
    adapters::CsvLimits limits;
    const char* says;
  } cases[] = {
      {"a,\"two\nlines\"\nb,\"c\"d\n", {}, "line 3: text after a closing quote"},
      {"a\n\"open\nstill open\n", {}, "line 2: a quoted field is not closed"},
      {"a,b,c\n", {.max_fields = 2}, "line 1: more than 2 fields"},
      {"a\nb\nc\n", {.max_rows = 2}, "line 3: more than 2 rows"},
      {"abcdef", {.max_bytes = 3}, "exceeds 3 bytes"},
  };
  for (const auto& c : cases) {
    auto r = adapters::ParseCsv(c.csv, c.limits);
    ASSERT_FALSE(r.ok()) << c.csv;
    EXPECT_EQ(ReasonOf(r.status()), "CSV_INVALID");
    EXPECT_THAT(r.status().message(), HasSubstr(c.says)) << c.csv;
  }

  int seen = 0;
  const absl::Status stopped = adapters::ForEachCsvRow("a\nb\nc\n", {}, [&](const adapters::CsvRowView& row) {
    return ++seen == 2 ? absl::CancelledError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(stopped.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(seen, 2) << "the first error stops the reading";
}

}  // namespace
}  // namespace carebroker::cld
