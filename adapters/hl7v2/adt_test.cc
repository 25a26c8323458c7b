#include "adapters/hl7v2/adt.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/civil_time.h"
#include "adapters/common/testdata.h"
#include "core/status.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker::hl7 {
namespace {

using ::google::protobuf::util::TimeUtil;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Fixture(const std::string& name) { return adapters::Testdata("hl7v2/" + name); }

Adt Read(const std::string& name) {
  auto adt = ReadAdt(Fixture(name));
  EXPECT_TRUE(adt.ok()) << name << ": " << adt.status();
  if (!adt.ok()) std::abort();
  return *std::move(adt);
}

std::string Utc(const google::protobuf::Timestamp& t) { return TimeUtil::ToString(t); }

TEST(Adt, DischargeA03MapsPersonAndDischarge) {
  const Adt adt = Read("adt_a03.hl7");  // CRLF line ends
  EXPECT_EQ(adt.header.trigger, "A03");
  EXPECT_EQ(adt.header.sending_facility, "RR8");
  EXPECT_EQ(adt.header.receiving_facility, "503");
  EXPECT_EQ(adt.header.control_id, "RR8-A03-0001");
  const v1::Person& p = adt.record.person();
  EXPECT_EQ(p.nhs_number(), "9990000018");
  EXPECT_EQ(p.nhs_number_status(), v1::NHS_NUMBER_STATUS_PRESENT_VERIFIED);
  ASSERT_EQ(p.local_identifiers_size(), 1);
  EXPECT_EQ(p.local_identifiers(0).value(), "RR8123456");
  EXPECT_EQ(p.local_identifiers(0).assigner(), "RR8");
  EXPECT_EQ(p.local_identifiers(0).type(), "MR");
  ASSERT_EQ(p.names_size(), 2);
  EXPECT_EQ(p.names(0).family(), "TESTER");
  EXPECT_THAT(p.names(0).given(), testing::ElementsAre("ALICE", "MAY"));
  EXPECT_EQ(p.names(0).prefix(), "MRS");
  EXPECT_EQ(p.names(0).use(), "official");
  EXPECT_EQ(p.names(1).family(), "SMITH");
  EXPECT_EQ(p.names(1).use(), "maiden");
  EXPECT_EQ(p.birth_date().year(), 1947);
  EXPECT_EQ(p.birth_date().month(), 3);
  EXPECT_EQ(p.birth_date().day(), 1);
  EXPECT_EQ(p.sex(), v1::SEX_FEMALE);
  EXPECT_THAT(p.address().lines(), testing::ElementsAre("1 HIGH STREET", "FLAT 2"));
  EXPECT_EQ(p.address().city(), "LEEDS");
  EXPECT_EQ(p.address().district(), "WEST YORKSHIRE");
  EXPECT_EQ(p.address().postcode(), "LS1 4AP");
  EXPECT_EQ(p.gp_practice(), "Y06601");
  EXPECT_EQ(p.ethnicity(), "A");
  ASSERT_EQ(adt.record.events_size(), 1);
  const v1::CareEvent& e = adt.record.events(0);
  EXPECT_EQ(e.reference(), "RR8-A03-0001");
  EXPECT_EQ(e.action(), v1::EVENT_ACTION_UNSPECIFIED);
  EXPECT_EQ(Utc(e.occurred_at()), "2026-11-22T10:00:00Z") << "EVN-6, GMT in November";
  ASSERT_TRUE(e.has_discharge());
  EXPECT_EQ(e.discharge().discharge_method(), "1");
  EXPECT_EQ(e.discharge().discharge_destination(), "54");
  EXPECT_EQ(e.discharge().site(), "RR813");
  EXPECT_EQ(Utc(e.discharge().discharged_at()), "2026-11-22T10:00:00Z");
}

TEST(Adt, AdmissionA01MapsWardConsultantAndTimes) {
  const Adt adt = Read("adt_a01.hl7");
  const v1::Admission& a = adt.record.events(0).admission();
  EXPECT_EQ(a.patient_class(), "I");
  EXPECT_EQ(a.ward(), "WARD7");
  EXPECT_EQ(a.site(), "RR813");
  EXPECT_EQ(a.admission_method(), "21");
  EXPECT_EQ(a.consultant(), "C1234567");
  EXPECT_EQ(Utc(a.admitted_at()), "2026-11-15T09:00:00Z");
  EXPECT_EQ(Utc(a.expected_discharge_at()), "2026-11-25T00:00:00Z");
}

TEST(Adt, EveryEventMapsToItsDetailAndAction) {
  struct Case {
    const char* file;
    v1::CareEvent::DetailCase detail;
    v1::EventAction action;
  };
  const Case cases[] = {
      {"adt_a01.hl7", v1::CareEvent::kAdmission, v1::EVENT_ACTION_UNSPECIFIED},
      {"adt_a02.hl7", v1::CareEvent::kTransfer, v1::EVENT_ACTION_UNSPECIFIED},
      {"adt_a03.hl7", v1::CareEvent::kDischarge, v1::EVENT_ACTION_UNSPECIFIED},
      {"adt_a04.hl7", v1::CareEvent::kAdmission, v1::EVENT_ACTION_UNSPECIFIED},
      {"adt_a05.hl7", v1::CareEvent::kAdmission, v1::EVENT_ACTION_PLANNED},
      {"adt_a08.hl7", v1::CareEvent::kAdmission, v1::EVENT_ACTION_UPDATE},
      {"adt_a11.hl7", v1::CareEvent::kAdmission, v1::EVENT_ACTION_CANCEL},
      {"adt_a12.hl7", v1::CareEvent::kTransfer, v1::EVENT_ACTION_CANCEL},
      {"adt_a13.hl7", v1::CareEvent::kDischarge, v1::EVENT_ACTION_CANCEL},
      {"adt_a16.hl7", v1::CareEvent::kDischarge, v1::EVENT_ACTION_PLANNED},
      {"adt_a28.hl7", v1::CareEvent::kPersonChange, v1::EVENT_ACTION_UNSPECIFIED},
      {"adt_a31.hl7", v1::CareEvent::kPersonChange, v1::EVENT_ACTION_UNSPECIFIED},
      {"adt_a40.hl7", v1::CareEvent::kMerge, v1::EVENT_ACTION_UNSPECIFIED},
  };
  for (const Case& c : cases) {
    const Adt adt = Read(c.file);
    ASSERT_EQ(adt.record.events_size(), 1) << c.file;
    EXPECT_EQ(adt.record.events(0).detail_case(), c.detail) << c.file;
    EXPECT_EQ(adt.record.events(0).action(), c.action) << c.file;
    EXPECT_EQ(adt.record.person().nhs_number().size(), 10u) << c.file;
  }
  EXPECT_EQ(Read("adt_a04.hl7").record.events(0).admission().patient_class(), "O");
  EXPECT_TRUE(Read("adt_a28.hl7").record.events(0).person_change().created());
  EXPECT_FALSE(Read("adt_a31.hl7").record.events(0).person_change().created());
  EXPECT_EQ(Read("adt_a28.hl7").record.person().nhs_number_status(), v1::NHS_NUMBER_STATUS_PRESENT_NOT_TRACED);
  const v1::Transfer t = Read("adt_a02.hl7").record.events(0).transfer();  // LF line ends
  EXPECT_EQ(t.from_ward(), "WARD7");
  EXPECT_EQ(t.to_ward(), "WARD9");
  const v1::Admission pre = Read("adt_a05.hl7").record.events(0).admission();
  EXPECT_EQ(Utc(pre.admitted_at()), "2026-12-01T09:00:00Z") << "PV2-8 expected admission";
  const v1::Discharge pending = Read("adt_a16.hl7").record.events(0).discharge();
  EXPECT_EQ(Utc(pending.discharged_at()), "2026-11-22T10:00:00Z") << "PV2-9 expected discharge";
  EXPECT_EQ(pending.discharge_destination(), "54");
  const v1::Merge m = Read("adt_a40.hl7").record.events(0).merge();
  EXPECT_EQ(m.retired_nhs_number(), "9990000034");
  ASSERT_EQ(m.retired_identifiers_size(), 1);
  EXPECT_EQ(m.retired_identifiers(0).value(), "RR8999999");
}

TEST(Adt, EscapesAndCharacterSetsReadAsText) {
  const v1::Person p = Read("escapes.hl7").record.person();
  EXPECT_EQ(p.names(0).family(), "O|BRIEN^X");
  EXPECT_THAT(p.names(0).given(), testing::ElementsAre("ANNE&MARIE~JO"));
  EXPECT_EQ(p.names(0).prefix(), "DR");
  EXPECT_EQ(p.address().lines(0), "1\\2 PIPE | ROW\nREAR");
  EXPECT_EQ(Read("escapes.hl7").record.events(0).admission().ward(), "WARD A") << "highlighting dropped";
  EXPECT_EQ(Read("latin1.hl7").record.person().names(0).family(), "REN\xC3\xA9" "E");
  EXPECT_EQ(Read("latin1.hl7").record.person().names(0).given(0), "CL\xC3\x89MENT");
  EXPECT_EQ(Read("utf8.hl7").record.person().names(0).family(), "\xC5\xBBYCZLIWY");
}

TEST(Adt, TimesWithoutAnOffsetAreUkLocalTime) {
  std::string er7 = Fixture("adt_a01.hl7");
  er7 = absl::StrReplaceAll(er7, {{"20261115090000", "20260715090000"}});
  auto adt = ReadAdt(er7);
  ASSERT_TRUE(adt.ok()) << adt.status();
  EXPECT_EQ(Utc(adt->record.events(0).admission().admitted_at()), "2026-07-15T08:00:00Z") << "BST is UTC+1";
  er7 = absl::StrReplaceAll(er7, {{"20260715090000", "20260715090000-0500"}});
  adt = ReadAdt(er7);
  ASSERT_TRUE(adt.ok()) << adt.status();
  EXPECT_EQ(Utc(adt->record.events(0).admission().admitted_at()), "2026-07-15T14:00:00Z") << "explicit offset";
}

TEST(Adt, AFailingNhsNumberIsRefusedNamingTheField) {
  auto adt = ReadAdt(Fixture("bad_nhs_number.hl7"));
  ASSERT_FALSE(adt.ok());
  EXPECT_EQ(adt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(adt.status()), "NHS_NUMBER_INVALID");
  EXPECT_THAT(adt.status().message(), HasSubstr("PID-3 repetition 1"));
  EXPECT_THAT(adt.status().message(), Not(HasSubstr("9990000019")));
  EXPECT_THAT(adt.status().message(), Not(HasSubstr("TESTER")));
}

TEST(Adt, BadMessagesGetPreciseErrors) {
  const std::string a01 = Fixture("adt_a01.hl7");
  struct Case {
    std::string er7;
    const char* reason;
    const char* says;
  };
  const Case cases[] = {
      {absl::StrReplaceAll(a01, {{"ADT^A01^ADT_A01", "ORU^R01^ORU_R01"}}), "HL7_UNSUPPORTED", "MSH-9"},
      {absl::StrReplaceAll(a01, {{"ADT^A01^ADT_A01", "ADT^A99^ADT_A01"}}), "HL7_EVENT_UNSUPPORTED", "A99"},
      {absl::StrReplaceAll(a01, {{"|RR8-A01-0001|", "||"}}), "HL7_REQUIRED_MISSING", "MSH-10"},
      {absl::StrReplaceAll(a01, {{"\rPID|", "\rZZZ|"}}), "HL7_REQUIRED_MISSING", "PID: the segment is required"},
      {absl::StrReplaceAll(a01, {{"\rPV1|", "\rZV1|"}}), "HL7_REQUIRED_MISSING", "PV1"},
      {absl::StrReplaceAll(a01, {{"|19470301|", "|19471301|"}}), "HL7_INVALID", "PID-7"},
      {absl::StrReplaceAll(a01, {{"|19470301|", "|19470301x|"}}), "HL7_INVALID", "a time of day HHMM[SS]"},
      {absl::StrReplaceAll(a01, {{"|20261115090000", "|2026111509000X"}}), "HL7_INVALID", "PV1-44"},
      {absl::StrReplaceAll(a01, {{"|19470301|2|", "|19470301|Q|"}}), "HL7_INVALID", "PID-8"},
      {absl::StrReplaceAll(a01, {{"9990000018^^^NHS^NH~", "9990000018^^^NHS^NH~9990000026^^^NHS^NH~"}}),
       "HL7_INVALID", "second NHS number"},
      {absl::StrReplaceAll(Fixture("adt_a40.hl7"), {{"\rMRG|", "\rZRG|"}}), "HL7_INVALID", "MRG-1"},
  };
  for (const Case& c : cases) {
    auto adt = ReadAdt(c.er7);
    ASSERT_FALSE(adt.ok()) << c.says;
    EXPECT_EQ(ReasonOf(adt.status()), c.reason) << adt.status();
    EXPECT_THAT(adt.status().message(), HasSubstr(c.says));
    EXPECT_THAT(adt.status().message(), Not(HasSubstr("TESTER")));
  }
}

TEST(Adt, EveryFixtureRoundTripsThroughWriteAdt) {
  for (const char* file : {"adt_a01.hl7", "adt_a02.hl7", "adt_a03.hl7", "adt_a04.hl7", "adt_a05.hl7", "adt_a08.hl7",
                           "adt_a11.hl7", "adt_a12.hl7", "adt_a13.hl7", "adt_a16.hl7", "adt_a28.hl7", "adt_a31.hl7",
                           "adt_a40.hl7", "escapes.hl7", "latin1.hl7", "utf8.hl7"}) {
    const Adt first = Read(file);
    auto er7 = WriteAdt(first.record, first.header);
    ASSERT_TRUE(er7.ok()) << file << ": " << er7.status();
    auto again = ReadAdt(*er7);
    ASSERT_TRUE(again.ok()) << file << ": " << again.status();
    EXPECT_EQ(again->header.trigger, first.header.trigger) << file;
    std::string diff;
    google::protobuf::util::MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    EXPECT_TRUE(d.Compare(first.record, again->record)) << file << ": " << diff;
  }
}

TEST(Adt, WriteRefusesWhatAdtCannotCarry) {
  v1::CareRecord r;
  r.mutable_person()->set_nhs_number("9990000018");
  r.add_events()->mutable_care_package()->set_service_type("Long Term Support: Community");
  EXPECT_EQ(ReasonOf(WriteAdt(r, {}).status()), "HL7_UNSUPPORTED");
  r.mutable_events(0)->mutable_discharge();
  r.add_events()->mutable_discharge();
  auto two = WriteAdt(r, {});
  EXPECT_EQ(ReasonOf(two.status()), "HL7_UNSUPPORTED");
  EXPECT_THAT(two.status().message(), HasSubstr("one event"));
}

TEST(Adt, AcceptAckEchoesTheControlIdAndSwapsParties) {
  const absl::Time now = absl::FromCivil(absl::CivilSecond(2026, 11, 22, 10, 16, 0), absl::UTCTimeZone());
  const std::string ack = MakeAck(Fixture("adt_a03.hl7"), AckCode::kAccept, {}, now, "CB-1");
  auto m = Message::Parse(ack);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->msh().Get(3), "CAREBROKER");
  EXPECT_EQ(m->msh().Get(4), "503");
  EXPECT_EQ(m->msh().Get(5), "PAS");
  EXPECT_EQ(m->msh().Get(6), "RR8");
  EXPECT_EQ(m->msh().Get(9, 1), "ACK");
  EXPECT_EQ(m->msh().Get(9, 2), "A03");
  EXPECT_EQ(m->msh().Get(10), "CB-1");
  const Segment* msa = m->Find("MSA");
  ASSERT_NE(msa, nullptr);
  EXPECT_EQ(msa->Get(1), "AA");
  EXPECT_EQ(msa->Get(2), "RR8-A03-0001");
  EXPECT_EQ(m->Find("ERR"), nullptr);
}

