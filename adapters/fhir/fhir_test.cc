#include "adapters/fhir/fhir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_replace.h"
#include "adapters/common/testdata.h"
#include "adapters/hl7v2/adt.h"
#include "core/status.h"
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

// The public FHIR samples.
fs::path Samples() { return fs::path(adapters::SamplesDir()) / "fhir"; }

v1::CareRecord MustRead(const std::string& json) {
  auto r = ReadFhir(json);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) std::abort();
  return *std::move(r);
}

// Every file in tests/data/samples/fhir, with what reading it must give:
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
      // An Encounter alone whose subject is only a reference names no person.
      {"r4-base/Encounter-f001.json", "FHIR_INVALID"},
      {"r4-base/Encounter-home.json", "FHIR_INVALID"},
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
      // UK Core publishes its examples in FHIR XML.
      {"ukcore/UKCore-Patient-RichardSmith-Example.xml", ""},
      {"ukcore/UKCore-Patient-Sn-MultipleLanguages-Example.xml", ""},
      {"ukcore/UKCore-Patient-BabyPatient-Example.xml", "NHS_NUMBER_INVALID"},  // fails Modulus 11
      {"ukcore/UKCore-Encounter-InpatientEncounter-Example.xml", "FHIR_INVALID"},  // subject by reference only
      {"ukcore/UKCore-Bundle-BatchPOST-Example.xml", "FHIR_UNSUPPORTED"},  // no Patient or Encounter
      {"ukcore/Extension-UKCore-AdmissionMethod-Example.xml", "FHIR_INVALID"},  // Encounters, subject by reference
      {"ukcore/Extension-UKCore-DischargeMethod-Example.xml", "FHIR_INVALID"},
      {"ukcore/Extension-UKCore-LegalStatus-Example.xml", "FHIR_INVALID"},
      {"ukcore/Extension-UKCore-DeathNotificationStatus-Example.xml", ""},       // a Patient
      {"ukcore/Extension-UKCore-NHSNumberUnavailableReason-Example.xml", ""},    // a Patient
      {"ukcore/Extension-UKCore-NHSNumberVerificationStatus-Example.xml", ""},   // a Patient
      {"ukcore/Extension-UKCore-ResidentialStatus-Example.xml", ""},             // a Patient
  };
  ASSERT_TRUE(fs::exists(Samples())) << Samples() << " is missing: set CB_SAMPLES_DIR to a copy of tests/data/samples";
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(Samples())) {
    if (!entry.is_regular_file()) continue;
    ++files;
    const std::string rel = fs::relative(entry.path(), Samples()).generic_string();
    const std::string text = ReadOrDie(entry.path().string());
    auto r = ReadFhir(text);
    std::string want;
    if (expected.count(rel)) {
      want = expected.at(rel);
    } else if (rel.rfind("r4-base/Consent-", 0) == 0) {
      want = "FHIR_UNSUPPORTED";  // consent travels through the Consent service, not as a message
    } else if (rel.rfind("ukcore/", 0) == 0) {
      // The other UK Core examples and terminology: resources that are not a
      // care record (Organization, Practitioner, CodeSystem, ...).
      want = "FHIR_UNSUPPORTED";
      EXPECT_THAT(r.status().message(), HasSubstr("is not carried")) << rel;
    } else {
      ADD_FAILURE() << rel << " has no expectation; it gave: " << r.status();
      continue;
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

TEST(FhirXml, UkCorePatientMapsIdentityDemographicsAndExtensions) {
  const v1::CareRecord r = MustRead(ReadOrDie(Samples() / "ukcore/UKCore-Patient-RichardSmith-Example.xml"));
  const v1::Person& p = r.person();
  EXPECT_EQ(p.nhs_number(), "9912003888");
  EXPECT_EQ(p.nhs_number_status(), v1::NHS_NUMBER_STATUS_PRESENT_VERIFIED) << "England CodeSystem, code 01";
  ASSERT_EQ(p.names_size(), 1);
  EXPECT_EQ(p.names(0).family(), "SMITH");
  EXPECT_THAT(p.names(0).given(), ::testing::ElementsAre("Richard"));
  EXPECT_EQ(p.sex(), v1::SEX_MALE);
  EXPECT_EQ(p.birth_date().year(), 1970);
  EXPECT_EQ(p.birth_date().month(), 9);
  EXPECT_EQ(p.birth_date().day(), 11);
  EXPECT_EQ(p.address().postcode(), "LS17 7DF");
  EXPECT_THAT(p.address().lines(), ::testing::ElementsAre("4 Sandmoor Drive"));
  EXPECT_EQ(p.ethnicity(), "G");
}

TEST(FhirXml, UkCoreEncounterIsADischarge) {
  // UK Core's example names its subject by a reference to a Patient not
  // sent; given by NHS number, as a message without a Patient must, it reads.
  std::string xml = ReadOrDie(Samples() / "ukcore/UKCore-Encounter-InpatientEncounter-Example.xml");
  const std::string reference = R"(<reference value="Patient/UKCore-Patient-RichardSmith-Example" />)";
  ASSERT_NE(xml.find(reference), std::string::npos);
  xml.replace(xml.find(reference), reference.size(),
              R"(<identifier><system value="https://fhir.nhs.uk/Id/nhs-number"/><value value="9990000018"/></identifier>)");
  const v1::CareRecord r = MustRead(xml);
  EXPECT_EQ(r.person().nhs_number(), "9990000018");
  ASSERT_EQ(r.events_size(), 1);
  const v1::CareEvent& e = r.events(0);
  ASSERT_TRUE(e.has_discharge());
  EXPECT_EQ(TimeUtil::ToString(e.discharge().discharged_at()), "2019-12-11T13:00:00Z");
  EXPECT_EQ(e.discharge().discharge_method(), "1");
  EXPECT_EQ(e.discharge().discharge_destination(), "19");
  EXPECT_EQ(e.visit_number(), "6f40cebe-7b55-461d-9d7f-eadb4c065762") << "the encounter's identifier is its visit's";
  EXPECT_EQ(e.discharge().patient_class(), "I") << "class IMP";
}

// The same message in XML and in JSON gives the same record: repeated
// elements, a Bundle's nested resources, a primitive with an extension,
// narrative and a byte-order mark.
TEST(FhirXml, XmlAndJsonGiveTheSameRecord) {
  const std::string xml = "\xEF\xBB\xBF" R"(<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir">
  <type value="message"/>
  <entry><resource><MessageHeader><id value="m-1"/></MessageHeader></resource></entry>
  <entry><fullUrl value="urn:uuid:1"/><resource><Patient>
    <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>A <b>synthetic</b> person</p></div></text>
    <identifier><system value="https://fhir.nhs.uk/Id/nhs-number"/><value value="9990000018"/></identifier>
    <identifier><system value="https://example.nhs.uk/mrn"/><value value="MRN1"/></identifier>
    <name><family value="Testperson"><extension url="http://example.org/x"><valueString value="y"/></extension></family>
      <given value="Ada"/><given value="May"/></name>
    <gender value="female"/><birthDate value="1941-02-03"/>
    <address><use value="home"/><line value="1 Example Street"/><postalCode value="ls1 4ab"/></address>
    <generalPractitioner><identifier><system value="https://fhir.nhs.uk/Id/ods-organization-code"/><value value="Y06601"/></identifier></generalPractitioner>
  </Patient></resource></entry>
  <entry><resource><Encounter><status value="finished"/><period><end value="2026-03-01T10:00:00Z"/></period></Encounter></resource></entry>
</Bundle>)";
  const std::string json = R"({"resourceType":"Bundle","type":"message","entry":[
    {"resource":{"resourceType":"MessageHeader","id":"m-1"}},
    {"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient",
      "identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"},
                    {"system":"https://example.nhs.uk/mrn","value":"MRN1"}],
      "name":[{"family":"Testperson","given":["Ada","May"]}],"gender":"female","birthDate":"1941-02-03",
      "address":[{"use":"home","line":["1 Example Street"],"postalCode":"ls1 4ab"}],
      "generalPractitioner":[{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"Y06601"}}]}},
    {"resource":{"resourceType":"Encounter","status":"finished","period":{"end":"2026-03-01T10:00:00Z"}}}]})";
  const v1::CareRecord from_xml = MustRead(xml);
  const v1::CareRecord from_json = MustRead(json);
  EXPECT_EQ(from_xml.SerializeAsString(), from_json.SerializeAsString())
      << from_xml.ShortDebugString() << "\n" << from_json.ShortDebugString();
  EXPECT_EQ(from_xml.person().gp_practice(), "Y06601");
  EXPECT_EQ(from_xml.person().local_identifiers_size(), 1);
  ASSERT_EQ(from_xml.events_size(), 1);
  EXPECT_EQ(from_xml.events(0).reference(), "m-1");
}

