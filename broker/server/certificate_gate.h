// Client certificate verification, done here rather than inside gRPC's TLS
// layer so that every refused certificate can be named and audited.
//
// The CA bundle and CRL can be replaced while the server runs (a reload, or
// a new CRL file): each handshake checks against the set in force when it
// starts.
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
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

typedef struct x509_store_st X509_STORE;

namespace grpc::experimental {
class CertificateVerifier;
}

namespace carebroker {

// The server's own certificate, as presented in handshakes.
struct ServerIdentity {
  std::string subject;
  absl::Time not_after;
};

// Checks a server certificate chain and key before they are put in force:
// both readable PEM, the key the certificate's, the certificate in date at
// `now`. Errors name the config key (tls.cert, tls.key).
absl::StatusOr<ServerIdentity> CheckServerIdentity(const std::string& cert_pem, const std::string& key_pem,
                                                   absl::Time now);

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

  // What a CRL past its next-update time does (tls.crl_expired).
  enum class CrlExpired {
    kRefuse,  // every handshake is refused (CRL_EXPIRED) until a fresh CRL
    kWarn,    // the stale list is still applied; only the alarm is raised
  };

  // `ca_pem`: one or more CA certificates; `crl_pem`: empty, or a CRL
  // signed by one of them (with kRefuse, not past its next-update time at
  // `now`). Errors name the config key (tls.ca, tls.crl).
  static absl::StatusOr<std::shared_ptr<CertificateGate>> Create(const std::string& ca_pem, const std::string& crl_pem,
                                                                absl::Time now,
                                                                CrlExpired mode = CrlExpired::kRefuse);

  // A CA bundle and CRL validated as Create does, ready to Install.
  struct Trust;
  static absl::StatusOr<std::shared_ptr<const Trust>> Prepare(const std::string& ca_pem, const std::string& crl_pem,
                                                              absl::Time now, CrlExpired mode);
  // Every later handshake is checked against `trust`.
  void Install(std::shared_ptr<const Trust> trust) ABSL_LOCKS_EXCLUDED(mu_);

  // OK, or PERMISSION_DENIED with the reason (also in `refusal`, when
  // given). `chain_pem`: the peer's certificate first, then intermediates.
  absl::Status Check(absl::string_view chain_pem, Refusal* refusal = nullptr) const;
  // Check, with a refusal reported to the sink: what a listener's
  // handshake calls (the gRPC verifier, the HTTPS listener).
  absl::Status Decide(absl::string_view chain_pem) const;

  // Where refusals are reported (the audit log); set once, before the
  // server starts.
  void SetRefusalSink(RefusalSink sink) { sink_ = std::move(sink); }

  // The CRL's next-update time (when a fresh CRL is due), if there is a
  // CRL that names one.
  std::optional<absl::Time> crl_next_update() const ABSL_LOCKS_EXCLUDED(mu_);
  // Whether the CRL in force is past its next-update time at `now`.
  bool crl_expired(absl::Time now) const ABSL_LOCKS_EXCLUDED(mu_);

  // For grpc::experimental::TlsServerCredentialsOptions::set_certificate_verifier.
  std::shared_ptr<grpc::experimental::CertificateVerifier> Verifier();

 private:
  std::shared_ptr<const Trust> trust() const ABSL_LOCKS_EXCLUDED(mu_);

  CertificateGate() = default;
  RefusalSink sink_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const Trust> trust_ ABSL_GUARDED_BY(mu_);
  friend class GateVerifier;
};

}  // namespace carebroker
