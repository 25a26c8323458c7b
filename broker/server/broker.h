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
// and /readyz. A third (mesh.listen, off unless configured) serves the MESH
// API over HTTPS with mutual TLS (broker/mesh/service.h), its client
// certificates decided by the same gate. Health tells the truth: SERVING (and /readyz 200) only while
// the store takes writes and the audit log is sound, checked every second.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "broker/config/config.h"
#include "broker/http/http_server.h"
#include "broker/server/certificate_gate.h"
#include "broker/server/override_reviews.h"
#include "carebroker/v1/policy.pb.h"
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
class OperationsService;
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
namespace mesh {
class MeshService;
}

struct BrokerOptions {
  // Time for expiry, visibility and acceptance stamps. Not owned.
  const Clock* clock = &SystemClock::Get();
  // Reads the config file again for a reload (main: LoadConfig of the
  // --config file); unset, a reload re-reads the files the config in force
  // names (TLS files, keys, agreements) but not the config itself.
  std::function<absl::StatusOr<std::shared_ptr<const Config>>()> reload_config;
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
  // The MESH front door's bound port; 0 when mesh.listen is off.
  int mesh_port() const;

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

  // Reloads (SIGHUP, carebrokerctl reload) what can change without a
  // restart: the config's organisations, routing, pseudonymisation keys,
  // consent roles and log level; the CA bundle, CRL, server certificate and
  // key; the agreements folder. All is validated first, then put in force
  // together: on any error the old set stays, and the errors are returned
  // (INVALID_ARGUMENT CONFIG_INVALID, one "FILE:LINE: key: reason" a line),
  // logged and audited. Open streams stay up; new handshakes use the new
  // certificate (within a second) and the new CA and CRL (at once).
  absl::StatusOr<v1::ReloadResponse> Reload(const std::string& actor) ABSL_LOCKS_EXCLUDED(reload_mu_);

  // Re-reads tls.crl if the file changed since it was last read (run every
  // second): a published CRL takes effect without anyone acting.
  void WatchCrl() ABSL_LOCKS_EXCLUDED(reload_mu_);

  // Stops accepting calls, ends streams (unacked deliveries are released),
  // drains the store. Idempotent.
  void Shutdown();

 private:
  Broker() = default;
  void Housekeeping();
  void RegisterMetrics();
  http::HttpResponse ServeMetrics(const http::HttpRequest& r);
  std::vector<MailboxStat> MailboxStatsForScrape() ABSL_LOCKS_EXCLUDED(stats_mu_);
  // Writes the server's key and certificate where gRPC's file watcher reads
  // them (one file, replaced whole, so a key never meets another's chain).
  absl::Status WriteServerIdentity(const std::string& cert_pem, const std::string& key_pem,
                                   const std::string& ca_pem);
  void RecordReload(const std::string& actor, v1::AuditEvent event, const std::string& detail);
  void AlarmOnStaleCrl();

  std::shared_ptr<const Config> config_;
  const Clock* clock_ = nullptr;
  std::shared_ptr<CertificateGate> gate_;  // reports refusals to audit_ (the server stops first)
  std::unique_ptr<Store> store_;
  std::unique_ptr<audit::AuditLog> audit_;
  std::unique_ptr<AuditService> audit_service_;
  std::unique_ptr<OverrideReviews> override_reviews_;  // read by housekeeping, shown by metrics
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
  std::unique_ptr<OperationsService> operations_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  intptr_t channelz_id_ = 0;  // the server in gRPC's channelz; 0: unknown
  std::unique_ptr<metrics::Registry> metrics_;
  std::unique_ptr<ExchangeMetrics> exchange_metrics_;
  std::unique_ptr<http::HttpServer> metrics_server_;
  std::unique_ptr<mesh::MeshService> mesh_service_;
  // Destroyed in Shutdown only once the store is closed: store callbacks
  // answer its requests.
  std::unique_ptr<http::HttpServer> mesh_server_;

  absl::Mutex stats_mu_;
  std::vector<MailboxStat> stats_ ABSL_GUARDED_BY(stats_mu_);
  bool stats_fresh_ ABSL_GUARDED_BY(stats_mu_) = false;  // read during this scrape

  mutable absl::Mutex ready_mu_;
  absl::Status readiness_ ABSL_GUARDED_BY(ready_mu_) = absl::UnavailableError("starting");

  // What the last reload put in force, for the file watchers and metrics.
  struct CrlFile {
    std::string path;
    int64_t mtime_ns = 0;
    uint64_t size = 0;
    uint64_t inode = 0;
    bool operator==(const CrlFile&) const = default;
  };
  static CrlFile StatCrl(const std::string& path);
  std::function<absl::StatusOr<std::shared_ptr<const Config>>()> reload_config_;
  std::string tls_dir_;  // data_dir/tls: what gRPC's file watcher reads
  mutable absl::Mutex reload_mu_;
  std::string ca_pem_ ABSL_GUARDED_BY(reload_mu_);
  CrlFile crl_file_ ABSL_GUARDED_BY(reload_mu_);
  ServerIdentity identity_ ABSL_GUARDED_BY(reload_mu_);
  absl::Time loaded_at_ ABSL_GUARDED_BY(reload_mu_);
  absl::Time crl_warned_at_ ABSL_GUARDED_BY(reload_mu_) = absl::InfinitePast();
  metrics::Family<metrics::Counter>* reloads_ = nullptr;

  std::thread housekeeping_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace carebroker
