// The hostile-input catalogue (tests/hostile/cases.yaml) through a real
// broker on loopback: each case's input at its front door, the status and
// reason it must get, and then that a refusal stored nothing and was audited
// (an accepted case was stored once). Every case runs whatever the others do.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "broker/client/client.h"
#include "carebroker/v1/audit.grpc.pb.h"
#include "carebroker/v1/operations.grpc.pb.h"
#include "core/enum_names.h"
#include "tests/integration/harness.h"

namespace carebroker::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kSecret[] = "HostileSharedSecret";

std::string Hex(const YAML::Node& n) { return absl::HexStringToBytes(n.as<std::string>()); }

// A value: text, or a list of parts joined (cases.yaml's header).
std::string Value(const YAML::Node& n) {
  if (!n) return "";
  if (n.IsScalar()) return n.as<std::string>();
  std::string out;
  for (const YAML::Node& part : n) {
    if (part["text"]) {
      out += part["text"].as<std::string>();
    } else if (part["hex"]) {
      out += Hex(part["hex"]);
    } else if (part["repeat"] || part["repeat_hex"]) {
      const std::string unit = part["repeat"] ? part["repeat"].as<std::string>() : Hex(part["repeat_hex"]);
      const size_t times = part["times"].as<size_t>();
      out.reserve(out.size() + unit.size() * times);
      for (size_t i = 0; i < times; ++i) out += unit;
    } else if (part["gzip"]) {
      out += Gzip(Value(part["gzip"]));
    } else {
      ADD_FAILURE() << "unknown part at line " << part.Mark().line + 1;
    }
  }
  return out;
}

std::string Or(const YAML::Node& n, const std::string& otherwise) { return n ? Value(n) : otherwise; }

// What came back: a gRPC code and reason, or an HTTP status and reason.
struct Outcome {
  std::string code;  // gRPC code name, "OK"; or "" for HTTP
  long http = 0;
  std::string reason, message;
};

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("hostile");
    agreements_ = dir_ + "/agreements";
    fs::create_directories(agreements_);
    fs::copy(SourcePath("tests/agreements"), agreements_, fs::copy_options::recursive);
    auto secret = [&](const std::string& path, const std::string& value) {
      std::ofstream(path) << value << "\n";
      ::chmod(path.c_str(), 0600);
    };
    secret(dir_ + "/secret", kSecret);
    secret(dir_ + "/RR8HC001.pw", "pw-RR8HC001");
    secret(dir_ + "/503HC001.pw", "pw-503HC001");
    const std::string extra = absl::StrCat("policy: {agreements_dir: ", agreements_, R"(}
mesh:
  listen: "127.0.0.1:0"
  shared_secret_file: )", dir_, R"(/secret
  workflows:
    - {id: TOC_FHIR_IP_DISCH, workflow: HOSPITAL_DISCHARGE, purpose: direct-care}
  mailboxes:
    - {id: RR8HC001, organisation: RR8, password_file: )", dir_, R"(/RR8HC001.pw}
    - {id: 503HC001, organisation: "503", password_file: )", dir_, R"(/503HC001.pw}
)");
    broker_ = StartBroker(ConfigYaml(dir_ + "/data", extra), &SystemClock::Get());
    ASSERT_NE(broker_, nullptr);
  }

  Outcome Grpc(const YAML::Node& c) {
    auto stub = StubAs(*broker_, "RR8");
    v1::SendRequest req;
    req.set_recipient(Or(c["recipient"], "503"));
    req.set_workflow(Or(c["workflow"], "HOSPITAL_DISCHARGE"));
    req.set_purpose(Or(c["purpose"], "direct-care"));
    req.set_content_type(Value(c["content_type"]));
    req.set_payload(Value(c["payload"]));
    req.set_idempotency_key(Value(c["idempotency_key"]));
    req.set_local_reference(Value(c["local_reference"]));
    req.set_justification(Value(c["justification"]));
    v1::SendReceipt receipt;
    return Of(Call(&v1::Exchange::Stub::Send, *stub, req, &receipt));
  }

  // The request's bytes as given, which protobuf's own writer would never make.
  Outcome GrpcRaw(const YAML::Node& c) {
    const std::string bytes = Value(c["request"]);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::GenericStub stub(ChannelAs(*broker_, "RR8"));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::CompletionQueue cq;
    auto call = stub.PrepareUnaryCall(&ctx, "/carebroker.v1.Exchange/Send", request, &cq);
    call->StartCall();
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag;
    bool ok;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    return Of(status);
  }

  Outcome Mesh(const YAML::Node& c) {
    std::vector<std::string> h = {
        "accept: application/vnd.mesh.v2+json",
        "authorization: " + MeshToken(kSecret, "RR8HC001", "pw-RR8HC001",
                                      absl::StrCat("h0571e00-0000-4000-8000-", ++nonce_), absl::Now()),
        "mex-clientversion: hostile==1", "mex-osname: Linux", "mex-osversion: 6"};
    for (const YAML::Node& x : c["headers"]) h.push_back(x.as<std::string>());
    HttpsReply r = HttpsCall(broker_->mesh_port(), "POST", "/messageexchange/RR8HC001/outbox", "RR8", h,
                             Value(c["body"]));
    Outcome o;
    o.http = r.status;
    const Json j = Json::parse(r.body, nullptr, false);
    if (j.is_object() && j.contains("detail") && j["detail"].is_array() && !j["detail"].empty()) {
      o.reason = j["detail"][0].value("reason", "");
      o.message = j["detail"][0].value("msg", "");
    }
    return o;
  }

  // The file beside the agreements in force, then a reload (which must
  // refuse it and keep what was in force); the file is taken away after.
  Outcome Agreements(const YAML::Node& c) {
    const std::string path = agreements_ + "/hostile.yaml";
    std::ofstream(path, std::ios::binary) << Value(c["file"]);
    auto r = broker_->Reload("hostile-test");
    fs::remove(path);
    Outcome o;
    o.code = absl::StatusCodeToString(r.status().code());
    o.reason = ReasonOf(r.status());
    o.message = std::string(r.status().message());
    return o;
  }

  static Outcome Of(const grpc::Status& s) {
    Outcome o;
    o.code = absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code()));
    if (s.ok()) o.code = "OK";
    o.reason = ErrorReason(s);
    o.message = s.error_message();
    return o;
  }

  // Messages from RR8 in the store, of any status.
  int Stored() {
    auto ops = v1::Operations::NewStub(ChannelAs(*broker_, "operator"));
    v1::FindMessagesRequest req;
    req.set_sender("RR8");
    req.set_limit(1000);
    v1::FindMessagesResponse resp;
    grpc::Status s = Call(&v1::Operations::Stub::FindMessages, *ops, req, &resp);
    EXPECT_TRUE(s.ok()) << DescribeStatus(s);
    return resp.messages_size();
  }

  // The log's entries of `event`.
  std::vector<v1::AuditEntry> Audited(v1::AuditEvent event) {
    auto audit = v1::Audit::NewStub(ChannelAs(*broker_, "ig-officer"));
    v1::AuditQueryRequest q;
    q.mutable_filter()->add_events(event);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto reader = audit->Query(&ctx, q);
    std::vector<v1::AuditEntry> out;
    v1::AuditEntry e;
    while (reader->Read(&e)) out.push_back(e);
    grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << DescribeStatus(s);
    return out;
  }

  // Waits (up to 5 s: refusals are recorded without waiting) for more than
  // `before` entries of `event`; the entries then.
  std::vector<v1::AuditEntry> AuditedAfter(v1::AuditEvent event, size_t before) {
    std::vector<v1::AuditEntry> now;
    for (int i = 0; i < 50; ++i) {
      now = Audited(event);
      if (now.size() > before) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return now;
  }

  std::string dir_, agreements_;
  std::unique_ptr<Broker> broker_;
  int nonce_ = 0;
};