// FHIR's JSON format does not allow a key twice in one object; read as the
// last, the record would hold what the sender's own tools did not show.
TEST(Fhir, AKeyGivenTwiceIsRefused) {
  for (const char* json : {
           R"({"resourceType":"Patient","resourceType":"Patient"})",
           R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number",)"
           R"("value":"9434765919","value":"9990000018"}]})",
           R"({"resourceType":"Bundle","type":"message","entry":[{"resource":{"resourceType":"Patient",)"
           R"("gender":"female","gender":"male"}}]})",
       }) {
    auto r = ReadFhir(json);
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_EQ(ReasonOf(r.status()), "FHIR_INVALID");
    EXPECT_THAT(r.status().message(), HasSubstr("a key twice"));
  }
  // The same key in two objects, and in an object and the one inside it, is fine.
  auto r = ReadFhir(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number",)"
                    R"("value":"9434765919"},{"system":"https://example.org/mrn","value":"A1"}],)"
                    R"("extension":[{"url":"u","extension":[{"url":"v","valueString":"x"}]}]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->person().nhs_number(), "9434765919");
}

TEST(FhirXml, HostileOrBrokenXmlGetsPreciseErrors) {
  std::string deep = "<Patient xmlns=\"http://hl7.org/fhir\">";
  for (int i = 0; i < 70; ++i) deep += "<extension>";
  for (int i = 0; i < 70; ++i) deep += "</extension>";
  deep += "</Patient>";
  const struct {
    std::string xml;
    const char* reason;
    const char* says;
  } cases[] = {
      {R"(<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>
<Patient xmlns="http://hl7.org/fhir"><id value="&b;"/></Patient>)",
       "FHIR_INVALID", "DOCTYPE is not allowed"},
      {"<Patient xmlns=\"http://hl7.org/fhir\"><gender value=\"male\"></Patient>", "FHIR_INVALID",
       "not well-formed XML: mismatched tag (line 1)"},
      {"<Patient><gender value=\"male\"/></Patient>", "FHIR_INVALID", "outside the FHIR namespace"},
      {"<Patient xmlns=\"http://hl7.org/fhir\"><gender>male</gender></Patient>", "FHIR_INVALID",
       "text outside a value attribute"},
      {"<gender xmlns=\"http://hl7.org/fhir\" value=\"male\"/>", "FHIR_INVALID", "not a FHIR resource"},
      {deep, "FHIR_INVALID", "nested too deeply"},
      {"<Observation xmlns=\"http://hl7.org/fhir\"/>", "FHIR_UNSUPPORTED", "Observation"},
      {"<Patient xmlns=\"http://hl7.org/fhir\"><birthDate value=\"1947-13-01\"/></Patient>", "DATE_INVALID",
       "Patient.birthDate"},
      {"<Patient xmlns=\"http://hl7.org/fhir\"><identifier><system value=\"https://fhir.nhs.uk/Id/nhs-number\"/>"
       "<value value=\"9990000019\"/></identifier></Patient>",
       "NHS_NUMBER_INVALID", "Patient.identifier[0].value"},
  };
  for (const auto& c : cases) {
    auto r = ReadFhir(c.xml);
    ASSERT_FALSE(r.ok()) << c.xml;
    EXPECT_EQ(ReasonOf(r.status()), c.reason) << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(c.says)) << r.status();
    EXPECT_THAT(r.status().message(), Not(HasSubstr("9990000019")));
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
                           "adt_a13.hl7", "adt_a16.hl7", "escapes.hl7", "utf8.hl7"}) {
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
      // A cancelled discharge leaves the encounter in progress, with no end.
      if (e.has_discharge() && e.action() == v1::EVENT_ACTION_CANCEL) {
        e.mutable_discharge()->clear_discharged_at();
        e.clear_occurred_at();
      }
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

// FHIR before R4 is refused by the shapes that give it away, not read as
// R4 (which would misread or drop its elements).
TEST(Fhir, StuThreeAndDstuTwoAreRefusedAsAnotherVersion) {
  const std::string patient = R"("identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}])";
  struct Case {
    std::string json, says;
  };
  const Case cases[] = {
      {R"({"resourceType":"Encounter","status":"finished","patient":{"reference":"Patient/1"}})",
       "Encounter.patient"},
      {R"({"resourceType":"Encounter","status":"finished","class":"inpatient"})", "code-valued Encounter.class"},
      {R"({"resourceType":"ReferralRequest","status":"active"})", "resource type ReferralRequest"},
      {R"({"resourceType":"Patient","meta":{"profile":["https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-Patient-1"]},)" +
           patient + "}",
       "Patient.meta.profile[0]: a profile of FHIR STU3"},
      {R"({"resourceType":"Patient","animal":{"species":{"text":"dog"}},)" + patient + "}", "Patient.animal"},
      {R"({"resourceType":"Bundle","type":"message","entry":[
          {"resource":{"resourceType":"MessageHeader","event":{"code":"ADT^A03"}}},
          {"resource":{"resourceType":"Patient",)" + patient + R"(}}]})",
       "MessageHeader.event"},
      {R"({"resourceType":"Bundle","type":"message","entry":[
          {"resource":{"resourceType":"Patient",)" + patient + R"(}},
          {"resource":{"resourceType":"ProcedureRequest","status":"active"}}]})",
       "Bundle.entry[1].resource: resource type ProcedureRequest"},
  };
  for (const Case& c : cases) {
    auto r = ReadFhir(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(ReasonOf(r.status()), "FHIR_VERSION_UNSUPPORTED") << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(c.says));
    EXPECT_THAT(r.status().message(), HasSubstr("carebroker reads FHIR R4"));
    EXPECT_THAT(r.status().message(), Not(HasSubstr("9990000018")));
  }
  // UK Core (R4) profiles are R4.
  EXPECT_TRUE(ReadFhir(R"({"resourceType":"Patient","meta":{"profile":["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},)" +
                       patient + "}")
                  .ok());
}