TEST(Adt, ErrorAckCarriesTheReasonInMsaAndErr) {
  auto refused = ReadAdt(Fixture("bad_nhs_number.hl7"));
  ASSERT_FALSE(refused.ok());
  const AckError err = AckErrorFor(refused.status());
  EXPECT_EQ(err.code, "102");
  const std::string ack = MakeAck(Fixture("bad_nhs_number.hl7"), AckCode::kError, err, absl::Now(), "CB-2");
  auto m = Message::Parse(ack);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Find("MSA")->Get(1), "AE");
  EXPECT_EQ(m->Find("MSA")->Get(2), "RR8-A01-0001");
  EXPECT_THAT(m->Find("MSA")->Get(3), HasSubstr("Modulus 11"));
  const Segment* e = m->Find("ERR");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->Get(1, 4, 1), "102");
  EXPECT_EQ(e->Get(1, 4, 3), "HL70357");
  EXPECT_EQ(e->Get(3, 1), "102");
  EXPECT_EQ(e->Get(4), "E");
}

TEST(Adt, ABrokenMessageStillGetsAnAckWithItsControlId) {
  // MSH-18 names an unknown character set, so the message does not parse.
  const std::string broken = "MSH|^~\\&|PAS|RR8|CB|503|20261122||ADT^A01|CTRL-9|P|2.4|||||GBR|EBCDIC\rPID|||x\r";
  ASSERT_FALSE(Message::Parse(broken).ok());
  const std::string ack = MakeAck(broken, AckCode::kReject, {"200", "unsupported"}, absl::Now(), "CB-3");
  auto m = Message::Parse(ack);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Find("MSA")->Get(1), "AR");
  EXPECT_EQ(m->Find("MSA")->Get(2), "CTRL-9");
  EXPECT_EQ(m->msh().Get(6), "RR8");
  // Not even an MSH: an answer all the same, with an empty MSA-2.
  auto none = Message::Parse(MakeAck("garbage", AckCode::kReject, {"100", "no MSH"}, absl::Now(), "CB-4"));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->Find("MSA")->Get(2), "");
}

