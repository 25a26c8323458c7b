// The MESH front door for real: a broker with mesh.listen on a loopback
// port, requests made with libcurl over HTTPS with mutual TLS and the dev
// PKI, each as NHSDigital's OpenAPI specification (mesh-api.yaml) writes it:
// the NHSMESH token, Accept for the API version, the mex-* headers. What
// NHSDigital's own nhs-mesh-client does is driven by tests/mesh/client.mjs.
// Time is a FakeClock; tokens are stamped with it.
#include <curl/curl.h>
#include <grpcpp/channel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "adapters/common/csv.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "broker/client/client.h"
#include "carebroker/v1/consent.grpc.pb.h"
#include "tests/integration/harness.h"

namespace carebroker::testing {
namespace {

using Json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr char kSecret[] = "TestSharedSecret";
constexpr char kV2[] = "application/vnd.mesh.v2+json";

struct Reply {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  Json json() const { return Json::parse(body, nullptr, false); }
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? "" : it->second;
  }
  std::string reason() const {
    const Json j = json();
    if (j.contains("detail") && j["detail"].is_array() && !j["detail"].empty()) return j["detail"][0].value("reason", "");
    return j.value("reason", "");
  }
  std::string code() const {
    const Json j = json();
    if (j.contains("detail") && j["detail"].is_array() && !j["detail"].empty()) return j["detail"][0].value("code", "");
    return j.value("errorCode", "");
  }
};

void WriteSecret(const std::string& path, const std::string& value) {
  std::ofstream(path) << value << "\n";
  ::chmod(path.c_str(), 0600);
}

class MeshApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    clock_ = std::make_unique<FakeClock>(absl::Now());
    dir_ = TempDir("mesh");
    WriteSecret(dir_ + "/secret", kSecret);
    for (const char* mb : {"RR8HC001", "503HC001", "503HC002", "RH8HC001", "X26HC001"}) {
      WriteSecret(absl::StrCat(dir_, "/", mb, ".pw"), absl::StrCat("pw-", mb));
    }
    const std::string mesh = absl::StrCat(R"(
mesh:
  listen: "127.0.0.1:0"
  shared_secret_file: )", dir_, R"(/secret
  workflows:
    - {id: TOC_FHIR_IP_DISCH, workflow: HOSPITAL_DISCHARGE, purpose: direct-care}
    - {id: REFERRAL, purpose: direct-care}
    - {id: API-DOCS-TEST, workflow: W, purpose: direct-care}
    - {id: NOT_AGREED, workflow: CARE_ASSESSMENT, purpose: direct-care}
    - {id: DISCHARGE_SUMMARY, purpose: direct-care}
    - {id: CLD_RETURN, purpose: planning}
  mailboxes:
    - {id: RR8HC001, organisation: RR8, password_file: )", dir_, R"(/RR8HC001.pw}
    - {id: 503HC001, organisation: "503", name: Council social care, password_file: )", dir_,
                                          R"(/503HC001.pw, workflows: [TOC_FHIR_IP_DISCH]}
    - {id: 503HC002, organisation: "503", password_file: )", dir_, R"(/503HC002.pw, workflows: [REFERRAL]}
    - {id: RH8HC001, organisation: RH8, password_file: )", dir_, R"(/RH8HC001.pw}
    - {id: X26HC001, organisation: X26, password_file: )", dir_, R"(/X26HC001.pw, workflows: [CLD_RETURN]}
)");
    broker_ = StartBroker(ConfigYaml(dir_ + "/data", mesh + MoreConfig(), Organisations()), clock_.get());
    ASSERT_NE(broker_, nullptr);
    ASSERT_GT(broker_->mesh_port(), 0);
  }

  // For a fixture of its own: more config and other organisations.
  virtual std::string MoreConfig() { return ""; }
  virtual std::string Organisations() { return ""; }

  std::string Token(const std::string& mailbox, absl::Time at, const std::string& secret = kSecret,
                    const std::string& password = "") {
    return MeshToken(secret, mailbox, password.empty() ? absl::StrCat("pw-", mailbox) : password,
                     absl::StrCat("a1b2c3d4-0000-4000-8000-", ++nonce_), at);
  }

  // One request as `cert` (a dev PKI name), authenticated as `mailbox`
  // unless `authorization` is given ("-" for none).
  Reply Call(const std::string& method, const std::string& path, const std::string& cert, const std::string& mailbox,
             std::vector<std::string> headers = {}, const std::string& body = "", const std::string& accept = kV2,
             const std::string& authorization = "") {
    std::vector<std::string> h;
    if (!accept.empty()) h.push_back(absl::StrCat("accept: ", accept));
    const std::string auth = authorization.empty() ? Token(mailbox, clock_->Now()) : authorization;
    if (auth != "-") h.push_back(absl::StrCat("authorization: ", auth));
    h.insert(h.end(), {"mex-clientversion: ApiDocs==0.0.1", "mex-osname: Linux", "mex-osversion: #44~18.04.2-Ubuntu"});
    h.insert(h.end(), headers.begin(), headers.end());
    HttpsReply r = HttpsCall(broker_->mesh_port(), method, path, cert, h, body);
    return Reply{r.status, std::move(r.headers), std::move(r.body)};
  }

  // A send from RR8HC001 (the trust) to `to` on `workflow`; the reply.
  Reply SendFromTrust(const std::string& to, const std::string& workflow, const std::string& body = "{\"n\":1}",
                      std::vector<std::string> extra = {}) {
    std::vector<std::string> h = {"mex-to: " + to, "mex-workflowid: " + workflow, "content-type: application/json"};
    h.insert(h.end(), extra.begin(), extra.end());
    return Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001", h, body);
  }

  std::string SentId(const Reply& r) {
    EXPECT_EQ(r.status, 202) << r.body;
    return r.json().value("message_id", "");
  }

  std::vector<std::string> Inbox(const std::string& cert, const std::string& mailbox, const std::string& query = "") {
    Reply r = Call("GET", absl::StrCat("/messageexchange/", mailbox, "/inbox", query), cert, mailbox);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json().value("messages", std::vector<std::string>{});
  }

  // The synthetic person (9990000018, in the HL7 and document fixtures)
  // records dissent from direct-care sharing, at their GP practice.
  void RecordDissent() {
    auto consent = v1::Consent::NewStub(ChannelAs(*broker_, "Y06601"));
    v1::RecordRequest dissent;
    dissent.set_nhs_number("9990000018");
    dissent.set_kind(v1::DIRECTIVE_KIND_DISSENT);
    dissent.set_purpose("direct-care");
    dissent.set_source("GP consultation");
    dissent.set_recorded_by("Dr Synthetic");
    v1::Directive d;
    grpc::Status s = carebroker::testing::Call(&v1::Consent::Stub::Record, *consent, dissent, &d);
    ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  }

  std::unique_ptr<FakeClock> clock_;
  std::string dir_;
  std::unique_ptr<Broker> broker_;
  int nonce_ = 0;
};

