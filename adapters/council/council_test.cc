#include "adapters/council/council_json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "adapters/common/testdata.h"
#include "adapters/hl7v2/adt.h"
#include "core/status.h"
#include "google/protobuf/util/message_differencer.h"

namespace carebroker::council {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

using adapters::Testdata;

void ExpectSame(const v1::CareRecord& want, const v1::CareRecord& got) {
  std::string diff;
  google::protobuf::util::MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  EXPECT_TRUE(d.Compare(want, got)) << diff;
}

// Every kind of event a council sends or receives, on one person.
v1::CareRecord EveryEvent() {
  auto a03 = hl7::ReadAdt(Testdata("hl7v2/adt_a03.hl7"));
  EXPECT_TRUE(a03.ok()) << a03.status();
  v1::CareRecord r = a03->record;
  r.mutable_person()->mutable_social_care()->set_client_type("Service User");
  r.mutable_person()->mutable_social_care()->add_linked_person_ids("LAS-9");
  v1::CareEvent* e = r.add_events();
  e->set_reference("REQ-1");
  e->mutable_referral()->set_route_of_access("Discharge from hospital");
  e->mutable_referral()->mutable_received_date()->set_year(2026);
  e = r.add_events();
  e->set_action(v1::EVENT_ACTION_UPDATE);
  e->mutable_assessment()->set_eligible_needs_identified(true);
  e->mutable_assessment()->mutable_start_date()->set_year(2026);
  e->mutable_assessment()->mutable_start_date()->set_month(11);
  e = r.add_events();
  e->mutable_care_package()->set_planned_units_per_week(10.5);
  e = r.add_events();
  e->mutable_review()->set_outcomes_achieved("Fully achieved");
  e = r.add_events();
  e->mutable_safeguarding_concern()->set_category("Neglect and acts of omission");
  e = r.add_events();
  e->mutable_merge()->set_retired_nhs_number("9990000034");
  e = r.add_events();
  e->mutable_person_change()->set_created(true);
  return r;
}

TEST(CouncilJson, EveryEventKindRoundTrips) {
  const v1::CareRecord r = EveryEvent();
  auto back = ReadCouncilJson(WriteCouncilJson(r));
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSame(r, *back);
}

TEST(CouncilJson, WritesCamelCaseIsoDatesAndWords) {
  const Json j = Json::parse(WriteCouncilJson(EveryEvent()));
  EXPECT_EQ(j["schemaVersion"], 1);
  EXPECT_EQ(j["person"]["nhsNumber"], "9990000018");
  EXPECT_EQ(j["person"]["nhsNumberStatus"], "01");
  EXPECT_EQ(j["person"]["sex"], "female");
  EXPECT_EQ(j["person"]["birthDate"], "1947-03-01");
  EXPECT_EQ(j["person"]["address"]["postcode"], "LS1 4AP");
  EXPECT_EQ(j["events"][0]["discharge"]["dischargeDestination"], "54");
  EXPECT_EQ(j["events"][0]["occurredAt"], "2026-11-22T10:00:00Z");
  EXPECT_EQ(j["events"][1]["referral"]["receivedDate"], "2026");
  EXPECT_EQ(j["events"][2]["action"], "update");
  EXPECT_EQ(j["events"][2]["assessment"]["startDate"], "2026-11");
}

TEST(CouncilJson, ReadsTheDocumentedExample) {
  auto r = ReadCouncilJson(Testdata("council/care_package.json"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->person().local_identifiers(0).value(), "LAS-100234");
  EXPECT_EQ(r->person().social_care().primary_support_reason(), "Physical Support: Personal care support");
  ASSERT_TRUE(r->events(0).has_care_package());
  EXPECT_EQ(r->events(0).care_package().planned_units_per_week(), 14);
  EXPECT_EQ(r->events(0).care_package().start_date().day(), 23);
  EXPECT_EQ(r->events(0).outcome(), "Continuation of support or services");
}

TEST(CouncilJson, TimesWithAndWithoutZonesAndSeconds) {
  const struct {
    const char* at;
    const char* utc;
  } cases[] = {
      {"2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z"},
      {"2026-11-22T10:00+01:00", "2026-11-22T09:00:00Z"},
      {"2026-07-01T10:00:00", "2026-07-01T09:00:00Z"},  // no zone: UK local time (BST)
      {"2026-07-01T10:00:00.250-05:00", "2026-07-01T15:00:00.25Z"},
      {"2026-07-01", "2026-06-30T23:00:00Z"},  // a date: midnight UK time
  };
  for (const auto& c : cases) {
    auto r = ReadCouncilJson(absl::StrCat(R"({"events":[{"occurredAt":")", c.at, R"("}]})"));
    ASSERT_TRUE(r.ok()) << c.at << ": " << r.status();
    EXPECT_EQ(Json::parse(WriteCouncilJson(*r))["events"][0]["occurredAt"], c.utc) << c.at;
  }
}

TEST(CouncilJson, BadDocumentsGetPreciseErrors) {
  const struct {
    const char* json;
    const char* reason;
    const char* says;
  } cases[] = {
      {"{", "COUNCIL_JSON_INVALID", "not well-formed JSON"},
      {"[]", "COUNCIL_JSON_INVALID", "$: expected an object"},
      {R"({"person":{}} x)", "COUNCIL_JSON_INVALID", "not well-formed JSON"},
      {R"({"person":[]})", "COUNCIL_JSON_INVALID", "person: expected an object"},
      {R"({"person":{"names":[{"family":"A"}],"names":[]}})", "COUNCIL_JSON_INVALID",
       "person.names: a key given twice"},
      {R"({"person":{"names":[null]}})", "COUNCIL_JSON_INVALID", "person.names[0]: expected an object"},
      {R"({"person":{"names":[{"given":["A",["B"]]}]}})", "COUNCIL_JSON_INVALID",
       "person.names[0].given[1]: expected a string"},
      {R"({"events":[{},{"occurredAt":7}]})", "COUNCIL_JSON_INVALID",
       "events[1].occurredAt: expected a date-time"},
      {R"({"schemaVersion":{}})", "COUNCIL_JSON_INVALID", "schemaVersion"},
      {R"({"schemaVersion":2})", "COUNCIL_JSON_INVALID", "schemaVersion"},
      {R"({"persn":{}})", "COUNCIL_JSON_INVALID", "unknown key \"persn\""},
      {R"({"person":{"surname":"X"}})", "COUNCIL_JSON_INVALID", "person: unknown key"},
      {R"({"person":{"birthDate":"01/03/1947"}})", "DATE_INVALID", "person.birthDate"},
      {R"({"person":{"sex":"F"}})", "COUNCIL_JSON_INVALID", "person.sex: expected one of male, female, not-known"},
      {R"({"person":{"names":{"family":"X"}}})", "COUNCIL_JSON_INVALID", "person.names: expected an array"},
      {R"({"person":{"nhsNumber":"9990000019"}})", "NHS_NUMBER_INVALID", "person.nhsNumber"},
      {R"({"events":[{"review":{},"referral":{}}]})", "COUNCIL_JSON_INVALID", "one kind"},
      {R"({"events":[{"carePackage":{"plannedUnitsPerWeek":"ten"}}]})", "COUNCIL_JSON_INVALID",
       "events[0].carePackage.plannedUnitsPerWeek: expected a number"},
      {R"({"events":[{"occurredAt":"2026-11-22 10:00"}]})", "DATE_INVALID", "events[0].occurredAt"},
      {R"({"events":[{"merge":{"retiredNhsNumber":"9990000019"}}]})", "NHS_NUMBER_INVALID",
       "events[0].merge.retiredNhsNumber"},
  };
  for (const auto& c : cases) {
    auto r = ReadCouncilJson(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(ReasonOf(r.status()), c.reason) << c.json << ": " << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(c.says)) << c.json;
    EXPECT_THAT(r.status().message(), Not(HasSubstr("9990000019")));
  }
}

}  // namespace
}  // namespace carebroker::council
