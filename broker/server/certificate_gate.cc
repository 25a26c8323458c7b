#include "broker/server/certificate_gate.h"

#include <grpcpp/security/tls_certificate_verifier.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/reasons.h"
#include "broker/server/identity.h"

namespace carebroker {
namespace {

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
using Cert = std::unique_ptr<X509, decltype(&X509_free)>;

Bio MemBio(absl::string_view pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
}

// Every certificate in `pem`, in order.
std::vector<Cert> ReadCerts(absl::string_view pem) {
  std::vector<Cert> out;
  Bio bio = MemBio(pem);
  while (X509* c = bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr) out.emplace_back(c, &X509_free);
  return out;
}

std::string ReasonFor(int error) {
  switch (error) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return reason::kCertificateExpired;
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return reason::kCertificateNotYetValid;
    case X509_V_ERR_CERT_REVOKED:
      return reason::kCertificateRevoked;
    case X509_V_ERR_CRL_HAS_EXPIRED:
      return reason::kCrlExpired;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      return reason::kCertificateUntrusted;
    default:
      return reason::kCertificateInvalid;
  }
}

}  // namespace

// Runs the gate inside gRPC's handshake (synchronously: a chain check is
// microseconds) and reports each refusal.
class GateVerifier final : public grpc::experimental::ExternalCertificateVerifier {
 public:
  explicit GateVerifier(std::shared_ptr<CertificateGate> gate) : gate_(std::move(gate)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request, std::function<void(grpc::Status)>,
              grpc::Status* sync_status) override {
    // The peer's certificate, then what else it sent (on a server, the
    // "full chain" holds only the certificates after the peer's own).
    const grpc::string_ref leaf = request->peer_cert(), rest = request->peer_cert_full_chain();
    std::string chain(leaf.data(), leaf.size());
    chain.append(rest.data(), rest.size());
    absl::Status s = gate_->Decide(chain);
    *sync_status = s.ok() ? grpc::Status::OK : grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(s.message()));
    return true;
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  std::shared_ptr<CertificateGate> gate_;
};

struct CertificateGate::Trust {
  ~Trust() { X509_STORE_free(store); }
  X509_STORE* store = nullptr;
  std::optional<absl::Time> crl_next_update;
  CrlExpired mode = CrlExpired::kRefuse;
};

absl::StatusOr<std::shared_ptr<CertificateGate>> CertificateGate::Create(const std::string& ca_pem,
                                                                       const std::string& crl_pem, absl::Time now,
                                                                       CrlExpired mode) {
  auto trust = Prepare(ca_pem, crl_pem, now, mode);
  if (!trust.ok()) return trust.status();
  std::shared_ptr<CertificateGate> gate(new CertificateGate);
  gate->Install(*std::move(trust));
  return gate;
}

absl::Status CertificateGate::Decide(absl::string_view chain_pem) const {
  Refusal refusal;
  absl::Status s = Check(chain_pem, &refusal);
  if (!s.ok() && sink_) sink_(refusal);
  return s;
}

void CertificateGate::Install(std::shared_ptr<const Trust> trust) {
  absl::MutexLock l(&mu_);
  trust_ = std::move(trust);
}

std::shared_ptr<const CertificateGate::Trust> CertificateGate::trust() const {
  absl::MutexLock l(&mu_);
  return trust_;
}

std::optional<absl::Time> CertificateGate::crl_next_update() const { return trust()->crl_next_update; }

bool CertificateGate::crl_expired(absl::Time now) const {
  const auto next = crl_next_update();
  return next.has_value() && *next < now;
}

absl::StatusOr<std::shared_ptr<const CertificateGate::Trust>> CertificateGate::Prepare(const std::string& ca_pem,
                                                                                     const std::string& crl_pem,
                                                                                     absl::Time now, CrlExpired mode) {
  auto t = std::make_shared<Trust>();
  t->mode = mode;
  t->store = X509_STORE_new();
  if (t->store == nullptr) return absl::ResourceExhaustedError("cannot allocate a certificate store");
  std::vector<Cert> cas = ReadCerts(ca_pem);
  if (cas.empty()) return ConfigInvalid("tls.ca", "no PEM certificate in it");
  for (const Cert& ca : cas) X509_STORE_add_cert(t->store, ca.get());
  if (!crl_pem.empty()) {
    Bio bio = MemBio(crl_pem);
    std::unique_ptr<X509_CRL, decltype(&X509_CRL_free)> crl(
        bio ? PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr) : nullptr, &X509_CRL_free);
    if (!crl) return ConfigInvalid("tls.crl", "not a PEM certificate revocation list");
    bool signed_by_ca = false;
    for (const Cert& ca : cas) {
      signed_by_ca |= X509_NAME_cmp(X509_get_subject_name(ca.get()), X509_CRL_get_issuer(crl.get())) == 0 &&
                      X509_CRL_verify(crl.get(), X509_get0_pubkey(ca.get())) == 1;
    }
    if (!signed_by_ca) return ConfigInvalid("tls.crl", "not signed by a CA in tls.ca");
    const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl.get());
    const time_t now_t = absl::ToTimeT(now);
    if (mode == CrlExpired::kRefuse && next != nullptr && X509_cmp_time(next, const_cast<time_t*>(&now_t)) < 0) {
      return ConfigInvalid("tls.crl", "has passed its next-update time; issue a fresh CRL (or set tls.crl_expired: warn)");
    }
    if (next != nullptr) {
      struct tm tm {};
      if (ASN1_TIME_to_tm(next, &tm) == 1) t->crl_next_update = absl::FromTimeT(timegm(&tm));
    }
    X509_STORE_add_crl(t->store, crl.get());
    X509_STORE_set_flags(t->store, X509_V_FLAG_CRL_CHECK);
  }
  return std::shared_ptr<const Trust>(std::move(t));
}