// What an Encounter is comes from its status with its period: an end is a
// discharge only once the encounter has finished.
TEST(Fhir, AnEncounterWithAnEndIsADischargeOnlyWhenFinished) {
  auto read = [](const std::string& status, bool end) {
    return MustRead(absl::StrCat(
        R"({"resourceType":"Encounter","status":")", status, R"(","class":{"code":"IMP"},)",
        R"("subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}},)",
        R"("period":{"start":"2026-11-15T09:00:00Z")", end ? R"(,"end":"2026-11-22T10:00:00Z")" : "", "}}"));
  };
  const v1::CareRecord finished = read("finished", true);
  ASSERT_TRUE(finished.events(0).has_discharge());
  EXPECT_EQ(finished.events(0).action(), v1::EVENT_ACTION_UNSPECIFIED);
  const v1::CareRecord going = read("in-progress", true);
  ASSERT_TRUE(going.events(0).has_discharge()) << "an end on an encounter in progress: a planned discharge";
  EXPECT_EQ(going.events(0).action(), v1::EVENT_ACTION_PLANNED);
  EXPECT_EQ(TimeUtil::ToString(going.events(0).discharge().discharged_at()), "2026-11-22T10:00:00Z");
  const v1::CareRecord cancelled = read("cancelled", true);
  ASSERT_TRUE(cancelled.events(0).has_discharge());
  EXPECT_EQ(cancelled.events(0).action(), v1::EVENT_ACTION_CANCEL);
  const v1::CareRecord planned = read("planned", true);
  ASSERT_TRUE(planned.events(0).has_admission()) << "a planned encounter is a planned admission";
  EXPECT_EQ(planned.events(0).action(), v1::EVENT_ACTION_PLANNED);
  const v1::CareRecord admitted = read("in-progress", false);
  ASSERT_TRUE(admitted.events(0).has_admission());
  EXPECT_EQ(admitted.events(0).action(), v1::EVENT_ACTION_UNSPECIFIED);
}

