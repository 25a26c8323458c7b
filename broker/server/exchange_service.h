// carebroker.v1.Exchange over the gRPC callback API.
//
// Every RPC first derives the caller's identity from its verified client
// certificate and requires the agency role and a registered organisation.
// No handler blocks: store work is asynchronous, and each stream has one
// write in flight, a bounded number of outstanding sends (SendStream stops
// reading when full) and a bounded number of unacknowledged deliveries
// (Receive claims only what it has credit for).
#pragma once

#include <atomic>
#include <memory>

#include "broker/config/config.h"
#include "core/clock.h"
#include "broker/exchange/mailboxes.h"
#include "broker/exchange/policy_gate.h"
#include "broker/server/identity.h"
#include "broker/store/store.h"
#include "carebroker/v1/exchange.grpc.pb.h"

namespace carebroker {
namespace audit {
class AuditLog;
}

// What the service's handlers share. All pointers outlive the service.
struct ExchangeDeps {
  std::shared_ptr<const Config> config;
  Store* store = nullptr;
  Mailboxes* mailboxes = nullptr;
  MemoryBudget* budget = nullptr;
  const Clock* clock = nullptr;
  IdentityCache* identities = nullptr;
  std::atomic<int>* streams = nullptr;  // open Receive and SendStream streams
  PolicyGate* policy = nullptr;
  audit::AuditLog* audit = nullptr;
};

class ExchangeService final : public v1::Exchange::CallbackService {
 public:
  explicit ExchangeService(ExchangeDeps deps) : deps_(std::move(deps)) {}

  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* ctx, const v1::SendRequest* req,
                                 v1::SendReceipt* resp) override;
  grpc::ServerBidiReactor<v1::SendRequest, v1::SendStreamResponse>* SendStream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>* Receive(grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* ctx, const v1::AckRequest* req,
                                v1::AckResponse* resp) override;
  grpc::ServerUnaryReactor* Track(grpc::CallbackServerContext* ctx, const v1::TrackRequest* req,
                                  v1::TrackResponse* resp) override;

 private:
  ExchangeDeps deps_;
};

// The caller's identity from the verified client certificate, requiring
// `role` and a registered organisation:
//   UNAUTHENTICATED    no usable certificate identity
//   PERMISSION_DENIED  ROLE_NOT_ALLOWED, UNKNOWN_ORGANISATION
// Every refusal is recorded in the audit log (CERTIFICATE_REFUSED).
absl::StatusOr<Identity> Authorize(grpc::CallbackServerContext* ctx, const ExchangeDeps& d, Role role);

// The caller's identity with any role (the caller checks the role).
absl::StatusOr<Identity> Identify(grpc::CallbackServerContext* ctx, const ExchangeDeps& d);
// PERMISSION_DENIED ROLE_NOT_ALLOWED for `what`, recorded in the audit log.
absl::Status RoleNotAllowed(const ExchangeDeps& d, const Identity& who, absl::string_view what);

}  // namespace carebroker