TEST_F(HostileTest, EveryCaseIsAnsweredAsTheCatalogueSays) {
  const YAML::Node cases = YAML::LoadFile(SourcePath("tests/hostile/cases.yaml"))["cases"];
  ASSERT_TRUE(cases.IsSequence());
  ASSERT_GE(cases.size(), 40u);
  for (const YAML::Node& c : cases) {
    const std::string name = c["name"].as<std::string>();
    SCOPED_TRACE(name);
    const std::string door = c["door"].as<std::string>();
    const YAML::Node expect = c["expect"];
    const bool send = door != "agreements";
    const v1::AuditEvent event = send ? v1::AUDIT_EVENT_SEND_REFUSED : v1::AUDIT_EVENT_AGREEMENTS_REJECTED;
    const int stored_before = Stored();
    const size_t audited_before = Audited(event).size();

    Outcome got = door == "grpc"       ? Grpc(c)
                  : door == "grpc-raw" ? GrpcRaw(c)
                  : door == "mesh"     ? Mesh(c)
                  : door == "agreements" ? Agreements(c)
                                         : Outcome{};
    ASSERT_TRUE(door == "grpc" || door == "grpc-raw" || door == "mesh" || door == "agreements") << door;

    const bool accepted = expect["code"] && expect["code"].as<std::string>() == "OK";
    if (expect["code"]) {
      EXPECT_EQ(got.code, expect["code"].as<std::string>()) << got.message;
    }
    if (expect["http"]) {
      EXPECT_EQ(got.http, expect["http"].as<long>()) << got.message;
    }
    if (expect["reason"]) {
      EXPECT_EQ(got.reason, expect["reason"].as<std::string>()) << got.message;
    }
    if (expect["message_has"]) {
      EXPECT_THAT(got.message, ::testing::HasSubstr(expect["message_has"].as<std::string>()));
    }

    // Stored once when accepted, else not at all.
    EXPECT_EQ(Stored(), stored_before + (accepted ? 1 : 0));
    if (accepted || c["not_audited"]) {
      absl::SleepFor(absl::Milliseconds(200));  // a refusal's entry would be there by now
      EXPECT_EQ(Audited(event).size(), audited_before) << "recorded as refused";
      continue;
    }
    const std::vector<v1::AuditEntry> after = AuditedAfter(event, audited_before);
    ASSERT_EQ(after.size(), audited_before + 1) << "not audited";
    const v1::AuditEntry& e = after.back();
    EXPECT_TRUE(e.subject().empty()) << "a refusal names no one";
    if (send) {
      EXPECT_EQ(e.actor(), "RR8");
      EXPECT_EQ(e.sender(), "RR8");
      ASSERT_EQ(e.reasons_size(), 1);
      EXPECT_EQ(e.reasons(0), got.reason);
    }
  }
  // Still serving, with what was in force: a well-formed send is taken.
  auto stub = StubAs(*broker_, "RR8");
  SendOk(*stub, Req("503", "after-the-catalogue"));
}

}  // namespace
}  // namespace carebroker::testing
