// Policy through the real server: the shipped agreements (deploy/agreements)
// loaded by the real validator, consent recorded through the Consent
// service, and every check made on the bytes the recipient receives.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "broker/client/client.h"
#include "broker/exchange/intake.h"
#include "carebroker/v1/consent.grpc.pb.h"
#include "carebroker/v1/operations.grpc.pb.h"
#include "carebroker/v1/policy.grpc.pb.h"
#include "carebroker/v1/record.pb.h"
#include "policy/minimise.h"
#include "broker/cli/audit/audit_cli.h"
#include "tests/integration/harness.h"
#include "tests/integration/policy_fixture.h"
#include <sqlite3.h>
#include <nlohmann/json.hpp>
#include <sstream>

namespace carebroker::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST_F(PolicyTest, NoAgreementDeniesAndStoresNothing) {
  grpc::Status s = Send(*trust_, CareSend("Y06601", "HOSPITAL_DISCHARGE", "research"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "NO_AGREEMENT");
  EXPECT_EQ(s.error_message().find(kNhs), std::string::npos);
  auto gp = StubAs(*broker_, "Y06601");
  Receiver rx(*gp, 10);
  EXPECT_FALSE(rx.Next(absl::Milliseconds(300)).has_value());
}

TEST_F(PolicyTest, FieldsOutsideTheMaskNeverReachTheRecipient) {
  v1::SendReceipt receipt;
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_ADMISSION", "direct-care"), &receipt).ok());
  EXPECT_EQ(receipt.agreement_id(), "DSA-ACUTE-TO-SOCIAL-CARE");
  EXPECT_EQ(receipt.flow(), "admission-and-discharge");
  EXPECT_THAT(receipt.withheld_fields(),
              ElementsAre("events.admission.consultant", "person.death_date", "person.local_identifiers"));
  Receiver rx(*council_, 10);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  const std::string& bytes = d->payload();
  EXPECT_EQ(bytes.find("SYN-MRN-77"), std::string::npos);
  EXPECT_EQ(bytes.find("SYN-CONSULTANT-9"), std::string::npos);
  v1::CareRecord got;
  ASSERT_TRUE(got.ParseFromString(bytes));
  EXPECT_FALSE(got.person().has_death_date());
  EXPECT_EQ(got.person().names(0).family(), "Synthetic");
  EXPECT_EQ(got.events(0).admission().ward(), "W4");
}

TEST_F(PolicyTest, DissentDenies) {
  Record(v1::DIRECTIVE_KIND_DISSENT, "direct-care");
  grpc::Status s = Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "CONSENT_DISSENT");
}

TEST_F(PolicyTest, DissentRecordedWhileWaitingWithholdsAtDelivery) {
  v1::SendReceipt receipt;
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care"), &receipt).ok());
  v1::Directive d = Record(v1::DIRECTIVE_KIND_DISSENT, "direct-care");
  {
    Receiver rx(*council_, 10);
    EXPECT_FALSE(rx.Next(absl::Milliseconds(500)).has_value()) << "delivered despite dissent";
  }
  v1::TrackRequest tr;
  tr.set_message_id(receipt.message_id());
  v1::TrackResponse t;
  ASSERT_TRUE(Call(&v1::Exchange::Stub::Track, *trust_, tr, &t).ok());
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_WITHHELD);
  EXPECT_EQ(t.withheld_reason(), "CONSENT_DISSENT");
  EXPECT_TRUE(t.body_purged());
  EXPECT_THAT(HttpCall(broker_->metrics_port(), "/metrics").body,
              HasSubstr("carebroker_messages_withheld_total{workflow=\"HOSPITAL_DISCHARGE\",reason=\"CONSENT_DISSENT\"} "
                        "1\n"));

  // Once the dissent is withdrawn, new messages flow again.
  v1::Directive out;
  ASSERT_TRUE(Withdraw(d, &out).ok());
  EXPECT_TRUE(out.has_withdrawn_at());
  EXPECT_EQ(Withdraw(d, &out).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care")).ok());
  Receiver rx(*council_, 10);
  EXPECT_TRUE(rx.Next().has_value());
}

