#include "adapters/fhir/fhir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_replace.h"
#include "adapters/common/testdata.h"
#include "adapters/hl7v2/adt.h"
#include "broker/core/status.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker::fhir {
namespace {

namespace fs = std::filesystem;
using ::google::protobuf::util::TimeUtil;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

using adapters::ReadOrDie;

// The public samples (CMake's CB_SAMPLES_DIR, by default ../shared/samples).
fs::path Samples() {
  const char* dir = std::getenv("CB_SAMPLES_DIR");
  return fs::path(dir != nullptr && *dir != 0 ? dir : adapters::SourceDir() + "/../shared/samples") / "fhir";
}

v1::CareRecord MustRead(const std::string& json) {
  auto r = ReadFhir(json);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) std::abort();
  return *std::move(r);
}

// Every file in ../shared/samples/fhir, with what reading it must give:
// "" parses, otherwise the reason of the precise refusal.
TEST(FhirGolden, EverySampleParsesOrIsRefusedPrecisely) {
  const std::map<std::string, std::string> expected = {
      {"nhs-api-json/bars/process_message-POST-body.json", ""},
      {"nhs-api-json/pds/Minimal_Patient.json", ""},
      {"nhs-api-json/pds/Patient.json", ""},
      {"nhs-api-json/pds/PatientSearch.json", ""},
      {"nhs-api-json/pds/Sensitive_Patient.json", ""},
      {"nhs-api-json/pds/PatientCompoundName.json", "NHS_NUMBER_INVALID"},  // 9000000015 fails Modulus 11
      {"nhs-api-json/pds/RelatedPersonBundle.json", "FHIR_UNSUPPORTED"},    // no Patient or Encounter
      {"r4-base/Bundle-bundle-transaction.json", "FHIR_UNSUPPORTED"},       // five Patients: not one person
      {"r4-base/Encounter-f001.json", ""},
      {"r4-base/Encounter-home.json", ""},
      {"r4-base/EpisodeOfCare-example.json", "FHIR_UNSUPPORTED"},
      {"r4-base/Patient-ch-example.json", ""},
      {"r4-base/Patient-dicom.json", ""},
      {"r4-base/Patient-example.json", ""},
      {"r4-base/Patient-f001.json", ""},
      {"r4-base/Patient-glossy.json", ""},
      {"r4-base/Patient-infant-twin-1.json", ""},
      {"r4-base/Patient-pat1.json", ""},
      {"r4-base/Patient-pat2.json", ""},
      {"r4-base/package.json", "FHIR_INVALID"},  // an npm manifest, no resourceType
      {"uk-identifier-registry.csv", "FHIR_INVALID"},
  };
  ASSERT_TRUE(fs::exists(Samples())) << Samples() << " is missing: configure with -DCB_SAMPLES_DIR=<shared/samples>";
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(Samples())) {
    if (!entry.is_regular_file()) continue;
    ++files;
    const std::string rel = fs::relative(entry.path(), Samples()).generic_string();
    const std::string text = ReadOrDie(entry.path().string());
    auto r = ReadFhir(text);
    std::string want;
    if (entry.path().extension() == ".xml") {
      // UK Core publishes its examples in XML; the adapter takes FHIR JSON.
      want = "FHIR_UNSUPPORTED";
    } else if (rel.rfind("r4-base/Consent-", 0) == 0) {
      want = "FHIR_UNSUPPORTED";  // consent travels through the Consent service, not as a message
    } else {
      ASSERT_TRUE(expected.count(rel)) << rel << " has no expectation; it gave: " << r.status();
      want = expected.at(rel);
    }
    if (want.empty()) {
      EXPECT_TRUE(r.ok()) << rel << ": " << r.status();
    } else {
      ASSERT_FALSE(r.ok()) << rel;
      EXPECT_EQ(ReasonOf(r.status()), want) << rel << ": " << r.status();
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << rel;
    }
  }
  EXPECT_GE(files, 60);
}

TEST(Fhir, PdsPatientMapsIdentityDemographicsAndGp) {
  const v1::CareRecord r = MustRead(ReadOrDie(Samples() / "nhs-api-json/pds/Patient.json"));
  const v1::Person& p = r.person();
  EXPECT_EQ(p.nhs_number(), "9000000009");
  EXPECT_EQ(p.nhs_number_status(), v1::NHS_NUMBER_STATUS_PRESENT_VERIFIED) << "retired CodeSystem spelling, code 01";
  EXPECT_EQ(p.gp_practice(), "Y12345");
  ASSERT_GE(p.names_size(), 1);
  EXPECT_FALSE(p.names(0).family().empty());
  EXPECT_NE(p.sex(), v1::SEX_UNSPECIFIED);
  EXPECT_GT(p.birth_date().year(), 1900);
  EXPECT_FALSE(p.address().postcode().empty());
}

