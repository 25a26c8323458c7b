// carebroker-connect: the edge process at an agency.
//
// Inbound: an MLLP listener takes HL7 v2 ADT from the hospital, sends a
// copy of each message to the broker for each configured recipient and
// route, and answers what happened: AA once a copy was committed, with an
// ERR of severity W for each recipient or route refused; AE with an ERR
// for each when none was stored (resending will not help); AR when the
// broker did not commit a copy (unreachable, overloaded: the hospital
// system retries).
// Retries are safe: each send's idempotency key is made from MSH-4, MSH-10
// and the target.
//
// Outbound: holds a Receive stream and delivers each message to a folder
// (atomic file writes), an MLLP peer (which must answer AA) or an HTTP
// webhook (which must answer 2xx), acking to the broker only after that
// delivery succeeded. A message the output refuses for good
// (outbound.for_good: by default a webhook's 4xx but 408 and 429, an MLLP
// AE or CR) is rejected to the broker, which holds it and tells its sender,
// and the next message goes out. On any other failure the stream is
// dropped and reopened after a backoff (doubling to 60 s, or the webhook's
// Retry-After), and the broker redelivers (holding the message after
// delivery.max_attempts). The stream has one message in flight at a time,
// so only the message being tried is charged an attempt.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "carebroker/v1/connect.pb.h"
#include "carebroker/v1/exchange.grpc.pb.h"
#include "connect/webhook.h"

namespace carebroker {

// The config file, validated (errors as FILE:LINE: key: reason); relative
// paths are resolved against the file's folder.
absl::StatusOr<v1::ConnectConfig> LoadConnectConfig(const std::string& path);
absl::StatusOr<v1::ConnectConfig> ParseConnectConfig(absl::string_view yaml, absl::string_view file,
                                                     const std::string& base_dir);

class Connect {
 public:
  static absl::StatusOr<std::unique_ptr<Connect>> Start(const v1::ConnectConfig& config);
  ~Connect();

  // The MLLP port bound (0 without an mllp section).
  int mllp_port() const { return mllp_port_; }
  // Messages delivered outbound and acknowledged to the broker.
  int64_t delivered() const { return delivered_.load(); }
  // Messages refused for good by the output and rejected to the broker.
  int64_t rejected() const { return rejected_.load(); }
  void Stop();

 private:
  explicit Connect(const v1::ConnectConfig& config) : config_(config) {}
  void AcceptLoop();
  void ServeConnection(int fd);
  // The ACK for one inbound message.
  std::string Handle(const std::string& er7);
  void OutboundLoop();
  // Delivers one message; not delivered leaves it unacknowledged.
  DeliveryAnswer Deliver(const v1::Delivery& d, int* peer_fd);

  const v1::ConnectConfig config_;
  std::unique_ptr<v1::Exchange::Stub> stub_;
  std::unique_ptr<Webhook> webhook_;  // with a webhook output; used by the outbound thread only
  int listen_fd_ = -1;
  int mllp_port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::atomic<int64_t> delivered_{0};
  std::atomic<int64_t> rejected_{0};
  std::atomic<uint64_t> ack_counter_{0};
  std::thread acceptor_, outbound_;
  absl::Mutex mu_;
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(mu_);
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* receive_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace carebroker