// A person whose NHS number is not yet traced: the council records their
// dissent against its own person id, and records sent about them carrying
// that identifier are refused, and withheld at delivery when the wish comes later.
TEST_F(PolicyTest, AWishRecordedByALocalIdentifierAppliesToAPersonNotYetTraced) {
  auto council_consent = v1::Consent::NewStub(ChannelAs(*broker_, "503"));
  auto local = [](const std::string& value) {
    v1::LocalIdentifier l;
    l.set_value(value);
    l.set_assigner("503");
    return l;
  };
  auto record_dissent = [&](const v1::LocalIdentifier& who, v1::Directive* out) {
    v1::RecordRequest req;
    *req.mutable_local_identifier() = who;
    req.set_kind(v1::DIRECTIVE_KIND_DISSENT);
    req.set_purpose("direct-care");
    req.set_source("social work visit");
    req.set_recorded_by("SW Synthetic");
    return Call(&v1::Consent::Stub::Record, *council_consent, req, out);
  };
  auto untraced = [&](const std::string& value, const std::string& nhs = "") {
    v1::CareRecord r = SyntheticCareRecord();
    r.mutable_person()->set_nhs_number(nhs);
    *r.mutable_person()->mutable_local_identifiers(0) = local(value);
    return CareSend("503", "HOSPITAL_DISCHARGE", "direct-care", r);
  };

  v1::Directive dissent;
  grpc::Status s = record_dissent(local("SC-12345"), &dissent);
  ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  EXPECT_EQ(dissent.local_identifier().value(), "SC-12345");
  EXPECT_EQ(dissent.nhs_number(), "");
  EXPECT_EQ(ErrorReason(Send(*trust_, untraced("SC-12345"))), "CONSENT_DISSENT");
  EXPECT_EQ(ErrorReason(Send(*trust_, untraced("SC-12345", kNhs))), "CONSENT_DISSENT")
      << "traced since: the wish recorded before still applies beside the NHS number";
  v1::SendReceipt other;
  ASSERT_TRUE(Send(*trust_, untraced("SC-99999"), &other).ok()) << "another person";

  // Recorded while that one waits: withheld at delivery.
  v1::Directive later;
  ASSERT_TRUE(record_dissent(local("SC-99999"), &later).ok());
  {
    Receiver rx(*council_, 10);
    EXPECT_FALSE(rx.Next(absl::Milliseconds(500)).has_value()) << "delivered despite dissent";
  }
  v1::TrackRequest tr;
  tr.set_message_id(other.message_id());
  v1::TrackResponse t;
  ASSERT_TRUE(Call(&v1::Exchange::Stub::Track, *trust_, tr, &t).ok());
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_WITHHELD);
  EXPECT_EQ(t.withheld_reason(), "CONSENT_DISSENT");

  // Read and withdrawn by the same identifier.
  v1::GetConsentRequest get;
  *get.mutable_local_identifier() = local("SC-12345");
  v1::ConsentState state;
  ASSERT_TRUE(Call(&v1::Consent::Stub::Get, *council_consent, get, &state).ok());
  EXPECT_EQ(state.local_identifier().value(), "SC-12345");
  ASSERT_EQ(state.standing_size(), 1);
  EXPECT_EQ(state.history_size(), 1);
  v1::WithdrawRequest w;
  *w.mutable_local_identifier() = local("SC-12345");
  w.set_directive_id(dissent.id());
  w.set_source("letter");
  w.set_recorded_by("SW Synthetic");
  v1::Directive withdrawn;
  ASSERT_TRUE(Call(&v1::Consent::Stub::Withdraw, *council_consent, w, &withdrawn).ok());
  EXPECT_TRUE(Send(*trust_, untraced("SC-12345")).ok());

  // The log names the assigner, never the identifier itself.
  AuditRun q = AuditCli(*broker_, "ig-officer", {"--format", "json", "query", "--event", "consent-recorded"});
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_THAT(q.out, HasSubstr("the person named by a local identifier of 503"));
  EXPECT_THAT(q.out, ::testing::Not(HasSubstr("SC-12345")));

  // Bad names for a person.
  v1::Directive ignored;
  v1::LocalIdentifier no_assigner;
  no_assigner.set_value("SC-1");
  EXPECT_EQ(ErrorReason(record_dissent(no_assigner, &ignored)), "LOCAL_IDENTIFIER_INVALID");
  EXPECT_EQ(ErrorReason(record_dissent(local("SC 1"), &ignored)), "LOCAL_IDENTIFIER_INVALID");
  v1::RecordRequest both;
  both.set_nhs_number(kNhs);
  *both.mutable_local_identifier() = local("SC-1");
  both.set_kind(v1::DIRECTIVE_KIND_DISSENT);
  both.set_purpose("direct-care");
  both.set_source("x");
  both.set_recorded_by("x");
  EXPECT_EQ(ErrorReason(Call(&v1::Consent::Stub::Record, *council_consent, both, &ignored)), "LOCAL_IDENTIFIER_INVALID");
}

