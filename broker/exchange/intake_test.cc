#include "broker/exchange/intake.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/vocabulary.h"
#include "adapters/common/testdata.h"
#include "adapters/formats.h"
#include "audit/log.h"
#include "core/status.h"
#include "tests/testutil/testutil.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker {
namespace {

class IntakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir("intake");
    for (const char* f : {"c", "k", "a"}) std::ofstream(dir_ / f) << "x";
    std::ofstream(dir_ / "sk") << "stand-in";
    std::ofstream(dir_ / "subj") << std::string(32, 's');
    for (const char* f : {"sk", "subj"}) {
      std::filesystem::permissions(dir_ / f, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    }
    auto c = Parse("{max_message_bytes: 100, memory_budget_bytes: 1000}", "tests/agreements", R"(organisations:
  - {ods: RR8, name: Leeds, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire, kind: local_authority}
)");
    ASSERT_TRUE(c.ok()) << c.status();
    config_ = *c;
    auto opaque = policy::PolicySet::Load(Source() + "/tests/agreements");
    ASSERT_TRUE(opaque.ok()) << opaque.status();
    opaque_ = *opaque;
    auto care = policy::PolicySet::Load(Source() + "/deploy/agreements");
    ASSERT_TRUE(care.ok()) << care.status();
    care_ = *care;
  }
  // A config with stand-in TLS files and the keys written in SetUp, the
  // given limits, the agreements folder (relative to the source tree) and
  // the organisations (and any routing) in `rest`.
  absl::StatusOr<std::shared_ptr<const Config>> Parse(const std::string& limits, const std::string& agreements,
                                                      const std::string& rest) {
    return ParseConfig("listen: 127.0.0.1:1\ndata_dir: d\ntls: {cert: c, key: k, ca: a}\nlimits: " + limits +
                           "\naudit: {signing_key: sk, subject_key: subj}\npolicy: {agreements_dir: " + Source() +
                           "/" + agreements + "}\n" + rest,
                       "t.yaml", dir_.string(), {});
  }
  static std::string Source() {
    const char* s = std::getenv("CB_SOURCE_DIR");
    return s != nullptr ? s : ".";
  }

  static v1::SendRequest Good() {
    v1::SendRequest r;
    r.set_recipient("503");
    r.set_workflow("HOSPITAL_DISCHARGE");
    r.set_purpose("direct-care");
    r.set_idempotency_key("k-1");
    r.set_content_type("application/json");
    r.set_payload("{}");
    return r;
  }
  absl::Status Check(const v1::SendRequest& r) {
    const bool canonical = r.content_type() == kCareRecordContentType;
    return Admit(*config_, canonical ? *care_ : *opaque_, book_, entries_, OrgCode("RR8"), r, t0_, &denial_).status();
  }

