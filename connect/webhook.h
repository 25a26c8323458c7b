// The HTTP webhook output of carebroker-connect: each delivered message is
// POSTed to the agency's endpoint (libcurl), which must answer 2xx.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "carebroker/v1/connect.pb.h"
#include "carebroker/v1/exchange.pb.h"

namespace carebroker {

// What the place a message was delivered to answered (a folder, an MLLP
// peer, a webhook).
struct DeliveryAnswer {
  bool delivered = false;
  // What the output answered when it refused, as outbound.for_good names
  // answers: "HTTP_400" (a webhook's status), "AE" (an MLLP peer's MSA-1);
  // "" when nothing answered (a timeout, a lost connection), which may
  // always pass later.
  std::string code;
  // Refused for good whatever outbound.for_good says (content this output
  // can never take).
  bool for_good = false;
  // Why not, for the operator's log: the HTTP status or the transport error
  // (never the body, which may carry patient data).
  std::string reason;
  // From Retry-After on a 429 or 503 (seconds or an HTTP date), at most 10
  // minutes; zero when absent.
  absl::Duration retry_after = absl::ZeroDuration();
};

// The url's rules: https, or http to a loopback host (an engine on the same
// machine); a host is required; no user:password in it.
absl::Status CheckWebhookUrl(const std::string& url);

// Posts to one endpoint, keeping its connection alive between posts. Not
// thread-safe: one per outbound loop.
class Webhook {
 public:
  // `stopping`, when set, aborts a POST in flight.
  static absl::StatusOr<std::unique_ptr<Webhook>> Create(const v1::Webhook& config,
                                                         const std::atomic<bool>* stopping);
  ~Webhook();
  Webhook(const Webhook&) = delete;
  Webhook& operator=(const Webhook&) = delete;

  DeliveryAnswer Post(const v1::Delivery& d);

 private:
  Webhook() = default;
  void* curl_ = nullptr;  // CURL*
  std::string authorization_;
  const std::atomic<bool>* stopping_ = nullptr;
};

}  // namespace carebroker