TEST_F(PolicyTest, SafeguardingOverrideNeedsAJustification) {
  Record(v1::DIRECTIVE_KIND_DISSENT, "safeguarding");
  v1::SendRequest req = CareSend("RR8", "SAFEGUARDING_CONCERN", "safeguarding");
  grpc::Status s = Send(*council_, req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "OVERRIDE_JUSTIFICATION_MISSING");
  req.set_justification("Risk of serious harm; strategy meeting held");
  v1::SendReceipt receipt;
  s = Send(*council_, req, &receipt);
  ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  EXPECT_TRUE(receipt.safeguarding_override());
  EXPECT_EQ(receipt.agreement_id(), "DSA-SAFEGUARDING-ADULTS");
  Receiver rx(*trust_, 10);
  EXPECT_TRUE(rx.Next().has_value()) << "an override stands at delivery too";
}

TEST_F(PolicyTest, TheOptOutDoesNotStopAReturnRequiredByLawAndPseudonymsUseTheRecipientsKey) {
  OptOut(true);
  EXPECT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care")).ok());
  ASSERT_TRUE(Send(*council_, CareSend("X26", "CLD_RETURN", "planning")).ok()) << "exempt: required by law";
  auto nhse = StubAs(*broker_, "X26");
  Receiver rx(*nhse, 10);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->payload().find(kNhs), std::string::npos);
  v1::CareRecord got;
  ASSERT_TRUE(got.ParseFromString(d->payload()));
  EXPECT_EQ(got.person().nhs_number(), policy::Pseudonym(kX26Key, kNhs));
  EXPECT_EQ(got.person().birth_date().year(), 1940);
  EXPECT_EQ(got.person().birth_date().month(), 0);
  EXPECT_EQ(got.person().address().postcode(), "LN1");
  EXPECT_EQ(got.person().names_size(), 0);
  ASSERT_TRUE(rx.Ack(d->message_id()));
  rx.Close();

  // Under a flow where the opt-out applies (s251 support, not a legal duty),
  // the same send is refused.
  CldAgreementWithOptOutApplying(dir_.string());
  ASSERT_TRUE(broker_->Reload("test").ok());
  grpc::Status s = Send(*council_, CareSend("X26", "CLD_RETURN", "planning"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "NATIONAL_OPT_OUT");
  OptOut(false);
  EXPECT_TRUE(Send(*council_, CareSend("X26", "CLD_RETURN", "planning")).ok());
}

TEST_F(PolicyTest, ConsentServiceChecksRolesInputsAndKeepsHistory) {
  auto op = v1::Consent::NewStub(ChannelAs(*broker_, "operator"));
  v1::RecordRequest req;
  req.set_nhs_number(kNhs);
  req.set_kind(v1::DIRECTIVE_KIND_DISSENT);
  req.set_purpose("direct-care");
  req.set_source("s");
  req.set_recorded_by("r");
  v1::Directive d;
  grpc::Status s = Call(&v1::Consent::Stub::Record, *op, req, &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "ROLE_NOT_ALLOWED");
  req.set_nhs_number("9434765918");
  s = Call(&v1::Consent::Stub::Record, *gp_consent_, req, &d);
  EXPECT_EQ(ErrorReason(s), "NHS_NUMBER_INVALID");
  EXPECT_EQ(s.error_message().find("9434765918"), std::string::npos);
  req.set_nhs_number(kNhs);
  req.set_purpose("gossip");
  EXPECT_EQ(ErrorReason(Call(&v1::Consent::Stub::Record, *gp_consent_, req, &d)), "PURPOSE_UNKNOWN");
  req.set_purpose("direct-care");
  req.clear_recorded_by();
  EXPECT_EQ(ErrorReason(Call(&v1::Consent::Stub::Record, *gp_consent_, req, &d)), "FIELD_REQUIRED");

  Record(v1::DIRECTIVE_KIND_CONSENT, "research");
  OptOut(true);
  auto ig = v1::Consent::NewStub(ChannelAs(*broker_, "ig-officer"));
  v1::GetConsentRequest g;
  g.set_nhs_number(kNhs);
  v1::ConsentState st;
  ASSERT_TRUE(Call(&v1::Consent::Stub::Get, *ig, g, &st).ok());
  EXPECT_TRUE(st.national_opt_out());
  ASSERT_EQ(st.standing_size(), 1);
  EXPECT_EQ(st.standing(0).recorded_by_org(), "Y06601");
  ASSERT_EQ(st.history_size(), 2);
  EXPECT_TRUE(st.history(0).has_recorded());
  EXPECT_TRUE(st.history(1).national_opt_out());
}