TEST(Fhir, CompoundNameSampleIsRefusedNamingTheElementNotTheNumber) {
  auto r = ReadFhir(ReadOrDie(Samples() / "nhs-api-json/pds/PatientCompoundName.json"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("Bundle.entry[0].resource.identifier[0].value"));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("9000000015")));
}

std::string PatientWithStatus(absl::string_view system, absl::string_view code) {
  return absl::StrReplaceAll(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number",
    "value":"9990000018","extension":[{"url":"https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
    "valueCodeableConcept":{"coding":[{"system":"SYSTEM","code":"CODE"}]}}]}]})",
                             {{"SYSTEM", system}, {"CODE", code}});
}

TEST(Fhir, EverySpellingOfTheVerificationStatusIsAccepted) {
  const struct {
    const char* system;
    const char* code;
    v1::NhsNumberStatus want;
  } cases[] = {
      {"https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland", "01",
       v1::NHS_NUMBER_STATUS_PRESENT_VERIFIED},
      {"https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusWales", "03",
       v1::NHS_NUMBER_STATUS_TRACE_REQUIRED},
      {"https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus", "02",
       v1::NHS_NUMBER_STATUS_PRESENT_NOT_TRACED},
      {"https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus", "number-present-and-verified",
       v1::NHS_NUMBER_STATUS_PRESENT_VERIFIED},
      {"https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus", "trace-postponed",
       v1::NHS_NUMBER_STATUS_TRACE_POSTPONED},
      {"https://fhir.hl7.org.uk/CareConnect-NHSNumberVerificationStatus-1", "04", v1::NHS_NUMBER_STATUS_TRACE_NO_MATCH},
      {"https://example.org/not-a-status-system", "01", v1::NHS_NUMBER_STATUS_UNSPECIFIED},
      {"https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland", "09",
       v1::NHS_NUMBER_STATUS_UNSPECIFIED},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(MustRead(PatientWithStatus(c.system, c.code)).person().nhs_number_status(), c.want)
        << c.system << " " << c.code;
  }
}

TEST(Fhir, BadDocumentsGetPreciseErrors) {
  const struct {
    const char* json;
    const char* reason;
    const char* says;
  } cases[] = {
      {"{not json", "FHIR_INVALID", "not well-formed JSON"},
      {"[1,2]", "FHIR_INVALID", "not a JSON object"},
      {"<Patient xmlns=\"http://hl7.org/fhir\"/>", "FHIR_UNSUPPORTED", "XML"},
      {R"({"resourceType":"Observation"})", "FHIR_UNSUPPORTED", "Observation"},
      {R"({"resourceType":"Patient","birthDate":"1947-13-01"})", "DATE_INVALID", "Patient.birthDate"},
      {R"({"resourceType":"Patient","gender":"M"})", "FHIR_INVALID", "Patient.gender"},
      {R"({"resourceType":"Patient","name":[{"family":7}]})", "FHIR_INVALID", "Patient.name[0].family"},
      {R"({"resourceType":"Patient","identifier":"x"})", "FHIR_INVALID", "Patient.identifier"},
      {R"({"resourceType":"Encounter"})", "FHIR_INVALID", "Encounter.status"},
      {R"({"resourceType":"Encounter","status":"finished","period":{"end":"yesterday"}})", "DATE_INVALID",
       "Encounter.period.end"},
      {R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000019"}]})",
       "NHS_NUMBER_INVALID", "Patient.identifier[0].value"},
  };
  for (const auto& c : cases) {
    auto r = ReadFhir(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(ReasonOf(r.status()), c.reason) << c.json << ": " << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(c.says)) << c.json;
  }
}

std::string HospitalFixture(const std::string& name) { return adapters::Testdata("hl7v2/" + name); }