namespace {

// With tls.crl_expired: warn, a stale CRL is still applied but its age is
// not a reason to refuse.
int IgnoreCrlExpiry(int ok, X509_STORE_CTX* ctx) {
  return ok == 0 && X509_STORE_CTX_get_error(ctx) == X509_V_ERR_CRL_HAS_EXPIRED ? 1 : ok;
}

}  // namespace

absl::Status CertificateGate::Check(absl::string_view chain_pem, Refusal* refusal) const {
  const std::shared_ptr<const Trust> trust = this->trust();
  std::vector<Cert> chain = ReadCerts(chain_pem);
  Refusal r;
  if (chain.empty()) {
    r = {reason::kCertificateInvalid, "", "no readable client certificate"};
  } else {
    // Unverified: what the certificate says, bounded in length.
    for (const std::string& ods : OdsCodesIn(chain[0].get())) {
      if (ods.size() <= 16) {
        r.claimed_org = ods;
        break;
      }
    }
    STACK_OF(X509)* untrusted = sk_X509_new_null();
    for (size_t i = 1; untrusted != nullptr && i < chain.size(); ++i) sk_X509_push(untrusted, chain[i].get());
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(), &X509_STORE_CTX_free);
    int ok = 0;
    if (ctx && untrusted && X509_STORE_CTX_init(ctx.get(), trust->store, chain[0].get(), untrusted) == 1 &&
        X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT) == 1) {
      if (trust->mode == CrlExpired::kWarn) X509_STORE_CTX_set_verify_cb(ctx.get(), &IgnoreCrlExpiry);
      ok = X509_verify_cert(ctx.get());
    }
    const int error = ctx ? X509_STORE_CTX_get_error(ctx.get()) : X509_V_ERR_OUT_OF_MEM;
    sk_X509_free(untrusted);  // the certificates are owned by `chain`
    if (ok == 1) return absl::OkStatus();
    r.reason = ReasonFor(error);
    r.detail = X509_verify_cert_error_string(error);
  }
  absl::Status s = Error(absl::StatusCode::kPermissionDenied, r.reason,
                         absl::StrCat("client certificate refused: ", r.detail));
  if (refusal != nullptr) *refusal = std::move(r);
  return s;
}

absl::StatusOr<ServerIdentity> CheckServerIdentity(const std::string& cert_pem, const std::string& key_pem,
                                                   absl::Time now) {
  std::vector<Cert> chain = ReadCerts(cert_pem);
  if (chain.empty()) return ConfigInvalid("tls.cert", "no PEM certificate in it");
  Bio bio = MemBio(key_pem);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr, &EVP_PKEY_free);
  if (!key) return ConfigInvalid("tls.key", "not a PEM private key (or it is encrypted)");
  if (X509_check_private_key(chain[0].get(), key.get()) != 1) {
    return ConfigInvalid("tls.key", "is not the key of the certificate in tls.cert");
  }
  const time_t now_t = absl::ToTimeT(now);
  if (X509_cmp_time(X509_get0_notAfter(chain[0].get()), const_cast<time_t*>(&now_t)) < 0) {
    return ConfigInvalid("tls.cert", "has expired");
  }
  if (X509_cmp_time(X509_get0_notBefore(chain[0].get()), const_cast<time_t*>(&now_t)) > 0) {
    return ConfigInvalid("tls.cert", "is not valid yet");
  }
  ServerIdentity id;
  char subject[512];
  X509_NAME_oneline(X509_get_subject_name(chain[0].get()), subject, sizeof subject);
  id.subject = subject;
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(chain[0].get()), &tm) == 1) id.not_after = absl::FromTimeT(timegm(&tm));
  return id;
}

std::shared_ptr<grpc::experimental::CertificateVerifier> CertificateGate::Verifier() {
  return grpc::experimental::ExternalCertificateVerifier::Create<GateVerifier>(shared_from_this());
}

}  // namespace carebroker
