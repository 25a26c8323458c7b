// carebroker.v1.Audit for the ig-officer role: queries (themselves
// audited before any entry is sent), the latest signed tree head, proofs,
// and export of every entry and tree head for offline verification.
#pragma once

#include "broker/server/auth.h"
#include "broker/server/service_deps.h"
#include "carebroker/v1/audit.grpc.pb.h"

namespace carebroker {

class AuditService final : public v1::Audit::CallbackService {
 public:
  explicit AuditService(const ServiceDeps& deps) : d_(deps) {}

  grpc::ServerWriteReactor<v1::AuditEntry>* Query(grpc::CallbackServerContext* ctx,
                                                   const v1::AuditQueryRequest* req) override;
  grpc::ServerUnaryReactor* GetTreeHead(grpc::CallbackServerContext* ctx, const v1::GetTreeHeadRequest* req,
                                        v1::SignedTreeHead* resp) override;
  grpc::ServerUnaryReactor* ProveInclusion(grpc::CallbackServerContext* ctx, const v1::InclusionRequest* req,
                                           v1::InclusionProof* resp) override;
  grpc::ServerUnaryReactor* ProveConsistency(grpc::CallbackServerContext* ctx, const v1::ConsistencyRequest* req,
                                             v1::ConsistencyProof* resp) override;
  grpc::ServerUnaryReactor* ReviewOverride(grpc::CallbackServerContext* ctx, const v1::OverrideReviewRequest* req,
                                           v1::OverrideReviewResponse* resp) override;
  grpc::ServerWriteReactor<v1::ExportChunk>* Export(grpc::CallbackServerContext* ctx,
                                                    const v1::ExportRequest* req) override;

 private:
  const ServiceDeps& d_;
};

}  // namespace carebroker
