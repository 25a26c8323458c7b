// What the streaming reactors share: reference counting, refusing a
// stream before it starts, and the broker-wide stream limit.
#pragma once

#include <grpcpp/support/server_callback.h>

#include <atomic>

#include "absl/status/status.h"
#include "broker/server/grpc_status.h"
#include "broker/server/service_deps.h"
#include "carebroker/v1/exchange.pb.h"
#include "core/reasons.h"
#include "core/status.h"
#include "core/time.h"

namespace carebroker {

// A stream refused before it started, for any server reactor kind
// (RefusedStream<Req, Resp> for bidirectional ones).
template <typename Reactor>
class Refused final : public Reactor {
 public:
  explicit Refused(const absl::Status& s) { this->Finish(ToGrpcStatus(s)); }
  void OnDone() override { delete this; }
};
template <typename Req, typename Resp>
using RefusedStream = Refused<grpc::ServerBidiReactor<Req, Resp>>;

// Counts an open stream for the max_streams limit; false when full.
inline bool EnterStream(const ServiceDeps& d) {
  const int limit = static_cast<int>(d.config.proto().limits().max_streams());
  if (d.streams.fetch_add(1) >= limit) {
    d.streams.fetch_sub(1);
    return false;
  }
  return true;
}

inline absl::Status TooManyStreams() {
  return Error(absl::StatusCode::kResourceExhausted, reason::kTooManyStreams, "the broker's stream limit is reached");
}

// A stored delivery as the API shows it; its strings and payload are moved.
inline void ToDelivery(StoredDelivery& d, v1::Delivery* out) {
  out->set_message_id(d.id.str());
  out->set_sender(d.sender.str());
  out->set_workflow(std::move(d.workflow));
  out->set_purpose(std::move(d.purpose));
  out->set_content_type(std::move(d.content_type));
  out->set_payload(std::move(d.payload));
  *out->mutable_accepted_at() = ToTimestamp(d.accepted_at);
  out->set_delivery_count(d.delivery_count);
  out->set_kind(d.kind);
  out->set_local_reference(std::move(d.local_reference));
  out->set_chunks(d.chunks);
}

// Reference counting for reactors with asynchronous store work in flight:
// one reference for gRPC (dropped in OnDone) and one per store operation.
class RefCounted {
 public:
  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 protected:
  virtual ~RefCounted() = default;

 private:
  std::atomic<int> refs_{1};
};

}  // namespace carebroker
