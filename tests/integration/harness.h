// Test harness: a real broker on a loopback port with real certificates
// from deploy/pki/dev-pki.sh, and clients presenting them.
#pragma once

#include <deque>
#include <map>
#include <vector>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "carebroker/v1/consent.pb.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/clock.h"
#include "broker/server/broker.h"
#include "carebroker/v1/exchange.grpc.pb.h"
#include "carebroker/v1/operations.grpc.pb.h"
#include "carebroker/v1/record.pb.h"
#include "tests/testutil/testutil.h"

namespace carebroker::testing {

// A broker started from `yaml`; its reloads parse `yaml` again (re-reading
// the files it names), as the broker's main reads its config file again.
std::unique_ptr<Broker> StartBroker(const std::string& yaml, const Clock* clock);

// A channel to `broker` presenting the certificate NAME.crt/NAME.key.
std::shared_ptr<grpc::Channel> ChannelAs(const Broker& broker, const std::string& name);
std::unique_ptr<v1::Exchange::Stub> StubAs(const Broker& broker, const std::string& name);

v1::SendRequest Req(const std::string& to, const std::string& key = "", const std::string& payload = "{\"n\":1}");

// A synthetic person (NHS number kSyntheticNhs, which passes Modulus 11)
// with an admission event, and a Send of it as a canonical care record.
inline constexpr char kSyntheticNhs[] = "9434765919";
v1::CareRecord SyntheticCareRecord();
v1::SendRequest CareSend(const std::string& to, const std::string& workflow, const std::string& purpose,
                         const v1::CareRecord& r = SyntheticCareRecord());

// One unary call with a 30-second deadline: Call(&v1::Exchange::Stub::Track, *stub, req, &resp).
template <typename Stub, typename Req, typename Resp>
grpc::Status Call(grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*), Stub& stub, const Req& req,
                  Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return (stub.*rpc)(&ctx, req, resp);
}

// The recipient's unary Reject of message `id` with `code`.
grpc::Status RejectAs(v1::Exchange::Stub& stub, const std::string& id, const std::string& code);

// Operations.ActOnMessage as the operator certificate: `action` on message
// `id`, `to` a redirect's organisation ("" for any other action).
grpc::Status OperatorAct(const Broker& b, v1::MessageAction action, const std::string& id, const std::string& to,
                         const std::string& justification, v1::MessageActionResponse* out = nullptr);

// grpc.health.v1 Check over `channel`: 1 SERVING, 2 NOT_SERVING, or -1
// when the call fails. `server_cert`, when given, gets the certificate the
// server presented (PEM).
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, std::string* server_cert = nullptr);

// carebroker-audit against the broker, as `who`.
struct AuditRun {
  int rc;
  std::string out, err;
};
AuditRun AuditCli(const Broker& b, const std::string& who, std::vector<std::string> args);

// Records `nhs_number`'s national data opt-out (on or off) through the
// Consent service, as the GP practice Y06601 (an agency that may write
// consent); adds a test failure if it is refused. The person's state after.
v1::ConsentState SetNationalOptOut(const Broker& b, const std::string& nhs_number, bool opted_out);

// One plain HTTP request to 127.0.0.1:port (libcurl), 5-second timeout.
struct HttpReply {
  long status = 0;  // 0: no answer
  std::string content_type;
  std::string body;
};
HttpReply HttpCall(int port, const std::string& path, const std::string& method = "GET",
                   const std::string& body = "");

// One HTTPS request to 127.0.0.1:port with mutual TLS (libcurl), presenting
// the dev PKI's NAME.crt/NAME.key and trusting its CA; 20-second timeout.
// `headers` are "name: value" lines. Response header names lower-cased.
struct HttpsReply {
  long status = 0;  // 0: no answer
  std::map<std::string, std::string> headers;
  std::string body;
};
HttpsReply HttpsCall(int port, const std::string& method, const std::string& path, const std::string& cert,
                     const std::vector<std::string>& headers = {}, const std::string& body = "");

// A MESH Authorization value ("NHSMESH mailbox:nonce:1:timestamp:hmac") for
// `mailbox` with `password` under the environment's `secret`, stamped `at`.
std::string MeshToken(const std::string& secret, const std::string& mailbox, const std::string& password,
                      const std::string& nonce, absl::Time at);

// `data` compressed as a gzip stream (as a MESH client's Content-Encoding: gzip).
std::string Gzip(const std::string& data);

// Sends and expects success; returns the message id.
std::string SendOk(v1::Exchange::Stub& stub, const v1::SendRequest& req);

// A Receive stream with a reader thread, so tests can wait with a bound.
class Receiver {
 public:
  Receiver(v1::Exchange::Stub& stub, uint32_t max_in_flight, bool large_messages = false);
  // With this first request (an open).
  Receiver(v1::Exchange::Stub& stub, const v1::ReceiveRequest& open);
  ~Receiver();
  // The next delivery, or nullopt if none arrives within `timeout`.
  std::optional<v1::Delivery> Next(absl::Duration timeout = absl::Seconds(10));
  bool Ack(const std::string& id);
  bool Send(const v1::ReceiveRequest& r);
  // Half-closes and returns the final status.
  grpc::Status Close();

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ReceiveRequest, v1::DeliveryBatch>> stream_;
  std::thread reader_;
  absl::Mutex mu_;
  std::deque<v1::Delivery> got_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ = false;
  grpc::Status final_;
};

}  // namespace carebroker::testing