TEST_F(MeshApiTest, HandshakeThenEachTokenOnceWithinTwoHoursMadeWithTheSecretAndPassword) {
  Reply ok = Call("POST", "/messageexchange/RR8HC001", "RR8", "RR8HC001");
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json().value("mailbox_id", ""), "RR8HC001");
  // A GET handshake too (nhs-mesh-client uses GET).
  EXPECT_EQ(Call("GET", "/messageexchange/RR8HC001", "RR8", "RR8HC001").status, 200);

  const std::string token = Token("RR8HC001", clock_->Now());
  EXPECT_EQ(Call("POST", "/messageexchange/RR8HC001", "RR8", "", {}, "", kV2, token).status, 200);
  Reply reused = Call("POST", "/messageexchange/RR8HC001", "RR8", "", {}, "", kV2, token);
  EXPECT_EQ(reused.status, 403);
  EXPECT_EQ(reused.reason(), "MESH_TOKEN_REUSED");
  EXPECT_THAT(reused.body, ::testing::Not(HasSubstr(token.substr(8))));

  Reply stale = Call("POST", "/messageexchange/RR8HC001", "RR8", "", {}, "", kV2,
                     Token("RR8HC001", clock_->Now() - absl::Hours(2) - absl::Minutes(2)));
  EXPECT_EQ(stale.status, 403);
  EXPECT_EQ(stale.reason(), "MESH_TOKEN_STALE");
  Reply wrong_secret = Call("POST", "/messageexchange/RR8HC001", "RR8", "", {}, "", kV2,
                            Token("RR8HC001", clock_->Now(), "another-environment"));
  EXPECT_EQ(wrong_secret.reason(), "MESH_TOKEN_INVALID");
  Reply wrong_password = Call("POST", "/messageexchange/RR8HC001", "RR8", "", {}, "", kV2,
                              Token("RR8HC001", clock_->Now(), kSecret, "guess"));
  EXPECT_EQ(wrong_password.reason(), "MESH_TOKEN_INVALID");
  Reply none = Call("POST", "/messageexchange/RR8HC001", "RR8", "", {}, "", kV2, "-");
  EXPECT_EQ(none.status, 403);
  EXPECT_EQ(none.reason(), "MESH_TOKEN_INVALID");
  Reply other_mailbox_token = Call("POST", "/messageexchange/RR8HC001", "RR8", "", {}, "", kV2,
                                   Token("RH8HC001", clock_->Now()));
  EXPECT_EQ(other_mailbox_token.reason(), "MESH_MAILBOX_MISMATCH");
  Reply unknown = Call("POST", "/messageexchange/ZZZHC001", "RR8", "ZZZHC001");
  EXPECT_EQ(unknown.status, 403);
  EXPECT_EQ(unknown.reason(), "MESH_MAILBOX_UNKNOWN");
}

TEST_F(MeshApiTest, OnlyAnAgencyCertificateUsesTheMeshApi) {
  // The IG officer's certificate is 503's, with a good token for 503's mailbox.
  Reply r = Call("GET", "/messageexchange/503HC001/inbox", "ig-officer", "503HC001");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.reason(), "ROLE_NOT_ALLOWED");
}

TEST_F(MeshApiTest, AMailboxOfAnotherOrganisationIsRefusedAndAudited) {
  // The trust's certificate with a valid token for the council's mailbox.
  Reply r = Call("GET", "/messageexchange/503HC001/inbox", "RR8", "503HC001");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.reason(), "MESH_MAILBOX_NOT_YOURS");
  Reply send = Call("POST", "/messageexchange/503HC001/outbox", "RR8", "503HC001",
                    {"mex-to: RR8HC001", "mex-workflowid: REFERRAL"}, "{}");
  EXPECT_EQ(send.status, 403);
  AuditRun q = AuditCli(*broker_, "ig-officer", {"--format", "json", "query", "--event", "certificate-refused"});
  ASSERT_EQ(q.rc, 0) << q.err;
  const Json rows = Json::parse(q.out);
  int refused = 0;
  for (const auto& row : rows) {
    if (row.value("reasons", "") == "MESH_MAILBOX_NOT_YOURS") {
      ++refused;
      EXPECT_EQ(row.value("actor", ""), "RR8");
    }
  }
  EXPECT_EQ(refused, 2);
}

