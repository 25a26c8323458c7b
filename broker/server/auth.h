// Who is calling, for every service: the identity from the verified client
// certificate (server/identity.h), its registration and its role. Every
// refusal is recorded in the audit log (CERTIFICATE_REFUSED entries).
#pragma once

#include <grpcpp/server_context.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "broker/server/identity.h"
#include "broker/server/service_deps.h"

namespace carebroker {

// The caller's identity, requiring `role` and a registered organisation:
//   UNAUTHENTICATED    CERTIFICATE_REQUIRED, or no usable certificate identity
//   PERMISSION_DENIED  ROLE_NOT_ALLOWED, UNKNOWN_ORGANISATION
absl::StatusOr<Identity> Authorize(grpc::CallbackServerContext* ctx, const ServiceDeps& d, Role role);

// The caller's identity with any role (the caller checks the role).
absl::StatusOr<Identity> Identify(grpc::CallbackServerContext* ctx, const ServiceDeps& d);

// PERMISSION_DENIED ROLE_NOT_ALLOWED for `what`, recorded in the audit log.
absl::Status RoleNotAllowed(const ServiceDeps& d, const Identity& who, absl::string_view what);

}  // namespace carebroker