// A message may send an Encounter without its Patient, naming the person
// by NHS number; it is never a record about no one.
TEST(Fhir, AnEncountersSubjectIdentifierIsThePersonWhenNoPatientIsSent) {
  auto encounter = [](const std::string& subject) {
    return absl::StrCat(R"({"resourceType":"Encounter","status":"finished","subject":)", subject,
                        R"(,"period":{"end":"2026-11-22T10:00:00Z"}})");
  };
  const std::string by_nhs = R"({"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}})";
  const v1::CareRecord r = MustRead(encounter(by_nhs));
  EXPECT_EQ(r.person().nhs_number(), "9990000018");
  ASSERT_TRUE(r.events(0).has_discharge());

  auto bad = ReadFhir(encounter(R"({"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000019"}})"));
  EXPECT_EQ(ReasonOf(bad.status()), "NHS_NUMBER_INVALID") << "checked like any other";
  EXPECT_THAT(bad.status().message(), HasSubstr("Encounter.subject.identifier.value"));
  EXPECT_THAT(bad.status().message(), Not(HasSubstr("9990000019")));

  auto nobody = ReadFhir(encounter(R"({"reference":"Patient/123"})"));
  EXPECT_EQ(ReasonOf(nobody.status()), "FHIR_INVALID");
  EXPECT_THAT(nobody.status().message(), HasSubstr("must identify the person by NHS number"));
  EXPECT_EQ(ReasonOf(ReadFhir(R"({"resourceType":"Encounter","status":"finished"})").status()), "FHIR_INVALID");

  // Beside a Patient, the Encounter's subject must be that Patient.
  const std::string patient =
      R"({"resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}]}})";
  const std::string other = R"({"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000026"}})";
  auto two = ReadFhir(absl::StrCat(R"({"resourceType":"Bundle","type":"message","entry":[)", patient,
                                   R"(,{"resource":)", encounter(other), "}]}"));
  EXPECT_EQ(ReasonOf(two.status()), "FHIR_INVALID");
  EXPECT_THAT(two.status().message(), HasSubstr("not the Patient sent"));
  EXPECT_TRUE(ReadFhir(absl::StrCat(R"({"resourceType":"Bundle","type":"message","entry":[)", patient,
                                    R"(,{"resource":)", encounter(by_nhs), "}]}"))
                  .ok());
}

