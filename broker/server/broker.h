// The carebroker server: config in, a listening mutual-TLS gRPC server out.
//
//   auto broker = Broker::Start(config);   // opens the store, binds, serves
//   broker->port();                        // the bound port (config may say :0)
//   broker->Shutdown();                    // graceful: streams end, store drains
//
// Serves carebroker.v1.Exchange, Consent, Policy, grpc.health.v1.Health and server
// reflection, all over mutual TLS only: a client needs a certificate from
// tls.ca that is in date and not revoked in tls.crl, or the handshake fails.
// A second listener (metrics.listen, plain HTTP) serves /metrics, /healthz
// and /readyz. Health tells the truth: SERVING (and /readyz 200) only while
// the store takes writes and the audit log is sound, checked every second.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "broker/config/config.h"
#include "broker/http/http_server.h"
#include "core/clock.h"
#include "broker/server/exchange_service.h"
#include "broker/store/store.h"

namespace grpc {
class Server;
}

namespace carebroker {

class CertificateGate;

class ExchangeService;
class ConsentService;
class PolicyService;
class AuditService;
namespace audit {
class AuditLog;
}
class PolicyGate;
class Mailboxes;
class MemoryBudget;
class IdentityCache;
struct ExchangeMetrics;
namespace metrics {
class Registry;
}

struct BrokerOptions {
  // Time for expiry, visibility and acceptance stamps. Not owned.
  const Clock* clock = &SystemClock::Get();
};

class Broker {
 public:
  // Opens the store, writes the CRL lookup folder, binds and starts serving.
  // Errors: INVALID_ARGUMENT (TLS material or CRL unusable, naming the
  // config key), UNAVAILABLE (store cannot open, address cannot be bound).
  static absl::StatusOr<std::unique_ptr<Broker>> Start(std::shared_ptr<const Config> config,
                                                       BrokerOptions options = {});
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  int port() const { return port_; }
  // "127.0.0.1:PORT" style address clients can dial.
  std::string address() const;
  // The metrics listener's bound port; 0 when metrics.listen is off.
  int metrics_port() const;

  // Whether the broker can take messages now (the last readiness check):
  // OK, or why not (UNAVAILABLE STORE_UNAVAILABLE or AUDIT_UNAVAILABLE).
  absl::Status Readiness() const;
  // Runs the readiness check now (also run every second).
  absl::Status CheckReadiness();

  // Runs expiry and purge now (also run every delivery.sweep_interval).
  absl::StatusOr<SweepResult> SweepNow();
  // Wakes every Receive stream (as the housekeeping tick does each second),
  // so visibility timeouts are noticed at once.
  void WakeAll();

  // Reloads the agreements folder (SIGHUP): all or nothing; on error the
  // old set stays in force and the errors are returned and logged.
  absl::Status ReloadPolicy();

  // Stops accepting calls, ends streams (unacked deliveries are released),
  // drains the store. Idempotent.
  void Shutdown();

 private:
  Broker() = default;
  void Housekeeping();
  void RegisterMetrics();
  http::HttpResponse ServeMetrics(const http::HttpRequest& r);
  std::vector<MailboxStat> MailboxStatsForScrape() ABSL_LOCKS_EXCLUDED(stats_mu_);

  std::shared_ptr<const Config> config_;
  const Clock* clock_ = nullptr;
  std::shared_ptr<CertificateGate> gate_;  // reports refusals to audit_ (the server stops first)
  std::unique_ptr<Store> store_;
  std::unique_ptr<audit::AuditLog> audit_;
  std::unique_ptr<AuditService> audit_service_;
  std::unique_ptr<Mailboxes> mailboxes_;
  std::unique_ptr<MemoryBudget> budget_;
  std::unique_ptr<IdentityCache> identities_;
  std::unique_ptr<std::atomic<int>> streams_;
  std::unique_ptr<PolicyGate> policy_;
  std::unique_ptr<Executor> executor_;  // intake: parse, decide, render
  std::unique_ptr<SendPipeline> sends_;
  std::unique_ptr<ServiceDeps> deps_;
  std::unique_ptr<ExchangeService> service_;
  std::unique_ptr<ConsentService> consent_service_;
  std::unique_ptr<PolicyService> policy_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<metrics::Registry> metrics_;
  std::unique_ptr<ExchangeMetrics> exchange_metrics_;
  std::unique_ptr<http::HttpServer> metrics_server_;

  absl::Mutex stats_mu_;
  std::vector<MailboxStat> stats_ ABSL_GUARDED_BY(stats_mu_);
  bool stats_fresh_ ABSL_GUARDED_BY(stats_mu_) = false;  // read during this scrape

  mutable absl::Mutex ready_mu_;
  absl::Status readiness_ ABSL_GUARDED_BY(ready_mu_) = absl::UnavailableError("starting");

  std::thread housekeeping_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace carebroker