  std::filesystem::path dir_;
  std::shared_ptr<const Config> config_;
  std::shared_ptr<const policy::PolicySet> opaque_, care_;
  policy::ConsentBook book_;
  audit::EntryMaker entries_{std::string(32, 's')};
  AuditRecord denial_;
  absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(IntakeTest, BuildsTheMessage) {
  auto a = Admit(*config_, *opaque_, book_, entries_, OrgCode("RR8"), Good(), t0_, &denial_);
  ASSERT_TRUE(a.ok()) << a.status();
  const NewMessage* m = &a->message;
  EXPECT_EQ(m->sender.str(), "RR8");
  EXPECT_EQ(m->recipient.str(), "503");
  EXPECT_EQ(m->accepted_at, t0_);
  EXPECT_EQ(m->expires_at, t0_ + absl::Hours(120));
  EXPECT_EQ(m->digest, Sha256("{}"));
  EXPECT_EQ(m->payload, "{}");
  EXPECT_EQ(m->kind, v1::MESSAGE_KIND_DATA);
  EXPECT_EQ(m->consent_check, 0u);
  EXPECT_EQ(a->agreement_id, "TEST-EXCHANGE");
  EXPECT_EQ(a->flow, "synthetic-opaque");
}

TEST_F(IntakeTest, EveryBadFieldHasItsReason) {
  struct Case {
    void (*mutate)(v1::SendRequest&);
    absl::StatusCode code;
    const char* reason;
  } cases[] = {
      {[](auto& r) { r.set_recipient(""); }, absl::StatusCode::kInvalidArgument, "RECIPIENT_INVALID"},
      {[](auto& r) { r.set_recipient("999"); }, absl::StatusCode::kFailedPrecondition, "UNKNOWN_RECIPIENT"},
      {[](auto& r) { r.set_workflow(""); }, absl::StatusCode::kInvalidArgument, "WORKFLOW_INVALID"},
      {[](auto& r) { r.set_workflow("Discharge"); }, absl::StatusCode::kInvalidArgument, "WORKFLOW_INVALID"},
      {[](auto& r) { r.set_workflow("DISCHARGE_"); }, absl::StatusCode::kInvalidArgument, "WORKFLOW_INVALID"},
      {[](auto& r) { r.set_purpose("direct_care"); }, absl::StatusCode::kInvalidArgument, "PURPOSE_INVALID"},
      {[](auto& r) { r.set_purpose("direct--care"); }, absl::StatusCode::kInvalidArgument, "PURPOSE_INVALID"},
      {[](auto& r) { r.set_purpose("gossip"); }, absl::StatusCode::kInvalidArgument, "PURPOSE_UNKNOWN"},
      {[](auto& r) { r.set_purpose("research"); }, absl::StatusCode::kPermissionDenied, "NO_AGREEMENT"},
      {[](auto& r) { r.set_workflow("HOSPITAL_ADMISSION"); }, absl::StatusCode::kPermissionDenied, "NO_AGREEMENT"},
      {[](auto& r) { r.set_idempotency_key("tab\there"); }, absl::StatusCode::kInvalidArgument,
       "IDEMPOTENCY_KEY_INVALID"},
      {[](auto& r) { r.set_content_type("text/\x01"); }, absl::StatusCode::kInvalidArgument, "CONTENT_TYPE_INVALID"},
      {[](auto& r) { r.set_local_reference(std::string(129, 'r')); }, absl::StatusCode::kInvalidArgument,
       "LOCAL_REFERENCE_INVALID"},
      {[](auto& r) { r.set_justification(std::string(4097, 'j')); }, absl::StatusCode::kInvalidArgument,
       "JUSTIFICATION_INVALID"},
      {[](auto& r) { r.set_payload(""); }, absl::StatusCode::kInvalidArgument, "PAYLOAD_EMPTY"},
      {[](auto& r) { r.set_payload(std::string(101, 'x')); }, absl::StatusCode::kResourceExhausted,
       "MESSAGE_TOO_LARGE"},
  };
  for (const auto& c : cases) {
    v1::SendRequest r = Good();
    c.mutate(r);
    absl::Status s = Check(r);
    EXPECT_EQ(s.code(), c.code) << c.reason;
    EXPECT_EQ(ReasonOf(s), c.reason);
  }
  v1::SendRequest exact = Good();
  exact.set_payload(std::string(100, 'x'));
  EXPECT_TRUE(Check(exact).ok());
}

TEST_F(IntakeTest, CanonicalPayloadIsParsedAndItsNhsNumberChecked) {
  v1::SendRequest r = Good();
  r.set_content_type(kCareRecordContentType);
  v1::CareRecord rec;
  rec.mutable_person()->set_nhs_number("9000000009");
  r.set_payload(rec.SerializeAsString());
  EXPECT_TRUE(Check(r).ok()) << Check(r);
  rec.mutable_person()->set_nhs_number("9000000015");
  r.set_payload(rec.SerializeAsString());
  absl::Status s = Check(r);
  EXPECT_EQ(ReasonOf(s), "NHS_NUMBER_INVALID");
  EXPECT_EQ(std::string(s.message()).find("9000000015"), std::string::npos) << "patient data in an error";
  r.set_payload("\x0a\xff");
  EXPECT_EQ(ReasonOf(Check(r)), "PAYLOAD_MALFORMED");
}

TEST_F(IntakeTest, CanonicalRecordIsMinimisedAndTheReceiptSaysWhat) {
  v1::SendRequest r = Good();
  r.set_content_type(kCareRecordContentType);
  v1::CareRecord rec;
  rec.mutable_person()->set_nhs_number("9000000009");
  rec.mutable_person()->add_local_identifiers()->set_value("MRN1");
  rec.add_events()->mutable_admission()->set_consultant("C1");
  rec.mutable_events(0)->mutable_admission()->set_ward("W1");
  r.set_payload(rec.SerializeAsString());
  r.set_workflow("HOSPITAL_ADMISSION");
  auto a = Admit(*config_, *care_, book_, entries_, OrgCode("RR8"), r, absl::FromUnixSeconds(1'800'000'000), &denial_);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->agreement_id, "DSA-ACUTE-TO-SOCIAL-CARE");
  EXPECT_THAT(a->withheld_fields, ::testing::ElementsAre("events.admission.consultant", "person.local_identifiers"));
  v1::CareRecord stored;
  ASSERT_TRUE(stored.ParseFromString(a->message.payload));
  EXPECT_EQ(stored.person().nhs_number(), "9000000009");
  EXPECT_EQ(stored.person().local_identifiers_size(), 0);
  EXPECT_EQ(stored.events(0).admission().consultant(), "");
  EXPECT_EQ(stored.events(0).admission().ward(), "W1");
  EXPECT_EQ(a->message.subject, "9000000009");
  EXPECT_NE(a->message.consent_check, 0u);
  EXPECT_EQ(a->message.digest, Sha256(r.payload()));  // idempotency compares what was sent

  // Dissent recorded in the book denies, naming the reason and the flow.
  v1::ConsentChange c;
  c.set_nhs_number("9000000009");
  c.mutable_recorded()->set_id("d1");
  c.mutable_recorded()->set_kind(v1::DIRECTIVE_KIND_DISSENT);
  c.mutable_recorded()->set_purpose(v1::PURPOSE_DIRECT_CARE);
  ASSERT_TRUE(book_.Apply(c).ok());
  auto denied = Admit(*config_, *care_, book_, entries_, OrgCode("RR8"), r, absl::FromUnixSeconds(1'800'000'000), &denial_);
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(denied.status()), "CONSENT_DISSENT");
  EXPECT_EQ(denied.status().message(), "denied: CONSENT_DISSENT under DSA-ACUTE-TO-SOCIAL-CARE v1.1 flow admission-and-discharge");
}

TEST(Shapes, WorkflowsAndPurposes) {
  EXPECT_TRUE(IsWorkflowShape("HOSPITAL_DISCHARGE"));
  EXPECT_TRUE(IsWorkflowShape("CLD_RETURN"));
  EXPECT_TRUE(IsWorkflowShape("A1"));
  EXPECT_FALSE(IsWorkflowShape("_A"));
  EXPECT_FALSE(IsWorkflowShape(std::string(65, 'A')));
  EXPECT_TRUE(IsPurposeShape("direct-care"));
  EXPECT_TRUE(IsPurposeShape("safeguarding"));
  EXPECT_FALSE(IsPurposeShape("-care"));
  EXPECT_FALSE(IsPurposeShape("care-"));
  EXPECT_FALSE(IsPurposeShape("Care"));
}

// Care records arriving in adapter formats, leaving in each recipient's
// format, and addressed by route.
class AdapterIntakeTest : public IntakeTest {
 protected:
  void SetUp() override {
    IntakeTest::SetUp();
    auto c = Parse("{max_message_bytes: 100000, memory_budget_bytes: 1000000}", "deploy/agreements", R"(organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire, kind: local_authority, receives: council-json}
  - {ods: "511", name: Another council, kind: local_authority, receives: cld, receives_by_workflow: {HOSPITAL_DISCHARGE: hl7v2}}
  - {ods: Y06601, name: A practice, kind: gp_practice, receives: fhir}
  - {ods: A81001, name: Another practice, kind: gp_practice, receives: fhir, receives_by_workflow: {CARE_PACKAGE: council-json}}
routing:
  postcode_districts: {LS1: "503"}
  gp_practice_councils: {A81001: "511"}
)");
    ASSERT_TRUE(c.ok()) << c.status();
    config_ = *c;
  }

  static v1::SendRequest Hl7(const std::string& file, const std::string& recipient, const std::string& route = "") {
    v1::SendRequest r;
    r.set_recipient(recipient);
    r.set_route(route);
    r.set_workflow("HOSPITAL_DISCHARGE");
    r.set_purpose("direct-care");
    r.set_content_type("x-application/hl7-v2+er7");
    r.set_payload(adapters::Testdata("hl7v2/" + file));
    return r;
  }

  absl::StatusOr<Admitted> Send(const v1::SendRequest& r, const char* sender = "RR8") {
    return Admit(*config_, *care_, book_, entries_, OrgCode(sender), r, t0_, &denial_);
  }
};

TEST_F(AdapterIntakeTest, Hl7InCouncilJsonOutMinimised) {
  auto a = Send(Hl7("adt_a03.hl7", "503"));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->message.content_type, "application/vnd.carebroker.council+json");
  auto back = adapters::Parse(adapters::Format::kCouncilJson, a->message.payload);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->person().nhs_number(), "9990000018");
  EXPECT_EQ(back->events(0).discharge().discharge_destination(), "54");
  EXPECT_EQ(back->person().local_identifiers_size(), 0) << "not in the flow's fields";
  EXPECT_EQ(back->person().ethnicity(), "");
  EXPECT_THAT(a->withheld_fields, ::testing::Contains("person.local_identifiers"));
  EXPECT_EQ(a->message.subject, "9990000018");
  EXPECT_EQ(a->message.digest, Sha256(adapters::Testdata("hl7v2/adt_a03.hl7"))) << "digest of what was sent";
}

TEST_F(AdapterIntakeTest, EachRecipientGetsItsOwnFormatPerWorkflow) {
  auto fhir = Send(Hl7("adt_a03.hl7", "Y06601"));
  ASSERT_TRUE(fhir.ok()) << fhir.status();
  EXPECT_EQ(fhir->message.content_type, "application/fhir+json");
  auto bundle = adapters::Parse(adapters::Format::kFhir, fhir->message.payload);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->person().nhs_number(), "9990000018");
  EXPECT_THAT(fhir->message.payload, ::testing::HasSubstr(fhir->message.id.str().substr(0, 8)));
  auto hl7 = Send(Hl7("adt_a03.hl7", "511"));  // 511 takes CLD, but HL7 for discharges
  ASSERT_TRUE(hl7.ok()) << hl7.status();
  EXPECT_EQ(hl7->message.content_type, "x-application/hl7-v2+er7");
  EXPECT_EQ(adapters::Parse(adapters::Format::kHl7v2, hl7->message.payload)->events(0).reference(),
            hl7->message.id.str());
}

TEST_F(AdapterIntakeTest, ARecordTheRecipientsFormatCannotCarryIsRefused) {
  v1::SendRequest r;
  r.set_recipient("Y06601");
  r.set_workflow("CARE_PACKAGE");
  r.set_purpose("direct-care");
  r.set_content_type("application/vnd.carebroker.council+json");
  r.set_payload(adapters::Testdata("council/care_package.json"));
  auto refused = Send(r, "503");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ReasonOf(refused.status()), "FORMAT_UNSUPPORTED");
  EXPECT_THAT(refused.status().message(), ::testing::HasSubstr("Y06601 receives fhir for CARE_PACKAGE"));
  r.set_recipient("A81001");  // fhir, but council JSON for care packages
  auto ok = Send(r, "503");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->message.content_type, "application/vnd.carebroker.council+json");
}

