#include "adapters/formats.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/time/civil_time.h"
#include "adapters/common/testdata.h"
#include "core/status.h"
#include "google/protobuf/util/message_differencer.h"

namespace carebroker::adapters {
namespace {

using ::testing::HasSubstr;


TEST(Formats, NamesAndContentTypesFindEachOther) {
  for (const FormatInfo& i : Formats()) {
    EXPECT_EQ(*FormatByName(i.name), i.format);
    EXPECT_EQ(*FormatByContentType(i.content_type), i.format);
  }
  EXPECT_EQ(*FormatByContentType("application/fhir+json; fhirVersion=4.0"), Format::kFhir);
  EXPECT_EQ(*FormatByContentType("application/fhir+xml; fhirVersion=4.0"), Format::kFhir) << "read, answered in JSON";
  EXPECT_EQ(*FormatByContentType("Application/HL7-v2; charset=utf-8"), Format::kHl7v2);
  EXPECT_EQ(FormatByContentType("application/pdf").status().code(), absl::StatusCode::kNotFound);
  auto bad = FormatByName("xml");
  EXPECT_EQ(ReasonOf(bad.status()), "FORMAT_UNKNOWN");
  EXPECT_THAT(bad.status().message(), HasSubstr("council-json"));
}

// A discharge from a hospital read once and written in each format that
// carries it reads back as the same record.
TEST(Formats, ADischargeCrossesEveryFormatThatCarriesIt) {
  auto record = Parse(Format::kHl7v2, Testdata("hl7v2/adt_a03.hl7"));
  ASSERT_TRUE(record.ok()) << record.status();
  const Envelope env{"0123456789abcdef0123456789abcdef", "RR8", "503", absl::FromUnixSeconds(1'795'000'000)};
  for (Format f : {Format::kCanonical, Format::kCanonicalJson, Format::kHl7v2, Format::kCouncilJson}) {
    auto bytes = Render(f, *record, env);
    ASSERT_TRUE(bytes.ok()) << InfoOf(f).name << ": " << bytes.status();
    auto back = Parse(f, *bytes);
    ASSERT_TRUE(back.ok()) << InfoOf(f).name << ": " << back.status();
    if (f == Format::kHl7v2) {
      // MSH-10 is the broker's message id, so the hospital can acknowledge it.
      EXPECT_EQ(back->events(0).reference(), env.message_id);
      back->mutable_events(0)->set_reference(record->events(0).reference());
    }
    std::string diff;
    google::protobuf::util::MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    EXPECT_TRUE(d.Compare(*record, *back)) << InfoOf(f).name << ": " << diff;
  }
  auto fhir = Render(Format::kFhir, *record, env);
  ASSERT_TRUE(fhir.ok()) << fhir.status();
  EXPECT_EQ(Parse(Format::kFhir, *fhir)->person().nhs_number(), "9990000018");
  auto cld = Render(Format::kCld, *record, env);
  EXPECT_EQ(ReasonOf(cld.status()), "CLD_UNSUPPORTED") << "a discharge has no CLD row";
}

TEST(Formats, CldIsRenderedForTheQuarterOfTheMessage) {
  auto record = Parse(Format::kCouncilJson, Testdata("council/care_package.json"));
  ASSERT_TRUE(record.ok()) << record.status();
  const Envelope env{"m", "503", "X26", absl::FromCivil(absl::CivilDay(2026, 11, 22), absl::UTCTimeZone())};
  auto csv = Render(Format::kCld, *record, env);
  ASSERT_TRUE(csv.ok()) << csv.status();
  EXPECT_THAT(*csv, HasSubstr("503,2026-10-01,2026-12-31,"));
  auto back = Parse(Format::kCld, *csv);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->events(0).care_package().planned_units_per_week(), 14);
}

TEST(Formats, InvalidNhsNumbersAreKeptOnlyWhenAsked) {
  const std::string bad = Testdata("hl7v2/bad_nhs_number.hl7");
  EXPECT_EQ(ReasonOf(Parse(Format::kHl7v2, bad).status()), "NHS_NUMBER_INVALID");
  auto kept = Parse(Format::kHl7v2, bad, ReadOptions{.keep_invalid_nhs_numbers = true});
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->person().nhs_number(), "9990000019");
}

TEST(Formats, ACldFileOfSeveralPeopleIsNotOneMessage) {
  const std::string csv = "Event Type,NHS Number\nService,9990000018\nService,9990000026\n";
  auto r = Parse(Format::kCld, csv);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("this file has 2"));
}

}  // namespace
}  // namespace carebroker::adapters
