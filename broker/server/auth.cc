#include "broker/server/auth.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "audit/log.h"
#include "core/reasons.h"
#include "core/status.h"

namespace carebroker {
namespace {

// Records a caller refused after the handshake and returns `refusal`.
absl::Status Refused(const ServiceDeps& d, absl::Status refusal, const Identity* who) {
  v1::AuditEntry e;
  if (who != nullptr) {
    e.set_actor(who->org.str());
    e.set_actor_role(std::string(RoleName(who->role)));
  }
  e.add_reasons(ReasonOf(refusal));
  e.set_detail(absl::StrCat("call refused: ", refusal.message()));
  d.audit.RecordRefusal(std::move(e));
  return refusal;
}

}  // namespace

absl::StatusOr<Identity> Identify(grpc::CallbackServerContext* ctx, const ServiceDeps& d) {
  auto auth = ctx->auth_context();
  std::vector<grpc::string_ref> pems =
      auth ? auth->FindPropertyValues("x509_pem_cert") : std::vector<grpc::string_ref>{};
  if (pems.empty()) {
    return Refused(d,
                   Error(absl::StatusCode::kUnauthenticated, reason::kCertificateRequired,
                         "a verified client certificate is required"),
                   nullptr);
  }
  auto id = d.identities.Get(absl::string_view(pems[0].data(), pems[0].size()));
  if (!id.ok()) return Refused(d, id.status(), nullptr);
  if (d.policy.config()->FindOrganisation(id->org) == nullptr) {
    return Refused(d,
                   Error(absl::StatusCode::kPermissionDenied, reason::kUnknownOrganisation,
                         absl::StrCat("organisation ", id->org.str(), " is not registered with this broker")),
                   &*id);
  }
  return id;
}

absl::Status RoleNotAllowed(const ServiceDeps& d, const Identity& who, absl::string_view what) {
  return Refused(d,
                 Error(absl::StatusCode::kPermissionDenied, reason::kRoleNotAllowed,
                       absl::StrCat(what, " is not allowed for the ", RoleName(who.role), " role")),
                 &who);
}

absl::StatusOr<Identity> Authorize(grpc::CallbackServerContext* ctx, const ServiceDeps& d, Role role) {
  auto id = Identify(ctx, d);
  if (!id.ok()) return id.status();
  if (id->role != role) {
    return Refused(d,
                   Error(absl::StatusCode::kPermissionDenied, reason::kRoleNotAllowed,
                         absl::StrCat("this call needs the ", RoleName(role), " role; the certificate has ",
                                      RoleName(id->role))),
                   &*id);
  }
  return id;
}

}  // namespace carebroker
