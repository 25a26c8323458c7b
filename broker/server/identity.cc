#include "broker/server/identity.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/match.h"
#include "broker/config/config.h"
#include "core/status.h"
#include "core/reasons.h"

namespace carebroker {
namespace {

absl::Status Bad(absl::string_view why) {
  return Error(absl::StatusCode::kUnauthenticated, reason::kCertificateIdentityInvalid, why);
}

}  // namespace

std::vector<std::string> OdsCodesIn(X509* cert) {
  std::vector<std::string> out;
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri = gn->d.uniformResourceIdentifier;
    absl::string_view v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)), ASN1_STRING_length(uri));
    if (absl::StartsWith(v, kOdsUriPrefix)) out.emplace_back(v.substr(kOdsUriPrefix.size()));
  }
  GENERAL_NAMES_free(sans);
  return out;
}

absl::StatusOr<Identity> IdentityFromPem(absl::string_view pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                               &BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr),
                                                  &X509_free);
  if (!cert) return Bad("client certificate cannot be read");

  Identity id;
  const std::vector<std::string> codes = OdsCodesIn(cert.get());
  if (codes.size() != 1) return Bad("client certificate must name exactly one ODS code (subjectAltName URI)");
  id.org = OrgCode(codes[0]);
  if (!IsOdsCodeShape(id.org.str())) return Bad("client certificate ODS code is malformed");

  const X509_NAME* subject = X509_get_subject_name(cert.get());
  const int idx = X509_NAME_get_index_by_NID(subject, NID_organizationalUnitName, -1);
  if (idx < 0 || X509_NAME_get_index_by_NID(subject, NID_organizationalUnitName, idx) >= 0) {
    return Bad("client certificate must name exactly one role (subject OU)");
  }
  const ASN1_STRING* ou = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
  absl::string_view role(reinterpret_cast<const char*>(ASN1_STRING_get0_data(ou)), ASN1_STRING_length(ou));
  if (role == "agency") {
    id.role = Role::kAgency;
  } else if (role == "ig-officer") {
    id.role = Role::kIgOfficer;
  } else if (role == "operator") {
    id.role = Role::kOperator;
  } else {
    return Bad("client certificate role (subject OU) is not agency, ig-officer or operator");
  }
  return id;
}

absl::StatusOr<Identity> IdentityCache::Get(absl::string_view pem) {
  {
    absl::MutexLock l(&mu_);
    if (auto it = cache_.find(pem); it != cache_.end()) return it->second;
  }
  auto id = IdentityFromPem(pem);
  if (!id.ok()) return id;
  absl::MutexLock l(&mu_);
  if (cache_.size() >= kMaxEntries) cache_.clear();
  cache_.emplace(std::string(pem), *id);
  return id;
}

}  // namespace carebroker