TEST_F(MeshApiTest, SendListHeadDownloadAcknowledgeTrack) {
  const std::string id =
      SentId(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", "{\"discharge\":true}",
                           {"mex-subject: Discharge summary", "mex-localid: LOCAL-0001", "mex-filename: discharge.json",
                            "mex-partnerid: partner-7", "mex-content-checksum: md5:abc123"}));
  ASSERT_EQ(id.size(), 32u);

  // The council's discharge mailbox has it; its referrals mailbox does not.
  EXPECT_THAT(Inbox("503", "503HC001"), ElementsAre(id));
  EXPECT_THAT(Inbox("503", "503HC002"), IsEmpty());
  Reply count = Call("GET", "/messageexchange/503HC001/count", "503", "503HC001");
  EXPECT_EQ(count.json().value("count", -1), 1);
  Reply inbox = Call("GET", "/messageexchange/503HC001/inbox", "503", "503HC001");
  EXPECT_EQ(inbox.json()["approx_inbox_count"], 1);
  EXPECT_EQ(inbox.json()["links"].value("self", ""), "/messageexchange/503HC001/inbox?max_results=500");
  EXPECT_FALSE(inbox.json()["links"].contains("next"));

  Reply head = Call("HEAD", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("mex-messagetype"), "DATA");
  EXPECT_EQ(head.header("mex-from"), "RR8HC001");
  EXPECT_EQ(head.header("mex-to"), "503HC001");
  Reply track = Call("GET", "/messageexchange/RR8HC001/outbox/tracking?messageID=" + id, "RR8", "RR8HC001");
  EXPECT_EQ(track.json().value("carebroker_status", ""), "MESSAGE_STATUS_ACCEPTED") << "HEAD delivers nothing";

  Reply got = Call("GET", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001");
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, "{\"discharge\":true}");
  EXPECT_EQ(got.header("mex-messageid"), id);
  EXPECT_EQ(got.header("mex-workflowid"), "TOC_FHIR_IP_DISCH");
  EXPECT_EQ(got.header("mex-subject"), "Discharge summary");
  EXPECT_EQ(got.header("mex-localid"), "LOCAL-0001");
  EXPECT_EQ(got.header("mex-filename"), "discharge.json");
  EXPECT_EQ(got.header("mex-partnerid"), "partner-7");
  EXPECT_EQ(got.header("mex-content-checksum"), "md5:abc123");
  EXPECT_EQ(got.header("mex-statussuccess"), "SUCCESS");
  EXPECT_EQ(got.header("mex-statuscode"), "00");
  EXPECT_EQ(got.header("carebroker-sender"), "RR8");
  EXPECT_THAT(got.header("content-type"), HasSubstr("application/json"));

  // Another mailbox of the same organisation cannot reach it; nor an unknown id.
  EXPECT_EQ(Call("GET", "/messageexchange/503HC002/inbox/" + id, "503", "503HC002").status, 404);
  Reply missing = Call("GET", "/messageexchange/503HC001/inbox/00000000000000000000000000000000", "503", "503HC001");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.code(), "20");
  EXPECT_EQ(Call("GET", "/messageexchange/503HC001/inbox/" + id + "/2", "503", "503HC001").status, 404);

  Reply ack = Call("PUT", "/messageexchange/503HC001/inbox/" + id + "/status/acknowledged", "503", "503HC001");
  EXPECT_EQ(ack.status, 200) << ack.body;
  EXPECT_THAT(Inbox("503", "503HC001"), IsEmpty());
  EXPECT_EQ(Call("GET", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001").status, 410);
  // Acknowledging again is not an error.
  EXPECT_EQ(Call("PUT", "/messageexchange/503HC001/inbox/" + id + "/status/acknowledged", "503", "503HC001").status,
            200);

  track = Call("GET", "/messageexchange/RR8HC001/outbox/tracking?messageID=" + id, "RR8", "RR8HC001");
  EXPECT_EQ(track.status, 200);
  const Json t = track.json();
  EXPECT_EQ(t.value("status", ""), "acknowledged");
  EXPECT_EQ(t.value("workflow_id", ""), "TOC_FHIR_IP_DISCH");
  EXPECT_EQ(t.value("local_id", ""), "LOCAL-0001");
  EXPECT_EQ(t.value("recipient_ods_code", ""), "503");
  EXPECT_EQ(t.value("delivery_count", 0), 1);
  // Only the sender tracks its messages.
  EXPECT_EQ(Call("GET", "/messageexchange/503HC001/outbox/tracking?messageID=" + id, "503", "503HC001").status, 404);
}

TEST_F(MeshApiTest, VersionOneShapesWhenAcceptAsksForThem) {
  Reply sent = Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001",
                    {"mex-to: RH8HC001", "mex-workflowid: REFERRAL", "content-type: application/json"}, "{}",
                    "application/json");
  EXPECT_EQ(sent.status, 202);
  const std::string id = sent.json().value("messageID", "");
  ASSERT_FALSE(id.empty()) << sent.body;
  Reply inbox = Call("GET", "/messageexchange/RH8HC001/inbox", "RH8", "RH8HC001", {}, "", "application/vnd.mesh.v1+json");
  EXPECT_EQ(inbox.json()["messages"], Json::array({id}));
  EXPECT_FALSE(inbox.json().contains("links"));
  Reply ack = Call("PUT", "/messageexchange/RH8HC001/inbox/" + id + "/status/acknowledged", "RH8", "RH8HC001", {}, "",
                   "application/json");
  EXPECT_EQ(ack.json().value("messageId", ""), id);
  Reply error = Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001", {"mex-workflowid: REFERRAL"}, "{}",
                     "application/json");
  EXPECT_EQ(error.status, 417);
  EXPECT_EQ(error.json().value("errorCode", ""), "08");
  EXPECT_EQ(error.json().value("errorEvent", ""), "SEND");
  Reply bad_version = Call("GET", "/messageexchange/RH8HC001/inbox", "RH8", "RH8HC001", {}, "",
                           "application/vnd.mesh.v9+json");
  EXPECT_EQ(bad_version.status, 400);
}

