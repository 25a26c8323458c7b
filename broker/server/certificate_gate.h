// Client certificate verification, done here rather than inside gRPC's TLS
// layer so that every refused certificate can be named and audited.
//
// The TLS handshake still proves the client holds the certificate's key
// (gRPC asks for a certificate and does not verify it); the gate then
// checks the chain against tls.ca, the purpose (TLS client), the validity
// dates and tls.crl, and refuses the handshake on any failure.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

typedef struct x509_store_st X509_STORE;

namespace grpc::experimental {
class CertificateVerifier;
}

namespace carebroker {

class CertificateGate : public std::enable_shared_from_this<CertificateGate> {
 public:
  // A refused certificate: the reason (CERTIFICATE_UNTRUSTED, _EXPIRED,
  // _NOT_YET_VALID, _REVOKED, _INVALID), the organisation it claims
  // (unverified; "" when none can be read) and OpenSSL's words for it.
  struct Refusal {
    std::string reason;
    std::string claimed_org;
    std::string detail;
  };
  using RefusalSink = std::function<void(const Refusal&)>;

  // `ca_pem`: one or more CA certificates; `crl_pem`: empty, or a CRL
  // signed by one of them and not past its next-update time at `now`.
  // Errors name the config key (tls.ca, tls.crl).
  static absl::StatusOr<std::shared_ptr<CertificateGate>> Create(const std::string& ca_pem, const std::string& crl_pem,
                                                                absl::Time now);
  ~CertificateGate();

  // OK, or PERMISSION_DENIED with the reason (also in `refusal`, when
  // given). `chain_pem`: the peer's certificate first, then intermediates.
  absl::Status Check(absl::string_view chain_pem, Refusal* refusal = nullptr) const;

  // Where refusals are reported (the audit log); set once, before the
  // server starts.
  void SetRefusalSink(RefusalSink sink) { sink_ = std::move(sink); }

  // The CRL's next-update time (when a fresh CRL is due), if there is a
  // CRL that names one.
  std::optional<absl::Time> crl_next_update() const { return crl_next_update_; }

  // For grpc::experimental::TlsServerCredentialsOptions::set_certificate_verifier.
  std::shared_ptr<grpc::experimental::CertificateVerifier> Verifier();

 private:
  CertificateGate() = default;
  X509_STORE* store_ = nullptr;
  RefusalSink sink_;
  std::optional<absl::Time> crl_next_update_;
  friend class GateVerifier;
};

}  // namespace carebroker
