// carebroker.v1.Operations: an operator's view of every mailbox and actions
// on held messages (operations.proto). Metadata only, never a payload; the
// `operator` role; every action audited in its own commit (Store::ActOn).
#pragma once

#include "broker/server/service_deps.h"
#include "carebroker/v1/operations.grpc.pb.h"

namespace carebroker {

class OperationsService final : public v1::Operations::CallbackService {
 public:
  explicit OperationsService(const ServiceDeps& deps) : d_(deps) {}
  grpc::ServerUnaryReactor* ListMailboxes(grpc::CallbackServerContext* ctx, const v1::ListMailboxesRequest* req,
                                          v1::ListMailboxesResponse* resp) override;
  grpc::ServerUnaryReactor* FindMessages(grpc::CallbackServerContext* ctx, const v1::FindMessagesRequest* req,
                                         v1::FindMessagesResponse* resp) override;
  grpc::ServerUnaryReactor* ActOnMessage(grpc::CallbackServerContext* ctx, const v1::MessageActionRequest* req,
                                         v1::MessageActionResponse* resp) override;

 private:
  const ServiceDeps& d_;
};

}  // namespace carebroker