TEST_F(MeshApiTest, InboxPagesAndWorkflowFilters) {
  std::vector<std::string> discharges, referrals;
  for (int i = 0; i < 12; ++i) discharges.push_back(SentId(SendFromTrust("RH8HC001", "TOC_FHIR_IP_DISCH")));
  for (int i = 0; i < 3; ++i) referrals.push_back(SentId(SendFromTrust("RH8HC001", "REFERRAL")));
  Reply first = Call("GET", "/messageexchange/RH8HC001/inbox?max_results=10", "RH8", "RH8HC001");
  ASSERT_EQ(first.status, 200);
  const Json page = first.json();
  EXPECT_THAT(page["messages"], SizeIs(10));
  EXPECT_EQ(page["approx_inbox_count"], 15);
  ASSERT_TRUE(page["links"].contains("next")) << first.body;
  const std::string next = page["links"]["next"];
  EXPECT_GE(next.size() - next.find("continue_from=") - 14, 24u) << "MESH's continue_from is 24 characters or more";
  Reply second = Call("GET", next, "RH8", "RH8HC001");
  const Json page2 = second.json();
  EXPECT_THAT(page2["messages"], SizeIs(5));
  EXPECT_FALSE(page2["links"].contains("next"));
  std::vector<std::string> all = page["messages"];
  for (const auto& m : page2["messages"]) all.push_back(m);
  std::vector<std::string> want = discharges;
  want.insert(want.end(), referrals.begin(), referrals.end());
  EXPECT_EQ(all, want) << "oldest first, every message once";

  EXPECT_EQ(Inbox("RH8", "RH8HC001", "?workflow_filter=REFERRAL"), referrals);
  EXPECT_EQ(Inbox("RH8", "RH8HC001", "?workflow_filter=!REFERRAL"), discharges);
  EXPECT_EQ(Inbox("RH8", "RH8HC001", "?workflow_filter=TOC_*"), discharges);
  EXPECT_EQ(Inbox("RH8", "RH8HC001", "?workflow_filter=*FHIR*"), discharges);
  EXPECT_EQ(Inbox("RH8", "RH8HC001", "?workflow_filter=!*FHIR*"), referrals);
  EXPECT_EQ(Call("GET", "/messageexchange/RH8HC001/inbox?workflow_filter=*X", "RH8", "RH8HC001").status, 400);
  EXPECT_EQ(Call("GET", "/messageexchange/RH8HC001/inbox?max_results=9", "RH8", "RH8HC001").status, 400);
  EXPECT_EQ(Call("GET", "/messageexchange/RH8HC001/inbox?continue_from=somebody-elses-cursor-0000", "RH8", "RH8HC001")
                .status,
            400);
}