// Table 0357 codes follow the reason alone: the text may say anything.
TEST(Adt, AckErrorCodeIsChosenByTheReasonNotTheText) {
  const struct {
    const char* reason;
    const char* code;
  } cases[] = {{"HL7_EVENT_UNSUPPORTED", "201"}, {"HL7_UNSUPPORTED", "200"}, {"HL7_REQUIRED_MISSING", "101"},
               {"HL7_INVALID", "102"},           {"NHS_NUMBER_INVALID", "102"}, {"DATE_INVALID", "102"},
               {"NO_AGREEMENT", "207"},          {"", "207"}};
  for (const auto& c : cases) {
    // A text that names other conditions must not sway the code.
    const absl::Status s = InvalidArgument(c.reason, "an event field is required");
    const AckError e = AckErrorFor(s);
    EXPECT_EQ(e.code, c.code) << c.reason;
    EXPECT_EQ(e.text, "an event field is required");
  }
  EXPECT_EQ(AckErrorFor(ReadAdt(absl::StrReplaceAll(Fixture("adt_a01.hl7"), {{"ADT^A01^ADT_A01", "ADT^A99^ADT_A01"}}))
                            .status())
                .code,
            "201");
  EXPECT_EQ(AckErrorFor(ReadAdt(absl::StrReplaceAll(Fixture("adt_a01.hl7"), {{"\rPID|", "\rZZZ|"}})).status()).code,
            "101");
}

}  // namespace
}  // namespace carebroker::hl7
