#include "tests/integration/harness.h"

#include <curl/curl.h>
#include <zlib.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/vocabulary.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "broker/cli/audit/audit_cli.h"
#include "broker/client/client.h"
#include "broker/config/config.h"
#include "broker/exchange/intake.h"
#include "broker/mesh/auth.h"
#include "carebroker/v1/consent.grpc.pb.h"
#include "tests/integration/probe.pb.h"

namespace carebroker::testing {

namespace fs = std::filesystem;

v1::CareRecord SyntheticCareRecord() {
  v1::CareRecord r;
  auto* p = r.mutable_person();
  p->set_nhs_number(kSyntheticNhs);
  p->add_local_identifiers()->set_value("SYN-MRN-77");
  auto* n = p->add_names();
  n->set_family("Synthetic");
  p->mutable_birth_date()->set_year(1940);
  p->mutable_birth_date()->set_month(5);
  p->mutable_birth_date()->set_day(17);
  p->mutable_address()->set_postcode("LN1 1AA");
  p->mutable_death_date()->set_year(2026);
  auto* e = r.add_events();
  e->set_reference("SYN-EV-1");
  e->mutable_admission()->set_consultant("SYN-CONSULTANT-9");
  e->mutable_admission()->set_ward("W4");
  return r;
}

v1::SendRequest CareSend(const std::string& to, const std::string& workflow, const std::string& purpose,
                         const v1::CareRecord& r) {
  v1::SendRequest s;
  s.set_recipient(to);
  s.set_workflow(workflow);
  s.set_purpose(purpose);
  s.set_content_type(kCareRecordContentType);
  s.set_payload(r.SerializeAsString());
  return s;
}

std::unique_ptr<Broker> StartBroker(const std::string& yaml, const Clock* clock) {
  auto config = ParseConfig(yaml, "test.yaml", "/", {});
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return nullptr;
  // A reload reads the config again, as the broker's main does with its file.
  BrokerOptions options{clock};
  options.reload_config = [yaml] { return ParseConfig(yaml, "test.yaml", "/", {}); };
  auto b = Broker::Start(*config, std::move(options));
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

std::shared_ptr<grpc::Channel> ChannelAs(const Broker& broker, const std::string& name) {
  const std::string pki = PkiDir();
  auto ch = MakeChannel(ClientTls{broker.address(), absl::StrCat(pki, "/", name, ".crt"),
                                  absl::StrCat(pki, "/", name, ".key"), absl::StrCat(pki, "/ca.crt")});
  EXPECT_TRUE(ch.ok()) << ch.status();
  return *ch;
}

std::unique_ptr<v1::Exchange::Stub> StubAs(const Broker& broker, const std::string& name) {
  return v1::Exchange::NewStub(ChannelAs(broker, name));
}

v1::SendRequest Req(const std::string& to, const std::string& key, const std::string& payload) {
  v1::SendRequest r;
  r.set_recipient(to);
  r.set_workflow("HOSPITAL_DISCHARGE");
  r.set_purpose("direct-care");
  r.set_idempotency_key(key);
  r.set_content_type("application/json");
  r.set_payload(payload);
  return r;
}

AuditRun AuditCli(const Broker& b, const std::string& who, std::vector<std::string> args) {
  const std::string pki = PkiDir();
  std::vector<std::string> all = {"carebroker-audit", "--target", b.address(), "--cert", pki + "/" + who + ".crt",
                                  "--key", pki + "/" + who + ".key", "--ca", pki + "/ca.crt",
                                  "--public-key", pki + "/audit-signing.pub"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  std::ostringstream out, err;
  const int rc = RunAudit(static_cast<int>(argv.size()), argv.data(), out, err);
  return {rc, out.str(), err.str()};
}

grpc::Status RejectAs(v1::Exchange::Stub& stub, const std::string& id, const std::string& code) {
  v1::RejectRequest req;
  req.set_message_id(id);
  req.set_code(code);
  v1::RejectResponse resp;
  return Call(&v1::Exchange::Stub::Reject, stub, req, &resp);
}

grpc::Status OperatorAct(const Broker& b, v1::MessageAction action, const std::string& id, const std::string& to,
                         const std::string& justification, v1::MessageActionResponse* out) {
  auto ops = v1::Operations::NewStub(ChannelAs(b, "operator"));
  v1::MessageActionRequest req;
  req.set_message_id(id);
  req.set_action(action);
  req.set_organisation(to);
  req.set_justification(justification);
  v1::MessageActionResponse resp;
  grpc::Status s = Call(&v1::Operations::Stub::ActOnMessage, *ops, req, &resp);
  if (out != nullptr) *out = resp;
  return s;
}

int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, std::string* server_cert) {
  grpc::TemplatedGenericStub<cbtest::HealthCheckRequest, cbtest::HealthCheckResponse> health(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  cbtest::HealthCheckRequest req;
  cbtest::HealthCheckResponse resp;
  grpc::Status status;
  auto call = health.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", req, &cq);
  call->StartCall();
  call->Finish(&resp, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  if (!cq.Next(&tag, &ok) || !status.ok()) return -1;
  if (server_cert != nullptr) {
    auto auth = ctx.auth_context();
    auto pems = auth ? auth->FindPropertyValues("x509_pem_cert") : std::vector<grpc::string_ref>{};
    *server_cert = pems.empty() ? "" : std::string(pems[0].data(), pems[0].size());
  }
  return resp.status();
}

HttpReply HttpCall(int port, const std::string& path, const std::string& method, const std::string& body) {
  HttpReply out;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return out;
  const std::string url = absl::StrCat("http://127.0.0.1:", port, path);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "HEAD") curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  if (!body.empty()) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 5L);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out.body);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* into) {
    static_cast<std::string*>(into)->append(p, size * n);
    return size * n;
  });
  if (curl_easy_perform(curl) == CURLE_OK) {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out.status);
    char* type = nullptr;
    curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &type);
    if (type != nullptr) out.content_type = type;
  }
  curl_easy_cleanup(curl);
  return out;
}