// A record from an HL7 fixture, written as FHIR and read back, is the same
// record (minus what FHIR does not carry: MSH-10 is the Encounter identifier).
TEST(Fhir, HospitalEventsRoundTripThroughAMessageBundle) {
  for (const char* file : {"adt_a01.hl7", "adt_a02.hl7", "adt_a03.hl7", "adt_a04.hl7", "adt_a05.hl7", "adt_a11.hl7",
                           "adt_a13.hl7", "escapes.hl7", "utf8.hl7"}) {
    auto adt = hl7::ReadAdt(HospitalFixture(file));
    ASSERT_TRUE(adt.ok()) << file << ": " << adt.status();
    v1::CareRecord want = adt->record;
    if (want.events(0).has_person_change()) want.clear_events();
    // FHIR has no place for these.
    for (v1::CareEvent& e : *want.mutable_events()) {
      if (e.has_discharge() || e.has_transfer()) e.clear_occurred_at();
      if (e.has_discharge()) *e.mutable_occurred_at() = e.discharge().discharged_at();
      if (e.has_admission()) {
        e.mutable_admission()->clear_expected_discharge_at();
        if (e.admission().has_admitted_at()) *e.mutable_occurred_at() = e.admission().admitted_at();
        else e.clear_occurred_at();
      }
      if (e.has_transfer()) e.mutable_transfer()->clear_transferred_at();
      if (e.has_discharge() && !e.discharge().has_discharged_at()) e.clear_occurred_at();
    }
    const MessageInfo info{"0123456789abcdef0123456789abcdef", "RR8", "503", absl::FromUnixSeconds(1'795'000'000)};
    auto json = WriteFhirBundle(want, info);
    ASSERT_TRUE(json.ok()) << file << ": " << json.status();
    auto back = ReadFhir(*json);
    ASSERT_TRUE(back.ok()) << file << ": " << back.status();
    std::string diff;
    google::protobuf::util::MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    EXPECT_TRUE(d.Compare(want, *back)) << file << ": " << diff;
  }
}

TEST(Fhir, BundleHasTheShapeR4RequiresOfAMessage) {
  auto adt = hl7::ReadAdt(HospitalFixture("adt_a03.hl7"));
  ASSERT_TRUE(adt.ok());
  const MessageInfo info{"0123456789abcdef0123456789abcdef", "RR8", "503", absl::FromUnixSeconds(1'795'000'000)};
  auto text = WriteFhirBundle(adt->record, info);
  ASSERT_TRUE(text.ok()) << text.status();
  const Json b = Json::parse(*text);
  EXPECT_EQ(b["resourceType"], "Bundle");
  EXPECT_EQ(b["type"], "message");
  EXPECT_TRUE(b.contains("timestamp"));
  ASSERT_EQ(b["entry"].size(), 3u);
  const Json& header = b["entry"][0]["resource"];
  EXPECT_EQ(header["resourceType"], "MessageHeader") << "a message Bundle starts with its MessageHeader";
  EXPECT_EQ(header["eventCoding"]["code"], "A03");
  EXPECT_EQ(header["source"]["endpoint"], "urn:nhs-uk:addressing:ods:RR8");
  EXPECT_EQ(header["destination"][0]["receiver"]["identifier"]["value"], "503");
  std::set<std::string> urls;
  for (const Json& e : b["entry"]) {
    EXPECT_TRUE(urls.insert(e["fullUrl"].get<std::string>()).second) << "fullUrl unique";
    EXPECT_THAT(e["fullUrl"].get<std::string>(), testing::StartsWith("urn:uuid:"));
  }
  const Json& patient = b["entry"][1]["resource"];
  EXPECT_EQ(patient["identifier"][0]["system"], kNhsNumberSystem);
  EXPECT_EQ(patient["identifier"][0]["extension"][0]["url"],
            "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus");
  EXPECT_EQ(patient["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["system"],
            "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland");
  EXPECT_EQ(patient["generalPractitioner"][0]["identifier"]["system"], kOdsOrganisationSystem);
  const Json& enc = b["entry"][2]["resource"];
  EXPECT_EQ(enc["status"], "finished");
  EXPECT_EQ(enc["class"]["system"], "http://terminology.hl7.org/CodeSystem/v3-ActCode");
  EXPECT_EQ(enc["subject"]["reference"], b["entry"][1]["fullUrl"]);
  EXPECT_EQ(enc["hospitalization"]["dischargeDisposition"]["coding"][0]["code"], "54");
  EXPECT_EQ(enc["period"]["end"], "2026-11-22T10:00:00Z");
}

TEST(Fhir, CouncilEventsAreNotForcedIntoFhir) {
  v1::CareRecord r;
  r.mutable_person()->set_nhs_number("9990000018");
  r.add_events()->mutable_care_package()->set_service_type("Long Term Support: Community");
  auto out = WriteFhirBundle(r, {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(ReasonOf(out.status()), "FHIR_UNSUPPORTED");
  EXPECT_THAT(out.status().message(), HasSubstr("council JSON"));
}

}  // namespace
}  // namespace carebroker::fhir