TEST_F(MeshApiTest, SendHeadersAndBodiesAreCheckedWithMeshErrorCodes) {
  auto refused = [&](const Reply& r, const std::string& code, const std::string& reason) {
    EXPECT_EQ(r.status, 417) << r.body;
    EXPECT_EQ(r.code(), code) << r.body;
    EXPECT_EQ(r.reason(), reason) << r.body;
  };
  refused(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", "{}", {"mex-subject: Discharge for 943 476 5919"}), "06",
          "MESH_HEADER_PERSONAL_DATA");
  refused(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", "{}", {"mex-localid: DOB 01/03/1947"}), "06",
          "MESH_HEADER_PERSONAL_DATA");
  refused(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", "{}", {"mex-subject: " + std::string(501, 'a')}), "06",
          "MESH_HEADER_MALFORMED");
  refused(SendFromTrust("https://x.example", "TOC_FHIR_IP_DISCH"), "06", "MESH_HEADER_MALFORMED");
  refused(SendFromTrust("ZZZHC001", "TOC_FHIR_IP_DISCH"), "12", "MESH_MAILBOX_UNKNOWN");
  refused(SendFromTrust("503HC001", "UNHEARD_OF"), "17", "MESH_WORKFLOW_UNKNOWN");
  refused(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", ""), "02", "PAYLOAD_EMPTY");
  refused(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", "{}", {"mex-chunk-range: 2:3"}), "06", "CHUNK_RANGE_INVALID");
  refused(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", "not gzip", {"content-encoding: gzip"}), "06",
          "PAYLOAD_MALFORMED");
  Reply no_to = Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001", {"mex-workflowid: REFERRAL"}, "{}");
  refused(no_to, "08", "RECIPIENT_INVALID");
  // Nothing refused reached a mailbox.
  EXPECT_THAT(Inbox("503", "503HC001"), IsEmpty());
}

TEST_F(MeshApiTest, EveryMessageIsDecidedByTheAgreementsAndAudited) {
  // No agreement covers CARE_ASSESSMENT: MESH's error 16 with carebroker's reason.
  Reply denied = SendFromTrust("RH8HC001", "NOT_AGREED");
  EXPECT_EQ(denied.status, 417);
  EXPECT_EQ(denied.code(), "16");
  EXPECT_EQ(denied.reason(), "NO_AGREEMENT");
  // An HL7 v2 discharge is read, decided, minimised and rendered: the
  // council receives the released fields only, never the message as sent.
  std::ifstream in(SourcePath("adapters/testdata/hl7v2/adt_a01.hl7"), std::ios::binary);
  const std::string hl7((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(hl7.empty());
  Reply sent = Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001",
                    {"mex-to: 503HC001", "mex-workflowid: TOC_FHIR_IP_DISCH", "mex-content-type: application/hl7-v2"},
                    hl7);
  const std::string id = SentId(sent);
  Reply got = Call("GET", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001");
  ASSERT_EQ(got.status, 200);
  EXPECT_NE(got.body, hl7);
  EXPECT_THAT(got.body, HasSubstr("9990000018"));
  EXPECT_THAT(got.body, ::testing::Not(HasSubstr("JONES")));  // the attending doctor is not released
  AuditRun q = AuditCli(*broker_, "ig-officer", {"--format", "json", "query"});
  ASSERT_EQ(q.rc, 0) << q.err;
  std::vector<std::string> events;
  for (const auto& row : Json::parse(q.out)) {
    const std::string e = row.at("event");
    if (e != "agreements-loaded" && e != "audit-query") events.push_back(e);
  }
  EXPECT_THAT(events, ElementsAre("send-denied", "send-accepted", "delivered"));
}

// A discharge summary as a FHIR DocumentReference naming its person.
std::string DocumentReference(const std::string& nhs_number, bool with_subject = true) {
  Json doc = {{"resourceType", "DocumentReference"},
              {"status", "current"},
              {"content", Json::array({{{"attachment", {{"contentType", "application/pdf"},
                                                         {"data", "JVBERi0xLjQgc3ludGhldGljIGRpc2NoYXJnZSBzdW1tYXJ5"}}}}})}};
  if (with_subject) {
    doc["subject"] = {{"identifier", {{"system", "https://fhir.nhs.uk/Id/nhs-number"}, {"value", nhs_number}}}};
  }
  return doc.dump();
}

TEST_F(MeshApiTest, ADocumentIsCarriedWholeUnderADocumentsFlowAndDecidedByItsPersonsConsent) {
  auto send = [&](const std::string& workflow, const std::string& body) {
    return Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001",
                {"mex-to: 503HC001", "mex-workflowid: " + workflow, "content-type: application/fhir+json",
                 "mex-filename: discharge-summary.json"},
                body);
  };
  const std::string doc = DocumentReference("9990000018");
  const std::string id = SentId(send("DISCHARGE_SUMMARY", doc));
  Reply got = Call("GET", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001");
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, doc) << "a document is never altered";
  EXPECT_THAT(got.header("content-type"), HasSubstr("application/fhir+json"));

  Reply wrong_kind = send("TOC_FHIR_IP_DISCH", doc);
  EXPECT_EQ(wrong_kind.status, 417);
  EXPECT_EQ(wrong_kind.code(), "16");
  EXPECT_EQ(wrong_kind.reason(), "PAYLOAD_KIND_NOT_ALLOWED") << "the care-record flow does not carry documents";
  EXPECT_EQ(send("DISCHARGE_SUMMARY", DocumentReference("9990000019")).reason(), "NHS_NUMBER_INVALID");
  EXPECT_EQ(send("DISCHARGE_SUMMARY", DocumentReference("", false)).reason(), "FHIR_INVALID");

  // A document Bundle, and a PDF behind a JSON manifest, the same way.
  const std::string bundle =
      R"({"resourceType":"Bundle","type":"document","entry":[{"resource":{"resourceType":"Composition",)"
      R"("subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990000018"}}}},)"
      R"({"resource":{"resourceType":"Binary","contentType":"application/pdf","data":"JVBERi0x"}}]})";
  const std::string bundle_id = SentId(send("DISCHARGE_SUMMARY", bundle));
  EXPECT_EQ(Call("GET", "/messageexchange/503HC001/inbox/" + bundle_id, "503", "503HC001").body, bundle);
  auto multipart = [&](const std::string& nhs) {
    const std::string body = "--cb\r\nContent-Type: application/json\r\n\r\n{\"nhs_number\":\"" + nhs +
                             "\"}\r\n--cb\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 synthetic\r\n--cb--\r\n";
    return std::make_pair(body, Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001",
                                     {"mex-to: 503HC001", "mex-workflowid: DISCHARGE_SUMMARY",
                                      "content-type: multipart/mixed; boundary=cb"},
                                     body));
  };
  auto [mp_body, mp_sent] = multipart("9990000018");
  const std::string mp_id = SentId(mp_sent);
  EXPECT_EQ(Call("GET", "/messageexchange/503HC001/inbox/" + mp_id, "503", "503HC001").body, mp_body);
  EXPECT_EQ(multipart("9990000019").second.reason(), "NHS_NUMBER_INVALID");

  RecordDissent();
  Reply denied = send("DISCHARGE_SUMMARY", doc);
  EXPECT_EQ(denied.status, 417);
  EXPECT_EQ(denied.reason(), "CONSENT_DISSENT");
  EXPECT_EQ(multipart("9990000018").second.reason(), "CONSENT_DISSENT") << "the manifest's person decides";
}

TEST_F(MeshApiTest, ADeliveryWithheldBecauseConsentChangedReachesItsSenderAsAReport) {
  std::ifstream in(SourcePath("adapters/testdata/hl7v2/adt_a01.hl7"), std::ios::binary);
  const std::string hl7((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string id = SentId(Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001",
                                     {"mex-to: 503HC001", "mex-workflowid: TOC_FHIR_IP_DISCH",
                                      "mex-content-type: application/hl7-v2", "mex-localid: ADT-77"},
                                     hl7));
  // The person records dissent at their GP while the message waits.
  RecordDissent();

  Reply gone = Call("GET", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001");
  EXPECT_EQ(gone.status, 410);
  EXPECT_EQ(gone.reason(), "CONSENT_DISSENT");
  EXPECT_THAT(Inbox("503", "503HC001"), IsEmpty());
  const std::vector<std::string> reports = Inbox("RR8", "RR8HC001");
  ASSERT_THAT(reports, SizeIs(1));
  Reply report = Call("GET", "/messageexchange/RR8HC001/inbox/" + reports[0], "RR8", "RR8HC001");
  EXPECT_EQ(report.header("mex-messagetype"), "REPORT");
  EXPECT_EQ(report.header("mex-linkedmsgid"), id);
  EXPECT_EQ(report.header("mex-localid"), "ADT-77");
  EXPECT_EQ(report.header("carebroker-reason"), "CONSENT_DISSENT");
  EXPECT_THAT(report.header("mex-statusdescription"), HasSubstr("CONSENT_DISSENT"));
  Reply track = Call("GET", "/messageexchange/RR8HC001/outbox/tracking?messageID=" + id, "RR8", "RR8HC001");
  EXPECT_EQ(track.json().value("status", ""), "undeliverable");
  EXPECT_EQ(track.json().value("carebroker_reason", ""), "CONSENT_DISSENT");
}

TEST_F(MeshApiTest, AMessageItsRecipientRejectedIsGoneFromTheInboxAndItsSenderHasAReport) {
  const std::string id = SentId(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", "{}", {"mex-localid: LOCAL-12"}));
  // The council's gRPC consumer refuses it for good.
  v1::RejectRequest req;
  req.set_message_id(id);
  req.set_code("UNKNOWN_PATIENT");
  req.set_text("no such person on our system");
  v1::RejectResponse resp;
  ASSERT_TRUE(carebroker::testing::Call(&v1::Exchange::Stub::Reject, *StubAs(*broker_, "503"), req, &resp).ok());
  ASSERT_EQ(resp.status(), v1::MESSAGE_STATUS_HELD);

  EXPECT_THAT(Inbox("503", "503HC001"), IsEmpty());
  Reply gone = Call("GET", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001");
  EXPECT_EQ(gone.status, 410);
  EXPECT_THAT(gone.body, HasSubstr("held"));
  const std::vector<std::string> reports = Inbox("RR8", "RR8HC001");
  ASSERT_THAT(reports, SizeIs(1));
  Reply report = Call("GET", "/messageexchange/RR8HC001/inbox/" + reports[0], "RR8", "RR8HC001");
  EXPECT_EQ(report.header("mex-messagetype"), "REPORT");
  EXPECT_EQ(report.header("mex-linkedmsgid"), id);
  EXPECT_EQ(report.header("mex-localid"), "LOCAL-12");
  EXPECT_EQ(report.header("carebroker-reason"), "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(report.header("mex-statusdescription"), "Message rejected by recipient: UNKNOWN_PATIENT");
  Reply track = Call("GET", "/messageexchange/RR8HC001/outbox/tracking?messageID=" + id, "RR8", "RR8HC001");
  EXPECT_EQ(track.json().value("status", ""), "undeliverable");
  EXPECT_EQ(track.json().value("carebroker_status", ""), "MESSAGE_STATUS_HELD");
  EXPECT_EQ(track.json().value("carebroker_reason", ""), "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(track.json().value("carebroker_rejection_text", ""), "no such person on our system");
  EXPECT_THAT(track.json().value("status_description", ""), HasSubstr("UNKNOWN_PATIENT"));
}

TEST_F(MeshApiTest, AMessageDownloadedMaxAttemptsTimesWithoutAnAckIsHeld) {
  const std::string id = SentId(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", "{}"));
  // The default delivery.max_attempts: 10 downloads, never acknowledged.
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(Call("GET", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001").status, 200) << i;
  }
  EXPECT_EQ(Call("GET", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001").status, 410);
  Reply track = Call("GET", "/messageexchange/RR8HC001/outbox/tracking?messageID=" + id, "RR8", "RR8HC001");
  EXPECT_EQ(track.json().value("carebroker_reason", ""), "MAX_ATTEMPTS_REACHED");
  EXPECT_EQ(track.json().value("delivery_count", 0), 10);

  // An operator resends it once the consumer is fixed: a new message in the
  // same inbox, its pass-through headers kept, linked in tracking.
  v1::MessageActionResponse resent;
  grpc::Status s = carebroker::testing::OperatorAct(*broker_, v1::MESSAGE_ACTION_RESEND, id, "",
                                                    "consumer fixed (INC0400)", &resent);
  ASSERT_TRUE(s.ok()) << DescribeStatus(s);
  const std::string again = resent.receipt().message_id();
  EXPECT_THAT(Inbox("503", "503HC001"), ::testing::ElementsAre(again));
  Reply got = Call("GET", "/messageexchange/503HC001/inbox/" + again, "503", "503HC001");
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, "{}");
  EXPECT_EQ(got.header("mex-workflowid"), "TOC_FHIR_IP_DISCH");
  track = Call("GET", "/messageexchange/RR8HC001/outbox/tracking?messageID=" + id, "RR8", "RR8HC001");
  EXPECT_EQ(track.json().value("carebroker_replaced_by", ""), again);
  track = Call("GET", "/messageexchange/RR8HC001/outbox/tracking?messageID=" + again, "RR8", "RR8HC001");
  EXPECT_EQ(track.json().value("carebroker_replaces", ""), id);
}

TEST_F(MeshApiTest, AnExpiredMessageReachesItsSenderAsAMeshReport) {
  const std::string id = SentId(SendFromTrust("503HC001", "TOC_FHIR_IP_DISCH", "{}", {"mex-localid: LOCAL-9"}));
  clock_->Advance(absl::Hours(24 * 5) + absl::Minutes(1));
  auto swept = broker_->SweepNow();
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(swept->reports, 1);
  EXPECT_EQ(Call("GET", "/messageexchange/503HC001/inbox/" + id, "503", "503HC001").status, 410);
  const std::vector<std::string> reports = Inbox("RR8", "RR8HC001");
  ASSERT_THAT(reports, SizeIs(1));
  Reply report = Call("GET", "/messageexchange/RR8HC001/inbox/" + reports[0], "RR8", "RR8HC001");
  EXPECT_EQ(report.status, 200);
  EXPECT_EQ(report.header("mex-messagetype"), "REPORT");
  EXPECT_EQ(report.header("mex-linkedmsgid"), id);
  EXPECT_EQ(report.header("mex-localid"), "LOCAL-9");
  EXPECT_EQ(report.header("mex-workflowid"), "TOC_FHIR_IP_DISCH");
  EXPECT_EQ(report.header("mex-statuscode"), "14");
  EXPECT_EQ(report.header("mex-statussuccess"), "ERROR");
  EXPECT_EQ(report.body, "");
  Reply track = Call("GET", "/messageexchange/RR8HC001/outbox/tracking?messageID=" + id, "RR8", "RR8HC001");
  EXPECT_EQ(track.json().value("status", ""), "undeliverable");
  EXPECT_EQ(track.json().value("status_code", ""), "14");
  EXPECT_EQ(Call("PUT", "/messageexchange/RR8HC001/inbox/" + reports[0] + "/status/acknowledged", "RR8", "RR8HC001")
                .status,
            200);
  EXPECT_THAT(Inbox("RR8", "RR8HC001"), IsEmpty());
}

TEST_F(MeshApiTest, AChunkedMessageIsInvisibleUntilItsLastChunkThenDownloadsChunkByChunk) {
  auto chunk = [&](const std::string& id, int n, const std::string& range, const std::string& body,
                   const std::string& cert = "RR8", const std::string& mailbox = "RR8HC001",
                   std::vector<std::string> extra = {}) {
    std::vector<std::string> h = {"mex-chunk-range: " + range, "content-type: application/pdf"};
    h.insert(h.end(), extra.begin(), extra.end());
    return Call("POST", absl::StrCat("/messageexchange/", mailbox, "/outbox/", id, "/", n), cert, mailbox, h, body);
  };
  // Chunk 1 is a send announcing three; each chunk is gzipped on its own.
  Reply first = Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001",
                     {"mex-to: RH8HC001", "mex-workflowid: REFERRAL", "mex-chunk-range: 1:3",
                      "content-type: application/pdf", "content-encoding: gzip", "mex-filename: letter.pdf"},
                     Gzip("%PDF-part-one;"));
  const std::string id = SentId(first);
  EXPECT_THAT(Inbox("RH8", "RH8HC001"), IsEmpty()) << "invisible while uploading";
  EXPECT_EQ(Call("GET", "/messageexchange/RR8HC001/outbox/tracking?messageID=" + id, "RR8", "RR8HC001")
                .json()
                .value("status", ""),
            "uploading");
  EXPECT_EQ(Call("GET", "/messageexchange/RH8HC001/inbox/" + id, "RH8", "RH8HC001").status, 410);

  Reply early = chunk(id, 3, "3:3", "three");
  EXPECT_EQ(early.status, 417);
  EXPECT_EQ(early.reason(), "CHUNK_RANGE_INVALID");
  EXPECT_EQ(chunk(id, 2, "3:3", "two").status, 417) << "the header's chunk must be the path's";
  EXPECT_EQ(chunk(id, 2, "2:4", "two").reason(), "CHUNK_RANGE_INVALID") << "the total is the first chunk's";
  EXPECT_EQ(chunk(id, 2, "2:3", "two", "RH8", "RH8HC001").status, 404) << "only the sender uploads its chunks";
  // Chunk 2 is over two stored pieces (4 MiB each): it is read back and
  // sent a piece at a time.
  std::string two_bytes(9 << 20, 'p');
  two_bytes += "part-two;";
  EXPECT_EQ(chunk(id, 2, "2:3", two_bytes).status, 202);
  EXPECT_THAT(Inbox("RH8", "RH8HC001"), IsEmpty());
  EXPECT_EQ(chunk(id, 3, "3:3", Gzip("part-three"), "RR8", "RR8HC001", {"content-encoding: gzip"}).status, 202);
  Reply late = chunk(id, 3, "3:3", "again");
  EXPECT_EQ(late.status, 423);
  EXPECT_EQ(late.reason(), "CHUNKS_COMPLETE");

  EXPECT_THAT(Inbox("RH8", "RH8HC001"), ElementsAre(id));
  Reply head = Call("HEAD", "/messageexchange/RH8HC001/inbox/" + id, "RH8", "RH8HC001");
  EXPECT_EQ(head.header("mex-total-chunks"), "3");
  Reply one = Call("GET", "/messageexchange/RH8HC001/inbox/" + id, "RH8", "RH8HC001");
  EXPECT_EQ(one.status, 206);
  EXPECT_EQ(one.header("mex-chunk-range"), "1:3");
  EXPECT_EQ(one.header("mex-filename"), "letter.pdf");
  EXPECT_EQ(one.body, "%PDF-part-one;");
  Reply two = Call("GET", "/messageexchange/RH8HC001/inbox/" + id + "/2", "RH8", "RH8HC001");
  EXPECT_EQ(two.status, 206);
  EXPECT_EQ(two.body.size(), two_bytes.size());
  EXPECT_TRUE(two.body == two_bytes) << "the pieces arrive whole and in order";
  Reply three = Call("GET", "/messageexchange/RH8HC001/inbox/" + id + "/3", "RH8", "RH8HC001");
  EXPECT_EQ(three.status, 200);
  EXPECT_EQ(three.header("mex-chunk-range"), "3:3");
  EXPECT_EQ(three.body, "part-three");
  EXPECT_EQ(Call("GET", "/messageexchange/RH8HC001/inbox/" + id + "/4", "RH8", "RH8HC001").status, 404);
  EXPECT_EQ(Call("PUT", "/messageexchange/RH8HC001/inbox/" + id + "/status/acknowledged", "RH8", "RH8HC001").status,
            200);

  // A care record is decided whole: it cannot be chunked.
  Reply record = Call("POST", "/messageexchange/RR8HC001/outbox", "RR8", "RR8HC001",
                      {"mex-to: RH8HC001", "mex-workflowid: REFERRAL", "mex-chunk-range: 1:2",
                       "content-type: application/fhir+json"},
                      "{}");
  EXPECT_EQ(record.status, 417);
  EXPECT_EQ(record.reason(), "CHUNK_RANGE_INVALID");
  EXPECT_EQ(chunk("00000000000000000000000000000000", 2, "2:2", "x").status, 404);
}

TEST_F(MeshApiTest, APasswordChangedAndReloadedRefusesTheOldOne) {
  EXPECT_EQ(Call("POST", "/messageexchange/RR8HC001", "RR8", "RR8HC001").status, 200);
  WriteSecret(dir_ + "/RR8HC001.pw", "a-new-password");
  auto reloaded = broker_->Reload("test");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  Reply old = Call("POST", "/messageexchange/RR8HC001", "RR8", "RR8HC001");
  EXPECT_EQ(old.status, 403);
  EXPECT_EQ(old.reason(), "MESH_TOKEN_INVALID");
  EXPECT_EQ(Call("POST", "/messageexchange/RR8HC001", "RR8", "", {}, "", kV2,
                 Token("RR8HC001", clock_->Now(), kSecret, "a-new-password"))
                .status,
            200);
}

TEST_F(MeshApiTest, AGzipBodyIsInflatedOnlyUpToTheLimit) {
  // 9 MiB of zeros compresses to a few kilobytes; inflated, it is over the
  // 8 MiB message limit and is refused without being held whole.
  const std::string bomb = Gzip(std::string(9 << 20, '\0'));
  ASSERT_LT(bomb.size(), 100u << 10);
  Reply r = SendFromTrust("RH8HC001", "REFERRAL", bomb, {"content-encoding: gzip"});
  EXPECT_EQ(r.status, 417);
  EXPECT_EQ(r.reason(), "MESSAGE_TOO_LARGE");
  EXPECT_THAT(Inbox("RH8", "RH8HC001"), IsEmpty());
}

TEST_F(MeshApiTest, EndpointLookupAndWorkflowSearchFromTheMailboxRegistry) {
  Reply lookup = Call("GET", "/messageexchange/endpointlookup/503/TOC_FHIR_IP_DISCH", "RR8", "RR8HC001");
  ASSERT_EQ(lookup.status, 200) << lookup.body;
  EXPECT_EQ(lookup.json()["results"],
            Json::parse(R"([{"mailbox_id":"503HC001","mailbox_name":"Council social care"}])"));
  Reply v1 = Call("GET", "/messageexchange/endpointlookup/503/REFERRAL", "RR8", "RR8HC001", {}, "", "application/json");
  EXPECT_EQ(v1.json()["results"][0].value("address", ""), "503HC002");
  EXPECT_EQ(v1.json()["results"][0].value("endpoint_type", ""), "MESH");
  EXPECT_THAT(Call("GET", "/messageexchange/endpointlookup/503/UNHEARD_OF", "RR8", "RR8HC001").json()["results"],
              IsEmpty());
  Reply search = Call("GET", "/messageexchange/workflowsearch/REFERRAL", "RR8", "RR8HC001");
  std::vector<std::string> ids;
  const Json found = search.json();
  for (const auto& r : found["results"]) ids.push_back(r.value("mailbox_id", ""));
  EXPECT_THAT(ids, UnorderedElementsAre("RR8HC001", "503HC002", "RH8HC001")) << search.body;
  // The lookups are authenticated too: the token's mailbox must be the certificate's.
  EXPECT_EQ(Call("GET", "/messageexchange/workflowsearch/REFERRAL", "RR8", "RH8HC001").status, 403);
}

// A council's CLD return to NHS England through the MESH API in chunks, the
// shipped agreements deciding: each row minimised as its chunk arrives.
class MeshCldTest : public MeshApiTest {
 protected:
  std::string MoreConfig() override {
    std::ofstream(dir_ + "/x26.key") << std::string(32, 'n');
    ::chmod((dir_ + "/x26.key").c_str(), 0600);
    return absl::StrCat("policy:\n  agreements_dir: ", SourcePath("deploy/agreements"),
                        "\n  pseudonym_keys: [{organisation: X26, file: ", dir_, "/x26.key}]\n");
  }
  std::string Organisations() override {
    return R"(
organisations:
  - {ods: RR8, name: Leeds Teaching Hospitals NHS Trust, kind: nhs_trust}
  - {ods: RH8, name: Royal Devon University Healthcare NHS Foundation Trust, kind: nhs_trust}
  - {ods: Y06601, name: Example GP practice, kind: gp_practice}
  - {ods: "503", name: Lincolnshire County Council, kind: local_authority}
  - {ods: X26, name: NHS England, kind: nhs_england, receives: cld}
)";
  }

  Reply Chunk(const std::string& id, int n, const std::string& body, std::vector<std::string> extra = {}) {
    std::vector<std::string> h = {absl::StrCat("mex-chunk-range: ", n, ":3"),
                                  "content-type: text/csv; profile=asc-cld-release-1"};
    h.insert(h.end(), extra.begin(), extra.end());
    return Call("POST", absl::StrCat("/messageexchange/503HC001/outbox/", id, "/", n), "503", "503HC001", h, body);
  }
};

TEST_F(MeshCldTest, AReturnInChunksIsMinimisedRowByRowAndABadChunkMaySendAgain) {
  SetNationalOptOut(*broker_, SyntheticNhsNumber(5), true);

  std::string file = "LA Code,NHS Number,First Name,Date of Birth,Postcode,Event Type,Event Reference,"
                     "Event Start Date,Service Type\r\n";
  for (int i = 0; i < 600; ++i) {
    absl::StrAppend(&file, "503,", SyntheticNhsNumber(i), ",\"Given, ", i, "\",1948-11-2", i % 8, ",LN2 ", i % 9,
                    "CD,Service,SRV-", i, ",2026-08-0", 1 + i % 9, ",Long Term Support: Nursing Care\r\n");
  }
  const size_t a = file.size() / 3 + 11, b = 2 * file.size() / 3 + 3;  // mid-row
  Reply first = Call("POST", "/messageexchange/503HC001/outbox", "503", "503HC001",
                     {"mex-to: X26HC001", "mex-workflowid: CLD_RETURN", "mex-chunk-range: 1:3",
                      "content-type: text/csv; profile=asc-cld-release-1", "content-encoding: gzip",
                      "mex-filename: cld-2026-q2.csv"},
                     Gzip(file.substr(0, a)));
  const std::string id = SentId(first);
  std::string bad = file.substr(a, b - a);
  bad.replace(bad.find("Service,"), 8, "Servicee");
  Reply refused = Chunk(id, 2, bad);
  EXPECT_EQ(refused.status, 417);
  EXPECT_EQ(refused.reason(), "CLD_INVALID");
  EXPECT_EQ(refused.code(), "06");
  EXPECT_EQ(Chunk(id, 2, Gzip(file.substr(a, b - a)), {"content-encoding: gzip"}).status, 202)
      << "the chunk, put right, is taken";
  Reply again = Chunk(id, 2, file.substr(a, b - a));
  EXPECT_EQ(again.status, 423);
  EXPECT_EQ(again.reason(), "CHUNK_SUPERSEDED") << "a submission's chunk is taken once";
  EXPECT_THAT(Inbox("X26", "X26HC001"), IsEmpty());
  EXPECT_EQ(Chunk(id, 3, file.substr(b)).status, 202);

  ASSERT_THAT(Inbox("X26", "X26HC001"), ElementsAre(id));
  std::string got;
  for (int n = 1; n <= 3; ++n) {
    Reply r = Call("GET", absl::StrCat("/messageexchange/X26HC001/inbox/", id, n == 1 ? "" : absl::StrCat("/", n)),
                   "X26", "X26HC001");
    EXPECT_EQ(r.status, n == 3 ? 200 : 206);
    EXPECT_EQ(r.header("mex-filename"), n == 1 ? "cld-2026-q2.csv" : r.header("mex-filename"));
    got += r.body;
  }
  auto rows = adapters::ParseCsv(got);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->size(), 601u) << "the header and every row: the opted-out person's too (required by law)";
  EXPECT_NE(got.find("SRV-5,"), std::string::npos);
  EXPECT_EQ(got.find(SyntheticNhsNumber(5)), std::string::npos) << "pseudonymised as every other";
  EXPECT_EQ(got.find("Given"), std::string::npos) << "names are not released";
  EXPECT_EQ(got.find(SyntheticNhsNumber(0)), std::string::npos) << "pseudonymised";
  EXPECT_EQ(Call("PUT", "/messageexchange/X26HC001/inbox/" + id + "/status/acknowledged", "X26", "X26HC001").status,
            200);
}

}  // namespace
}  // namespace carebroker::testing