// A13 and A16 say what the Encounter alone cannot: the discharge is
// cancelled (in progress again) or pending (in progress, with its end).
TEST(Fhir, CancelledAndPendingDischargesAreInProgressEncountersWithTheirEvent) {
  const MessageInfo info{"0123456789abcdef0123456789abcdef", "RR8", "503", absl::FromUnixSeconds(1'795'000'000)};
  for (const auto& [file, event, end] : {std::tuple{"adt_a13.hl7", "A13", false}, {"adt_a16.hl7", "A16", true},
                                         {"adt_a03.hl7", "A03", true}}) {
    auto adt = hl7::ReadAdt(HospitalFixture(file));
    ASSERT_TRUE(adt.ok()) << adt.status();
    auto json = WriteFhirBundle(adt->record, info);
    ASSERT_TRUE(json.ok()) << json.status();
    const Json b = Json::parse(*json);
    EXPECT_EQ(b["entry"][0]["resource"]["eventCoding"]["code"], event) << file;
    const Json& enc = b["entry"][2]["resource"];
    EXPECT_EQ(enc["status"], std::string(event) == "A03" ? "finished" : "in-progress") << file;
    EXPECT_EQ(enc.contains("period") && enc["period"].contains("end"), end) << file;
  }
  // An A13 whose Encounter still states the end it cancels is a cancellation, not a planned discharge.
  const v1::CareRecord a13 = MustRead(R"({"resourceType":"Bundle","type":"message","entry":[
      {"resource":{"resourceType":"MessageHeader","id":"m","eventCoding":{"code":"A13"}}},
      {"resource":{"resourceType":"Encounter","status":"in-progress","period":{"end":"2026-11-22T10:00:00Z"},
       "subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}}}}]})");
  ASSERT_TRUE(a13.events(0).has_discharge());
  EXPECT_EQ(a13.events(0).action(), v1::EVENT_ACTION_CANCEL);
}

// The HL7 v2-to-FHIR maps: PV1-19 is the Encounter's identifier (type VN,
// assigned by the sending trust), so an admission and its discharge link
// up; MSH-10 is the Bundle's; PV1-2 gives every event its class; A04 stays
// a registration.
TEST(Fhir, VisitNumberClassAndRegistrationFollowTheV2ToFhirMaps) {
  const MessageInfo info{"0123456789abcdef0123456789abcdef", "RR8", "503", absl::FromUnixSeconds(1'795'000'000)};
  auto bundle_of = [&](const std::string& er7) {
    auto adt = hl7::ReadAdt(er7);
    EXPECT_TRUE(adt.ok()) << adt.status();
    if (!adt.ok()) std::abort();
    auto json = WriteFhirBundle(adt->record, info);
    EXPECT_TRUE(json.ok()) << json.status();
    if (!json.ok()) std::abort();
    return std::pair{adt->record, Json::parse(*json)};
  };
  const auto [admitted, a01] = bundle_of(HospitalFixture("adt_a01.hl7"));
  const auto [discharged, a03] = bundle_of(HospitalFixture("adt_a03.hl7"));
  ASSERT_FALSE(admitted.events(0).visit_number().empty());
  EXPECT_EQ(admitted.events(0).visit_number(), discharged.events(0).visit_number()) << "one visit, PV1-19";
  for (const Json* b : {&a01, &a03}) {
    const Json& id = (*b)["entry"][2]["resource"]["identifier"][0];
    EXPECT_EQ(id["value"], admitted.events(0).visit_number());
    EXPECT_EQ(id["type"]["coding"][0]["system"], "http://terminology.hl7.org/CodeSystem/v2-0203");
    EXPECT_EQ(id["type"]["coding"][0]["code"], "VN");
    EXPECT_EQ(id["assigner"]["identifier"]["value"], "RR8");
  }
  EXPECT_EQ(a03["identifier"]["value"], "RR8-A03-0001") << "MSH-10 is the message's id";
  // A discharge keeps the stay's start (PV1-44) and its ward (PV1-3).
  EXPECT_EQ(TimeUtil::ToString(discharged.events(0).discharge().admitted_at()), "2026-11-15T09:00:00Z");
  EXPECT_EQ(discharged.events(0).discharge().ward(), "WARD7");
  EXPECT_EQ(a03["entry"][2]["resource"]["period"]["start"], "2026-11-15T09:00:00Z");
  EXPECT_EQ(a03["entry"][2]["resource"]["location"][0]["status"], "completed");
  EXPECT_EQ(MustRead(a03.dump()).events(0).discharge().ward(), "WARD7");
  EXPECT_EQ(a03["identifier"]["assigner"]["identifier"]["value"], "RR8");
  EXPECT_EQ(MustRead(a03.dump()).events(0).visit_number(), admitted.events(0).visit_number()) << "and back";
  EXPECT_EQ(MustRead(a03.dump()).events(0).reference(), "RR8-A03-0001");

  // An outpatient's discharge is not an inpatient's: PV1-2 on every event.
  std::string outpatient = HospitalFixture("adt_a03.hl7");
  ASSERT_NE(outpatient.find("PV1||I|"), std::string::npos);
  outpatient.replace(outpatient.find("PV1||I|"), 7, "PV1||O|");
  const auto [out_record, out_bundle] = bundle_of(outpatient);
  EXPECT_EQ(out_record.events(0).discharge().patient_class(), "O");
  EXPECT_EQ(out_bundle["entry"][2]["resource"]["class"]["code"], "AMB");
  auto er7 = hl7::WriteAdt(out_record, {});
  ASSERT_TRUE(er7.ok()) << er7.status();
  EXPECT_NE(er7->find("PV1||O|"), std::string::npos) << "written back as O, not I";

  // A04 is a registration, whatever its class, in HL7 and in FHIR.
  std::string emergency = HospitalFixture("adt_a04.hl7");
  const size_t pv1 = emergency.find("PV1||");
  ASSERT_NE(pv1, std::string::npos);
  emergency.replace(pv1 + 5, 1, "E");
  const auto [registered, a04] = bundle_of(emergency);
  EXPECT_TRUE(registered.events(0).admission().registration());
  EXPECT_EQ(registered.events(0).admission().patient_class(), "E");
  EXPECT_EQ(a04["entry"][0]["resource"]["eventCoding"]["code"], "A04");
  EXPECT_TRUE(MustRead(a04.dump()).events(0).admission().registration());
  auto back = hl7::WriteAdt(registered, {});
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_NE(back->find("ADT^A04"), std::string::npos) << "not A01";
}

// Only a code of the NHS Data Dictionary value set goes out under its
// system; a trust's own code is carried as its text, never relabelled; a
// site that is not an ODS code is not emitted as one.
TEST(Fhir, OnlyDataDictionaryCodesGoOutUnderADataDictionarySystem) {
  const MessageInfo info{"0123456789abcdef0123456789abcdef", "RR8", "503", absl::FromUnixSeconds(1'795'000'000)};
  auto discharge = [&](const std::string& method, const std::string& destination, const std::string& site) {
    v1::CareRecord r;
    r.mutable_person()->set_nhs_number("9990000018");
    v1::Discharge* d = r.add_events()->mutable_discharge();
    d->set_discharge_method(method);
    d->set_discharge_destination(destination);
    d->set_site(site);
    auto json = WriteFhirBundle(r, info);
    EXPECT_TRUE(json.ok()) << json.status();
    return std::pair{r, json.ok() ? Json::parse(*json) : Json()};
  };
  const auto [coded, b] = discharge("1", "54", "RR813");
  const Json& enc = b["entry"][2]["resource"];
  EXPECT_EQ(enc["extension"][0]["valueCodeableConcept"]["coding"][0]["system"],
            "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeMethodEngland");
  EXPECT_EQ(enc["hospitalization"]["dischargeDisposition"]["coding"][0]["code"], "54");
  EXPECT_EQ(enc["serviceProvider"]["identifier"]["system"], "https://fhir.nhs.uk/Id/ods-site-code");

  const auto [local, l] = discharge("2", "Home", "St Elsewhere");  // 2 is Wales's, not England's; Home is free text
  const Json& lenc = l["entry"][2]["resource"];
  EXPECT_FALSE(lenc["extension"][0]["valueCodeableConcept"].contains("coding"));
  EXPECT_EQ(lenc["extension"][0]["valueCodeableConcept"]["text"], "2");
  EXPECT_FALSE(lenc["hospitalization"]["dischargeDisposition"].contains("coding"));
  EXPECT_EQ(lenc["hospitalization"]["dischargeDisposition"]["text"], "Home");
  EXPECT_FALSE(lenc["serviceProvider"].contains("identifier")) << "not an ODS code";
  EXPECT_EQ(lenc["serviceProvider"]["display"], "St Elsewhere");
  // Read back as sent.
  const v1::CareRecord back = MustRead(l.dump());
  EXPECT_EQ(back.events(0).discharge().discharge_method(), "2");
  EXPECT_EQ(back.events(0).discharge().discharge_destination(), "Home");
  EXPECT_EQ(back.events(0).discharge().site(), "St Elsewhere");

  v1::CareRecord admitted;
  admitted.mutable_person()->set_nhs_number("9990000018");
  admitted.add_events()->mutable_admission()->set_admission_method("EL");  // a local code
  auto a = WriteFhirBundle(admitted, info);
  ASSERT_TRUE(a.ok()) << a.status();
  const Json method = Json::parse(*a)["entry"][2]["resource"]["hospitalization"]["extension"][0]["valueCodeableConcept"];
  EXPECT_EQ(method, Json({{"text", "EL"}}));
  admitted.mutable_events(0)->mutable_admission()->set_admission_method("2A");
  a = WriteFhirBundle(admitted, info);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(Json::parse(*a)["entry"][2]["resource"]["hospitalization"]["extension"][0]["valueCodeableConcept"]["coding"][0]
                ["code"],
            "2A");
}

// Names and addresses by the HL7 v2-to-FHIR ConceptMaps (tables 0200 and
// 0190): only name type S is anonymous; an address keeps its country and
// type with no lines; the HL7 writer writes every line it was given.
TEST(Fhir, NameTypesAndAddressesFollowTheConceptMaps) {
  const std::string a01 = HospitalFixture("adt_a01.hl7");
  const size_t pid = a01.find("PID|");
  ASSERT_NE(pid, std::string::npos);
  const size_t end = a01.find('\r', pid);
  auto with_pid = [&](const std::string& names, const std::string& address) {
    std::string f = a01.substr(pid, end - pid);
    std::vector<std::string> fields = absl::StrSplit(f, '|');
    fields[5] = names;
    fields[11] = address;
    std::string out = a01;
    out.replace(pid, end - pid, absl::StrJoin(fields, "|"));
    return out;
  };
  const MessageInfo info{"0123456789abcdef0123456789abcdef", "RR8", "503", absl::FromUnixSeconds(1'795'000'000)};
  const std::string er7 = with_pid("TESTER^ALICE^^^^^L~TEST^A^^^^^S~ALLY^^^^^^A~TESTA^^^^^^T~TESTER^ALICE^^^^^R",
                                   "^^^^^GBR^M");
  auto adt = hl7::ReadAdt(er7);
  ASSERT_TRUE(adt.ok()) << adt.status();
  const v1::Person& p = adt->record.person();
  ASSERT_EQ(p.names_size(), 5);
  EXPECT_EQ(p.names(0).use(), "official");
  EXPECT_EQ(p.names(1).use(), "anonymous") << "S: a pseudo-name to ensure anonymity";
  EXPECT_EQ(p.names(2).use(), "") << "A (alias) is not anonymous";
  EXPECT_EQ(p.names(3).use(), "") << "T (tribal) is not temp";
  EXPECT_EQ(p.names(4).use(), "official") << "R registered";
  EXPECT_EQ(p.address().country(), "GBR");
  EXPECT_EQ(p.address().type(), "M") << "kept with no lines";
  auto json = WriteFhirBundle(adt->record, info);
  ASSERT_TRUE(json.ok()) << json.status();
  const Json patient = Json::parse(*json)["entry"][1]["resource"];
  EXPECT_EQ(patient["name"][1]["use"], "anonymous");
  EXPECT_FALSE(patient["name"][2].contains("use"));
  EXPECT_EQ(patient["address"][0], Json({{"type", "postal"}, {"country", "GBR"}}));
  EXPECT_EQ(MustRead(*json).person().address().type(), "M");

  // Work and temporary addresses; three lines all written to PID-11.
  v1::CareRecord r = adt->record;
  v1::Address* addr = r.mutable_person()->mutable_address();
  addr->add_lines("Flat 2");
  addr->add_lines("1 High Street");
  addr->add_lines("Headingley");
  addr->set_type("B");
  auto back = hl7::WriteAdt(r, {});
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_NE(back->find("Flat 2^1 High Street, Headingley^"), std::string::npos) << "no line dropped";
  auto reread = hl7::ReadAdt(*back);
  ASSERT_TRUE(reread.ok()) << reread.status();
  EXPECT_EQ(reread->record.person().address().type(), "B");
  EXPECT_EQ(reread->record.person().address().country(), "GBR");
  EXPECT_EQ(reread->record.person().names(1).use(), "anonymous") << "written back as S";
  json = WriteFhirBundle(r, info);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(Json::parse(*json)["entry"][1]["resource"]["address"][0]["use"], "work");
  EXPECT_EQ(Json::parse(*json)["entry"][1]["resource"]["address"][0]["line"].size(), 3u);
}

}  // namespace
}  // namespace carebroker::fhir