HttpsReply HttpsCall(int port, const std::string& method, const std::string& path, const std::string& cert,
                     const std::vector<std::string>& headers, const std::string& body) {
  HttpsReply out;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return out;
  const std::string url = absl::StrCat("https://127.0.0.1:", port, path);
  const std::string pki = PkiDir();
  const std::string ca = pki + "/ca.crt", crt = pki + "/" + cert + ".crt", key = pki + "/" + cert + ".key";
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CAINFO, ca.c_str());
  curl_easy_setopt(curl, CURLOPT_SSLCERT, crt.c_str());
  curl_easy_setopt(curl, CURLOPT_SSLKEY, key.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "HEAD") curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  if (method == "POST" || method == "PUT") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  struct curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out.body);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* into) {
    static_cast<std::string*>(into)->append(p, size * n);
    return size * n;
  });
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &out.headers);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, +[](char* p, size_t size, size_t n, void* into) {
    absl::string_view line(p, size * n);
    auto colon = line.find(':');
    if (colon != absl::string_view::npos) {
      (*static_cast<std::map<std::string, std::string>*>(into))[absl::AsciiStrToLower(line.substr(0, colon))] =
          std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
    return size * n;
  });
  const CURLcode rc = curl_easy_perform(curl);
  EXPECT_EQ(rc, CURLE_OK) << curl_easy_strerror(rc) << " " << method << " " << path;
  if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return out;
}

std::string MeshToken(const std::string& secret, const std::string& mailbox, const std::string& password,
                      const std::string& nonce, absl::Time at) {
  const std::string ts = absl::FormatTime("%Y%m%d%H%M", at, absl::UTCTimeZone());
  return absl::StrCat("NHSMESH ", mailbox, ":", nonce, ":1:", ts, ":",
                      mesh::TokenHmac(secret, mailbox, nonce, "1", password, ts));
}

std::string Gzip(const std::string& data) {
  z_stream z{};
  deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string SendOk(v1::Exchange::Stub& stub, const v1::SendRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::SendReceipt r;
  grpc::Status s = stub.Send(&ctx, req, &r);
  EXPECT_TRUE(s.ok()) << DescribeStatus(s);
  return r.message_id();
}

namespace {
v1::ReceiveRequest OpenRequest(uint32_t max_in_flight, bool large_messages) {
  v1::ReceiveRequest open;
  open.mutable_open()->set_max_in_flight(max_in_flight);
  open.mutable_open()->set_large_messages(large_messages);
  return open;
}
}  // namespace

Receiver::Receiver(v1::Exchange::Stub& stub, uint32_t max_in_flight, bool large_messages)
    : Receiver(stub, OpenRequest(max_in_flight, large_messages)) {}

Receiver::Receiver(v1::Exchange::Stub& stub, const v1::ReceiveRequest& open) {
  stream_ = stub.Receive(&ctx_);
  stream_->Write(open);
  reader_ = std::thread([this] {
    v1::DeliveryBatch batch;
    while (stream_->Read(&batch)) {
      absl::MutexLock l(&mu_);
      for (auto& d : *batch.mutable_deliveries()) got_.push_back(std::move(d));
    }
    absl::MutexLock l(&mu_);
    ended_ = true;
  });
}

Receiver::~Receiver() {
  if (!closed_) {
    ctx_.TryCancel();
    reader_.join();
    stream_->Finish();
  }
}

std::optional<v1::Delivery> Receiver::Next(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !got_.empty() || ended_; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (got_.empty()) return std::nullopt;
  v1::Delivery d = std::move(got_.front());
  got_.pop_front();
  return d;
}

bool Receiver::Ack(const std::string& id) {
  v1::ReceiveRequest r;
  r.set_ack(id);
  return stream_->Write(r);
}

bool Receiver::Send(const v1::ReceiveRequest& r) { return stream_->Write(r); }

grpc::Status Receiver::Close() {
  stream_->WritesDone();
  reader_.join();
  closed_ = true;
  final_ = stream_->Finish();
  return final_;
}

v1::ConsentState SetNationalOptOut(const Broker& b, const std::string& nhs_number, bool opted_out) {
  auto consent = v1::Consent::NewStub(ChannelAs(b, "Y06601"));
  v1::SetNationalOptOutRequest req;
  req.set_nhs_number(nhs_number);
  req.set_opted_out(opted_out);
  req.set_source("NHS App");
  req.set_recorded_by("national service");
  v1::ConsentState state;
  grpc::Status s = Call(&v1::Consent::Stub::SetNationalOptOut, *consent, req, &state);
  EXPECT_TRUE(s.ok()) << DescribeStatus(s);
  return state;
}

}  // namespace carebroker::testing
