#include "adapters/formats.h"

#include <nlohmann/json.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/time/civil_time.h"
#include "adapters/common/testdata.h"
#include "adapters/documents.h"
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

// Documents: the person declared in the body (synthetic NHS numbers).
std::string DocumentBundle(const nlohmann::json& subject, const std::string& first = "Composition") {
  nlohmann::json b = {
      {"resourceType", "Bundle"},
      {"type", "document"},
      {"entry",
       {{{"fullUrl", "urn:uuid:c1"}, {"resource", {{"resourceType", first}, {"status", "final"}, {"subject", subject}}}},
        {{"fullUrl", "urn:uuid:p1"},
         {"resource",
          {{"resourceType", "Patient"},
           {"id", "p1"},
           {"identifier", {{{"system", "https://fhir.nhs.uk/Id/nhs-number"}, {"value", "9434765919"}}}}}}},
        {{"resource", {{"resourceType", "Binary"}, {"contentType", "application/pdf"}, {"data", "JVBERi0x"}}}}}}};
  return b.dump();
}

std::string Multipart(const std::string& manifest_type, const std::string& manifest) {
  return "preamble\r\n--b0undary\r\nContent-Type: " + manifest_type + "\r\n\r\n" + manifest +
         "\r\n--b0undary\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 synthetic\r\n--b0undary--\r\n";
}

TEST(Documents, AFhirDocumentBundleNamesItsPersonThroughItsComposition) {
  auto by_reference = ReadDocument("application/fhir+json", DocumentBundle({{"reference", "urn:uuid:p1"}}));
  ASSERT_TRUE(by_reference.has_value());
  ASSERT_TRUE(by_reference->ok()) << by_reference->status();
  EXPECT_EQ((*by_reference)->form, DocumentForm::kFhirDocumentBundle);
  EXPECT_EQ((*by_reference)->nhs_number, "9434765919");
  EXPECT_EQ((*ReadDocument("application/fhir+json", DocumentBundle({{"reference", "Patient/p1"}})))->nhs_number,
            "9434765919");
  auto by_identifier = ReadDocument(
      "application/fhir+json",
      DocumentBundle({{"identifier", {{"system", "https://fhir.nhs.uk/Id/nhs-number"}, {"value", "9434765870"}}}}));
  EXPECT_EQ((*by_identifier)->nhs_number, "9434765870");

  auto nobody = ReadDocument("application/fhir+json", DocumentBundle({{"reference", "urn:uuid:nobody"}}));
  EXPECT_EQ(ReasonOf(nobody->status()), "FHIR_INVALID");
  auto unordered = ReadDocument("application/fhir+json", DocumentBundle({{"reference", "urn:uuid:p1"}}, "Patient"));
  EXPECT_EQ(ReasonOf(unordered->status()), "FHIR_INVALID");
  EXPECT_THAT(std::string(unordered->status().message()), ::testing::HasSubstr("starts with its Composition"));
  auto bad = ReadDocument(
      "application/fhir+json",
      DocumentBundle({{"identifier", {{"system", "https://fhir.nhs.uk/Id/nhs-number"}, {"value", "9434765918"}}}}));
  EXPECT_EQ(ReasonOf(bad->status()), "NHS_NUMBER_INVALID");
  EXPECT_EQ(std::string(bad->status().message()).find("9434765918"), std::string::npos) << "no value in errors";
  // A care-record Bundle is no document: it is read and minimised.
  EXPECT_FALSE(ReadDocument("application/fhir+json", R"({"resourceType":"Bundle","type":"message","entry":[]})"));
  EXPECT_FALSE(ReadDocument("application/pdf", "%PDF-1.4"));
}

TEST(Documents, AMultipartBodyDeclaresItsPersonInAJsonManifestFirst) {
  const std::string type = "multipart/mixed; boundary=\"b0undary\"";
  auto ok = ReadDocument(type, Multipart("application/json", R"({"nhs_number":"9434765919"})"));
  ASSERT_TRUE(ok.has_value());
  ASSERT_TRUE(ok->ok()) << ok->status();
  EXPECT_EQ((*ok)->form, DocumentForm::kMultipartManifest);
  EXPECT_EQ((*ok)->nhs_number, "9434765919");
  EXPECT_EQ((*ReadDocument("multipart/related; boundary=b0undary",
                           Multipart("application/json; charset=utf-8", R"({"nhs_number":"9434765870"})")))
                ->nhs_number,
            "9434765870");
  auto reason = [&](const std::string& t, const std::string& body) {
    auto d = ReadDocument(t, body);
    return d.has_value() && !d->ok() ? ReasonOf(d->status()) : std::string("accepted");
  };
  EXPECT_EQ(reason("multipart/mixed", Multipart("application/json", R"({"nhs_number":"9434765919"})")),
            "DOCUMENT_INVALID") << "no boundary";
  EXPECT_EQ(reason(type, Multipart("application/pdf", "%PDF")), "DOCUMENT_INVALID") << "the manifest comes first";
  EXPECT_EQ(reason(type, Multipart("application/json", R"({"nhs":"9434765919"})")), "DOCUMENT_INVALID");
  EXPECT_EQ(reason(type, Multipart("application/json", "not json")), "DOCUMENT_INVALID");
  EXPECT_EQ(reason(type, Multipart("application/json", R"({"nhs_number":"9434765918"})")), "NHS_NUMBER_INVALID");
  EXPECT_EQ(reason(type, "--b0undary\r\nContent-Type: application/json\r\n\r\n{\"nhs_number\":\"9434765919\"}"),
            "DOCUMENT_INVALID") << "the manifest must end before the file";
  EXPECT_EQ(reason(type, "no parts at all"), "DOCUMENT_INVALID");
}

}  // namespace
}  // namespace carebroker::adapters
