// Identity from a verified client certificate (see deploy/pki/README.md):
//   organisation: subjectAltName URI "urn:nhs-uk:addressing:ods:<ODS code>"
//                 (the addressing form NHS messaging uses for ODS codes);
//   role:         the subject's organizationalUnitName (OU): one of
//                 "agency", "ig-officer", "operator".
// Exactly one ODS URI and one known role are required; anything else is
// UNAUTHENTICATED with reason CERTIFICATE_IDENTITY_INVALID.
#pragma once

#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/types.h"

typedef struct x509_st X509;

namespace carebroker {

inline constexpr absl::string_view kOdsUriPrefix = "urn:nhs-uk:addressing:ods:";

// Every ODS code the certificate names in a subjectAltName URI
// (kOdsUriPrefix), in order; unverified.
std::vector<std::string> OdsCodesIn(X509* cert);

// Parses a PEM certificate (already verified by the TLS handshake).
absl::StatusOr<Identity> IdentityFromPem(absl::string_view pem);

// Memoises IdentityFromPem per certificate; bounded.
class IdentityCache {
 public:
  absl::StatusOr<Identity> Get(absl::string_view pem);

 private:
  static constexpr size_t kMaxEntries = 4096;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Identity> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace carebroker
