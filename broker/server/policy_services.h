// carebroker.v1.Consent (a person's recorded wishes) and carebroker.v1.Policy
// (reload of the agreements) over the gRPC callback API.
//
// Consent: written and read by the roles policy.consent_writers and
// policy.consent_readers allow. A change answers only once it is durable
// and applied to the book every decision consults, so a send that starts
// after the answer sees it. Policy.Reload needs the operator role.
#pragma once

#include "core/ids.h"

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "broker/server/auth.h"
#include "broker/server/service_deps.h"
#include "carebroker/v1/consent.grpc.pb.h"
#include "carebroker/v1/policy.grpc.pb.h"

namespace carebroker {

// The person a consent request names: an NHS number, or (for a person not
// yet traced) an organisation's local identifier; never both.
struct ConsentPerson {
  std::string nhs_number;
  v1::LocalIdentifier local;
  std::string key() const { return PersonKey(nhs_number, local); }
};

class ConsentService final : public v1::Consent::CallbackService {
 public:
  explicit ConsentService(const ServiceDeps& deps) : d_(deps) {}

  grpc::ServerUnaryReactor* Record(grpc::CallbackServerContext* ctx, const v1::RecordRequest* req,
                                   v1::Directive* resp) override;
  grpc::ServerUnaryReactor* Withdraw(grpc::CallbackServerContext* ctx, const v1::WithdrawRequest* req,
                                     v1::Directive* resp) override;
  grpc::ServerUnaryReactor* SetNationalOptOut(grpc::CallbackServerContext* ctx,
                                              const v1::SetNationalOptOutRequest* req,
                                              v1::ConsentState* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetConsentRequest* req,
                                v1::ConsentState* resp) override;

 private:
  // Stores `change`, applies it to the book, then runs `done`.
  void Commit(v1::ConsentChange change, absl::AnyInvocable<void(absl::StatusOr<v1::ConsentChange>) &&> done);
  // Fills `out` with the person's standing state and stored history.
  void ReadState(const ConsentPerson& who, v1::ConsentState* out, grpc::ServerUnaryReactor* reactor);

  const ServiceDeps& d_;
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> withdrawing_ ABSL_GUARDED_BY(mu_);  // directive ids in flight
};

class PolicyService final : public v1::Policy::CallbackService {
 public:
  explicit PolicyService(const ServiceDeps& deps) : d_(deps) {}
  grpc::ServerUnaryReactor* Reload(grpc::CallbackServerContext* ctx, const v1::ReloadRequest* req,
                                   v1::ReloadResponse* resp) override;

 private:
  const ServiceDeps& d_;
};

// The AGREEMENTS_LOADED or AGREEMENTS_REJECTED entry for a (re)load.
AuditRecord PolicyLoadRecord(const ServiceDeps& d, const absl::Status& outcome, const std::string& actor);

// The answer to a successful reload (also logged on SIGHUP).
v1::ReloadResponse DescribePolicy(const policy::PolicySet& set);

}  // namespace carebroker