TEST_F(AdapterIntakeTest, RoutesResolveFromTheRecord) {
  auto by_postcode = Send(Hl7("adt_a03.hl7", "", "council-of-residence"));  // LS1 4AP
  ASSERT_TRUE(by_postcode.ok()) << by_postcode.status();
  EXPECT_EQ(by_postcode->message.recipient.str(), "503");
  v1::SendReceipt receipt;
  FillReceipt(*by_postcode, &receipt);
  EXPECT_EQ(receipt.recipient(), "503");
  auto to_gp = Send(Hl7("adt_a03.hl7", "", "registered-gp"));
  ASSERT_TRUE(to_gp.ok()) << to_gp.status();
  EXPECT_EQ(to_gp->message.recipient.str(), "Y06601");
  // Postcode district not listed: the GP practice's council.
  v1::SendRequest r = Hl7("adt_a03.hl7", "", "council-of-residence");
  std::string payload = r.payload();
  payload.replace(payload.find("LS1 4AP"), 7, "YO1 7HH");
  payload.replace(payload.find("^^Y06601"), 8, "^^A81001");
  r.set_payload(payload);
  auto by_gp = Send(r);
  ASSERT_TRUE(by_gp.ok()) << by_gp.status();
  EXPECT_EQ(by_gp->message.recipient.str(), "511");
}

