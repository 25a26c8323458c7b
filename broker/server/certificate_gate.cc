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
    CertificateGate::Refusal refusal;
    absl::Status s = gate_->Check(chain, &refusal);
    if (!s.ok() && gate_->sink_) gate_->sink_(refusal);
    *sync_status = s.ok() ? grpc::Status::OK : grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(s.message()));
    return true;
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  std::shared_ptr<CertificateGate> gate_;
};

absl::StatusOr<std::shared_ptr<CertificateGate>> CertificateGate::Create(const std::string& ca_pem,
                                                                       const std::string& crl_pem, absl::Time now) {
  std::shared_ptr<CertificateGate> gate(new CertificateGate);
  gate->store_ = X509_STORE_new();
  if (gate->store_ == nullptr) return absl::ResourceExhaustedError("cannot allocate a certificate store");
  std::vector<Cert> cas = ReadCerts(ca_pem);
  if (cas.empty()) return ConfigInvalid("tls.ca", "no PEM certificate in it");
  for (const Cert& ca : cas) X509_STORE_add_cert(gate->store_, ca.get());
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
    if (next != nullptr && X509_cmp_time(next, const_cast<time_t*>(&now_t)) < 0) {
      return ConfigInvalid("tls.crl", "has passed its next-update time; issue a fresh CRL");
    }
    if (next != nullptr) {
      struct tm tm {};
      if (ASN1_TIME_to_tm(next, &tm) == 1) gate->crl_next_update_ = absl::FromTimeT(timegm(&tm));
    }
    X509_STORE_add_crl(gate->store_, crl.get());
    X509_STORE_set_flags(gate->store_, X509_V_FLAG_CRL_CHECK);
  }
  return gate;
}

CertificateGate::~CertificateGate() { X509_STORE_free(store_); }

absl::Status CertificateGate::Check(absl::string_view chain_pem, Refusal* refusal) const {
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
    if (ctx && untrusted && X509_STORE_CTX_init(ctx.get(), store_, chain[0].get(), untrusted) == 1 &&
        X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT) == 1) {
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

std::shared_ptr<grpc::experimental::CertificateVerifier> CertificateGate::Verifier() {
  return grpc::experimental::ExternalCertificateVerifier::Create<GateVerifier>(shared_from_this());
}

}  // namespace carebroker