TEST_F(PolicyTest, ConsentSurvivesRestart) {
  Record(v1::DIRECTIVE_KIND_DISSENT, "direct-care");
  auto yaml_dir = agreements_.parent_path();
  broker_.reset();
  broker_ = StartBroker(ConfigYaml((yaml_dir / "data").string(),
                                   absl::StrCat("policy:\n  agreements_dir: ", agreements_.string(),
                                                "\n  pseudonym_keys: [{organisation: X26, file: ",
                                                (yaml_dir / "x26.key").string(), "}]\n")),
                        &SystemClock::Get());
  ASSERT_NE(broker_, nullptr);
  trust_ = StubAs(*broker_, "RR8");
  EXPECT_EQ(ErrorReason(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care"))), "CONSENT_DISSENT");
}

TEST_F(PolicyTest, ReloadIsAllOrNothing) {
  auto op = v1::Policy::NewStub(ChannelAs(*broker_, "operator"));
  v1::ReloadResponse r;
  ASSERT_TRUE(Call(&v1::Policy::Stub::Reload, *op, v1::ReloadRequest(), &r).ok());
  EXPECT_EQ(r.agreements(), 5);
  // A broken file: the reload is refused with file:line and the old set stays.
  std::ofstream(agreements_ / "broken.yaml") << "id: DSA-BROKEN\ntitle: t\nversion: \"1\"\nvalid_from: 2026-01-01\n"
                                                "valid_until: 2026-12-31\nflows: []\n";
  fs::remove(agreements_ / "hospital-to-council.yaml");
  grpc::Status s = Call(&v1::Policy::Stub::Reload, *op, v1::ReloadRequest(), &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("broken.yaml:6: flows: required: at least one flow"));
  EXPECT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care")).ok()) << "old set in force";
  // Fixed: the new set (without the hospital agreement) is swapped in.
  fs::remove(agreements_ / "broken.yaml");
  ASSERT_TRUE(Call(&v1::Policy::Stub::Reload, *op, v1::ReloadRequest(), &r).ok());
  EXPECT_EQ(r.agreements(), 4);
  EXPECT_EQ(ErrorReason(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care"))), "NO_AGREEMENT");
  // Only operators reload.
  auto agency = v1::Policy::NewStub(ChannelAs(*broker_, "RR8"));
  EXPECT_EQ(Call(&v1::Policy::Stub::Reload, *agency, v1::ReloadRequest(), &r).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

// ------------------------------------------------------------- the audit log

TEST_F(PolicyTest, EveryDecisionIsAuditedAndTheLogVerifies) {
  v1::SendReceipt receipt;
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care"), &receipt).ok());
  EXPECT_EQ(Send(*trust_, CareSend("Y06601", "HOSPITAL_DISCHARGE", "research")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_FALSE(SafeguardingOverride().empty());
  {
    Receiver rx(*council_, 10);
    auto d = rx.Next();
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->message_id(), receipt.message_id());
  }
  v1::AckRequest ack;
  ack.add_message_ids(receipt.message_id());
  v1::AckResponse acked;
  ASSERT_TRUE(Call(&v1::Exchange::Stub::Ack, *council_, ack, &acked).ok());

  AuditRun q = AuditCli(*broker_, "ig-officer", {"--format", "json", "query"});
  ASSERT_EQ(q.rc, 0) << q.err;
  EXPECT_EQ(q.out.find(kNhs), std::string::npos) << "no NHS number in clear";
  const auto rows = nlohmann::json::parse(q.out);
  std::vector<std::string> events;
  for (const auto& r : rows) events.push_back(r.at("event"));
  EXPECT_THAT(events, ::testing::ElementsAre("agreements-loaded", "send-accepted", "send-denied", "consent-recorded",
                                             "send-accepted", "delivered", "acknowledged", "audit-query"));
  EXPECT_EQ(rows[1].at("agreement"), "DSA-ACUTE-TO-SOCIAL-CARE v1.1");
  EXPECT_EQ(rows[1].at("message"), receipt.message_id());
  EXPECT_EQ(rows[2].at("reasons"), "NO_AGREEMENT");
  EXPECT_EQ(rows[4].at("override"), "yes");
  EXPECT_EQ(rows[7].at("actor"), "503");

  // The subject access report: both disclosures, what was released, when delivered.
  AuditRun sar = AuditCli(*broker_, "ig-officer", {"--format", "json", "report", "sar", "--nhs-number", kNhs});
  ASSERT_EQ(sar.rc, 0) << sar.err;
  const auto disclosures = nlohmann::json::parse(sar.out);
  ASSERT_EQ(disclosures.size(), 2u);
  EXPECT_EQ(disclosures[0].at("to"), "503");
  EXPECT_THAT(disclosures[0].at("fields_released").get<std::string>(), HasSubstr("person.nhs_number"));
  EXPECT_THAT(disclosures[0].at("fields_released").get<std::string>(), ::testing::Not(HasSubstr("local_identifiers")));
  EXPECT_THAT(disclosures[0].at("legal_basis").get<std::string>(), HasSubstr("Care Act 2014 s74"));
  EXPECT_NE(disclosures[0].at("delivered_at"), "not yet");
  EXPECT_EQ(disclosures[1].at("delivered_at"), "not yet");

  AuditRun ovr = AuditCli(*broker_, "ig-officer", {"--format", "csv", "report", "overrides"});
  ASSERT_EQ(ovr.rc, 0) << ovr.err;
  EXPECT_THAT(ovr.out, HasSubstr("Section 42 enquiry: risk of serious harm"));

  AuditRun v = AuditCli(*broker_, "ig-officer", {"verify"});
  EXPECT_EQ(v.rc, 0) << v.err;
  EXPECT_THAT(v.out, HasSubstr("intact"));
  AuditRun inc = AuditCli(*broker_, "ig-officer", {"prove", "inclusion", "--index", "2"});
  EXPECT_EQ(inc.rc, 0) << inc.err;
  EXPECT_THAT(inc.out, HasSubstr("proven: entry 2 is included in the signed tree of size"));
  AuditRun con = AuditCli(*broker_, "ig-officer", {"prove", "consistency", "--first", "1"});
  EXPECT_EQ(con.rc, 0) << con.err;
  AuditRun far = AuditCli(*broker_, "ig-officer", {"prove", "inclusion", "--index", "999"});
  EXPECT_NE(far.rc, 0);
  EXPECT_THAT(far.err, HasSubstr("PROOF_OUT_OF_RANGE"));
  const std::string file = (dir_ / "log.export").string();
  AuditRun exp = AuditCli(*broker_, "ig-officer", {"export", "--out", file});
  ASSERT_EQ(exp.rc, 0) << exp.err;
  AuditRun offline = AuditCli(*broker_, "ig-officer", {"--export", file, "verify"});
  EXPECT_EQ(offline.rc, 0) << offline.err;

  // Only IG officers may read the log.
  AuditRun refused = AuditCli(*broker_, "RR8", {"query"});
  EXPECT_EQ(refused.rc, 1);
  EXPECT_THAT(refused.err, HasSubstr("PERMISSION_DENIED"));
}

TEST_F(PolicyTest, RefusedCertificatesAndRolesAreAudited) {
  // Refused at the TLS handshake: the call never reaches a service.
  for (const char* who : {"expired", "revoked", "rogue"}) {
    auto stub = v1::Exchange::NewStub(ChannelAs(*broker_, who));
    EXPECT_EQ(Send(*stub, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care")).error_code(),
              grpc::StatusCode::UNAVAILABLE)
        << who;
  }
  // A valid certificate whose role does not allow the call.
  EXPECT_EQ(AuditCli(*broker_, "RR8", {"query"}).rc, 1);
  auto op = v1::Exchange::NewStub(ChannelAs(*broker_, "operator"));
  EXPECT_EQ(Send(*op, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  AuditRun q = AuditCli(*broker_, "ig-officer", {"--format", "json", "query", "--event", "certificate-refused"});
  ASSERT_EQ(q.rc, 0) << q.err;
  const auto rows = nlohmann::json::parse(q.out);
  std::vector<std::string> reasons;
  for (const auto& r : rows) reasons.push_back(r.at("reasons"));
  // A client may retry a failed handshake, so each handshake refusal may appear more than once.
  EXPECT_THAT(reasons, ::testing::IsSupersetOf({"CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED", "CERTIFICATE_UNTRUSTED",
                                                "ROLE_NOT_ALLOWED"}));
  bool officer_role = false, operator_role = false;
  for (const auto& r : rows) {
    EXPECT_EQ(r.at("event"), "certificate-refused");
    EXPECT_FALSE(r.at("detail").get<std::string>().empty());
    if (r.at("reasons") == "CERTIFICATE_REVOKED") {
      EXPECT_EQ(r.at("actor"), "RH8") << "the organisation the certificate claims";
    }
    if (r.at("reasons") == "ROLE_NOT_ALLOWED") {
      officer_role |= r.at("actor") == "RR8" && r.at("detail").get<std::string>().find("ig-officer") != std::string::npos;
      operator_role |= r.at("detail").get<std::string>().find("agency role") != std::string::npos;
    }
  }
  EXPECT_TRUE(officer_role) << q.out;
  EXPECT_TRUE(operator_role) << q.out;
  EXPECT_EQ(AuditCli(*broker_, "ig-officer", {"verify"}).rc, 0);
}

TEST_F(PolicyTest, SendsAreRefusedWhenTheAuditLogCannotBeWritten) {
  const std::string db = (dir_ / "data" / "carebroker.db").string();
  auto exec = [&](const char* sql) {
    sqlite3* h = nullptr;
    ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    EXPECT_EQ(sqlite3_exec(h, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(h);
    sqlite3_close(h);
  };
  exec("CREATE TRIGGER audit_full BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk full'); END");
  v1::SendRequest req = CareSend("503", "HOSPITAL_DISCHARGE", "direct-care");
  req.set_idempotency_key("adt-fail-closed");
  EXPECT_EQ(Send(*trust_, req).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Send(*trust_, CareSend("Y06601", "HOSPITAL_DISCHARGE", "direct-care")).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "a denial that cannot be audited is not answered as a denial";
  exec("DROP TRIGGER audit_full");
  v1::SendReceipt r;
  ASSERT_TRUE(Send(*trust_, req, &r).ok());
  EXPECT_FALSE(r.duplicate()) << "the refused send stored nothing";
}


// An operator's redirect and resend are new sends from the original sender:
// decided again by the agreements and the person's wishes in force, and
// minimised again for the new recipient.
class OperatorResendTest : public PolicyTest {
 protected:
  void SetUp() override {
    PolicyTest::SetUp();
    ops_ = v1::Operations::NewStub(ChannelAs(*broker_, "operator"));
  }

  // A care record from the trust to the council, rejected by the council.
  std::string SendAndReject() {
    v1::SendReceipt receipt;
    EXPECT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_ADMISSION", "direct-care"), &receipt).ok());
    grpc::Status s = RejectAs(*council_, receipt.message_id(), "UNKNOWN_PATIENT");
    EXPECT_TRUE(s.ok()) << DescribeStatus(s);
    return receipt.message_id();
  }

  grpc::Status Act(v1::MessageAction action, const std::string& id, const std::string& to,
                   v1::MessageActionResponse* out = nullptr, v1::Operations::Stub* stub = nullptr,
                   const std::string& why = "wrong recipient (INC0100)") {
    v1::MessageActionRequest req;
    req.set_message_id(id);
    req.set_action(action);
    req.set_organisation(to);
    req.set_justification(why);
    v1::MessageActionResponse r;
    grpc::Status s = Call(&v1::Operations::Stub::ActOnMessage, stub != nullptr ? *stub : *ops_, req, &r);
    if (out != nullptr) *out = r;
    return s;
  }

  v1::TrackResponse TrackAs(v1::Exchange::Stub& stub, const std::string& id) {
    v1::TrackRequest tr;
    tr.set_message_id(id);
    v1::TrackResponse t;
    grpc::Status s = Call(&v1::Exchange::Stub::Track, stub, tr, &t);
    EXPECT_TRUE(s.ok()) << DescribeStatus(s);
    return t;
  }

  std::unique_ptr<v1::Operations::Stub> ops_;
};

TEST_F(OperatorResendTest, ARedirectIsDecidedAndMinimisedAgainForItsNewRecipientAndLinked) {
  const std::string held = SendAndReject();
  v1::MessageActionResponse r;
  grpc::Status s = Act(v1::MESSAGE_ACTION_REDIRECT, held, "Y06601", &r);
  ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  EXPECT_EQ(r.status(), v1::MESSAGE_STATUS_ACCEPTED);
  const v1::SendReceipt& sent = r.receipt();
  EXPECT_NE(sent.message_id(), held);
  EXPECT_EQ(sent.recipient(), "Y06601");
  EXPECT_EQ(sent.agreement_id(), "DSA-ACUTE-TO-PRIMARY-CARE");
  EXPECT_EQ(sent.flow(), "admission-and-discharge-to-gp");
  EXPECT_THAT(sent.withheld_fields(), ::testing::Contains("person.address")) << "the GP flow does not release it";

  auto gp = StubAs(*broker_, "Y06601");
  Receiver rx(*gp, 10);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), sent.message_id());
  EXPECT_EQ(d->sender(), "RR8") << "sent on the trust's behalf";
  v1::CareRecord got;
  ASSERT_TRUE(got.ParseFromString(d->payload()));
  EXPECT_EQ(got.person().nhs_number(), kNhs);
  EXPECT_FALSE(got.person().has_address());
  EXPECT_EQ(d->payload().find("SYN-CONSULTANT-9"), std::string::npos);
  ASSERT_TRUE(rx.Ack(d->message_id()));
  rx.Close();

  // Linked both ways; the original's body is gone, and only its sender learns the new id.
  v1::TrackResponse t = TrackAs(*trust_, held);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_HELD);
  EXPECT_TRUE(t.body_purged());
  EXPECT_EQ(t.replaced_by(), sent.message_id());
  EXPECT_EQ(TrackAs(*council_, held).replaced_by(), "");
  EXPECT_EQ(TrackAs(*trust_, sent.message_id()).replaces(), held);

  // Once only; and a release of the original is refused now.
  EXPECT_EQ(ErrorReason(Act(v1::MESSAGE_ACTION_REDIRECT, held, "511")), "MESSAGE_NOT_RESENDABLE");
  EXPECT_EQ(ErrorReason(Act(v1::MESSAGE_ACTION_RELEASE, held, "")), "MESSAGE_NOT_HELD");

  // Refused by the policy: nothing is stored and the original stays held with its body.
  const std::string second = SendAndReject();
  s = Act(v1::MESSAGE_ACTION_REDIRECT, second, "RH8");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "NO_AGREEMENT");
  EXPECT_EQ(s.error_message().find(kNhs), std::string::npos);
  t = TrackAs(*trust_, second);
  EXPECT_EQ(t.status(), v1::MESSAGE_STATUS_HELD);
  EXPECT_FALSE(t.body_purged());
  EXPECT_EQ(t.replaced_by(), "");
  EXPECT_EQ(ErrorReason(Act(v1::MESSAGE_ACTION_REDIRECT, second, "999")), "UNKNOWN_RECIPIENT");

  // Bad requests, and callers without the operator role.
  EXPECT_EQ(ErrorReason(Act(v1::MESSAGE_ACTION_REDIRECT, second, "503")), "REDIRECT_SAME_RECIPIENT");
  EXPECT_EQ(ErrorReason(Act(v1::MESSAGE_ACTION_REDIRECT, second, "")), "RECIPIENT_INVALID");
  EXPECT_EQ(ErrorReason(Act(v1::MESSAGE_ACTION_RESEND, second, "511")), "RECIPIENT_INVALID");
  EXPECT_EQ(ErrorReason(Act(v1::MESSAGE_ACTION_REDIRECT, second, "511", nullptr, nullptr, " ")),
            "JUSTIFICATION_INVALID");
  auto agency = v1::Operations::NewStub(ChannelAs(*broker_, "RR8"));
  s = Act(v1::MESSAGE_ACTION_REDIRECT, second, "511", nullptr, agency.get());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "ROLE_NOT_ALLOWED");
  EXPECT_EQ(TrackAs(*trust_, second).replaced_by(), "") << "none of it acted";
}

// The stored copy of a message about a person not yet traced no longer
// carries their hospital number (the agreement withholds local
// identifiers), yet a resend is decided by the wishes recorded under it.
TEST_F(OperatorResendTest, AResendConsultsTheWishesUnderTheOriginalsLocalIdentifiers) {
  v1::CareRecord r = SyntheticCareRecord();
  r.mutable_person()->clear_nhs_number();
  r.mutable_person()->mutable_local_identifiers(0)->set_value("MRN-0042");
  r.mutable_person()->mutable_local_identifiers(0)->set_assigner("RR8");
  v1::SendReceipt receipt;
  ASSERT_TRUE(Send(*trust_, CareSend("503", "HOSPITAL_ADMISSION", "direct-care", r), &receipt).ok());
  ASSERT_TRUE(RejectAs(*council_, receipt.message_id(), "UNKNOWN_PATIENT").ok());
  v1::RecordRequest req;
  req.mutable_local_identifier()->set_value("MRN-0042");
  req.mutable_local_identifier()->set_assigner("RR8");
  req.set_kind(v1::DIRECTIVE_KIND_DISSENT);
  req.set_purpose("direct-care");
  req.set_source("ward conversation");
  req.set_recorded_by("Nurse Synthetic");
  v1::Directive d;
  ASSERT_TRUE(Call(&v1::Consent::Stub::Record, *v1::Consent::NewStub(ChannelAs(*broker_, "RR8")), req, &d).ok());
  grpc::Status s = Act(v1::MESSAGE_ACTION_RESEND, receipt.message_id(), "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "CONSENT_DISSENT");
}

TEST_F(OperatorResendTest, AResendIsDecidedAgainstTheWishesInForceNow) {
  const std::string held = SendAndReject();
  v1::Directive dissent = Record(v1::DIRECTIVE_KIND_DISSENT, "direct-care");
  grpc::Status s = Act(v1::MESSAGE_ACTION_RESEND, held, "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "CONSENT_DISSENT");
  EXPECT_FALSE(TrackAs(*trust_, held).body_purged()) << "refused: left as it was";

  v1::Directive out;
  ASSERT_TRUE(Withdraw(dissent, &out).ok());
  v1::MessageActionResponse r;
  s = Act(v1::MESSAGE_ACTION_RESEND, held, "", &r, nullptr, "patient registered (INC0101)");
  ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  EXPECT_EQ(r.receipt().recipient(), "503");
  EXPECT_EQ(r.receipt().flow(), "admission-and-discharge");
  Receiver rx(*council_, 10);
  auto d = rx.Next();
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->message_id(), r.receipt().message_id());
  EXPECT_EQ(TrackAs(*council_, d->message_id()).replaces(), held);
  ASSERT_TRUE(rx.Ack(d->message_id()));
  rx.Close();

  // The audit report: the resend with its justification and new message;
  // the refused one is the SEND_DENIED of the send it would have been.
  AuditRun report = AuditCli(*broker_, "ig-officer", {"--format", "json", "report", "operator-actions"});
  ASSERT_EQ(report.rc, 0) << report.err;
  const auto actions = nlohmann::json::parse(report.out);
  ASSERT_EQ(actions.size(), 1u) << report.out;
  EXPECT_EQ(actions[0].at("operator"), "X26");
  EXPECT_EQ(actions[0].at("action"), "resend");
  EXPECT_EQ(actions[0].at("message"), held);
  EXPECT_EQ(actions[0].at("justification"), "patient registered (INC0101)");
  EXPECT_EQ(actions[0].at("detail"), absl::StrCat("as message ", d->message_id(), " to 503"));
}

}  // namespace
}  // namespace carebroker::testing