TEST_F(AdapterIntakeTest, RoutingFailuresAreClear) {
  v1::SendRequest nowhere = Hl7("adt_a03.hl7", "", "council-of-residence");
  std::string payload = nowhere.payload();
  payload.replace(payload.find("LS1 4AP"), 7, "YO1 7HH");
  nowhere.set_payload(payload);
  auto unroutable = Send(nowhere);
  EXPECT_EQ(ReasonOf(unroutable.status()), "UNROUTABLE");
  EXPECT_EQ(unroutable.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(unroutable.status().message(), ::testing::Not(::testing::HasSubstr("YO1")));
  EXPECT_EQ(ReasonOf(Send(Hl7("adt_a03.hl7", "503", "council-of-residence")).status()), "ROUTE_CONFLICT");
  EXPECT_EQ(ReasonOf(Send(Hl7("adt_a03.hl7", "", "nearest-hospital")).status()), "ROUTE_UNKNOWN");
  v1::SendRequest opaque = Hl7("adt_a03.hl7", "", "council-of-residence");
  opaque.set_content_type("application/pdf");
  EXPECT_EQ(ReasonOf(Send(opaque).status()), "ROUTE_NEEDS_RECORD");
  EXPECT_EQ(ReasonOf(Send(Hl7("adt_a03.hl7", "", "")).status()), "RECIPIENT_INVALID");
}

TEST_F(AdapterIntakeTest, AnAgreementAcceptingUnverifiedNumbersLetsAFailingOneThrough) {
  // The hospital-to-council agreement, with its flow accepting unverified NHS numbers.
  const std::filesystem::path agreements = dir_ / "lenient";
  std::filesystem::create_directories(agreements);
  std::string yaml = adapters::ReadOrDie(Source() + "/deploy/agreements/hospital-to-council.yaml");
  yaml.replace(yaml.find("    consent: implied"), 0, "    accept_unverified_nhs_number: true\n");
  std::ofstream(agreements / "a.yaml") << yaml;
  auto lenient = policy::PolicySet::Load(agreements.string());
  ASSERT_TRUE(lenient.ok()) << lenient.status();

  const v1::SendRequest bad = Hl7("bad_nhs_number.hl7", "503");
  EXPECT_EQ(ReasonOf(Send(bad).status()), "NHS_NUMBER_INVALID") << "the usual agreements refuse it";
  auto a = Admit(*config_, **lenient, book_, entries_, OrgCode("RR8"), bad, t0_, &denial_);
  ASSERT_TRUE(a.ok()) << a.status();
  auto stored = adapters::Parse(adapters::Format::kCouncilJson, a->message.payload, {.keep_invalid_nhs_numbers = true});
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->person().nhs_number(), "9990000019") << "kept as sent, for the recipient to trace";
}

TEST_F(AdapterIntakeTest, AdapterErrorsReachTheSenderPrecisely) {
  auto bad_nhs = Send(Hl7("bad_nhs_number.hl7", "503"));
  EXPECT_EQ(ReasonOf(bad_nhs.status()), "NHS_NUMBER_INVALID");
  EXPECT_THAT(bad_nhs.status().message(), ::testing::HasSubstr("PID-3 repetition 1"));
  v1::SendRequest broken = Hl7("adt_a03.hl7", "503");
  broken.set_payload("MSH|^~\\&|PAS|RR8|CB|503|20261122||ORU^R01|1|P|2.4\rPID|||x\r");
  EXPECT_EQ(ReasonOf(Send(broken).status()), "HL7_UNSUPPORTED");
  v1::SendRequest fhir = Hl7("adt_a03.hl7", "503");
  fhir.set_content_type("application/fhir+json; fhirVersion=4.0");
  fhir.set_payload("{\"resourceType\":\"Observation\"}");
  EXPECT_EQ(ReasonOf(Send(fhir).status()), "FHIR_UNSUPPORTED");
}

}  // namespace
}  // namespace carebroker
