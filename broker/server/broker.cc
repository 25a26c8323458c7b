#include "broker/server/broker.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <filesystem>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/files.h"
#include "core/time.h"
#include "core/status.h"
#include "core/log.h"
#include "core/reasons.h"
#include "broker/exchange/exchange_metrics.h"
#include "broker/exchange/mailboxes.h"
#include "broker/http/http_server.h"
#include "core/metrics.h"
#include "broker/server/exchange_service.h"
#include "broker/server/identity.h"
#include "audit/log.h"
#include "broker/server/audit_service.h"
#include "broker/server/certificate_gate.h"
#include "broker/server/policy_services.h"
#include "broker/store/store_sync.h"
#include "broker/store/pg_store.h"
#include "broker/store/sqlite_store.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view key) {
  auto data = ReadFileToString(path, "file");
  if (!data.ok()) return ConfigInvalid(key, data.status().message());
  return data;
}

// The configured store: the embedded SQLite file, or the PostgreSQL
// database replicas share (migrated here if it is behind this build).
absl::StatusOr<std::unique_ptr<Store>> OpenStore(const Config& config) {
  if (!config.proto().store().has_postgres()) return OpenSqliteStore(config.sqlite_path());
  const v1::PostgresStore& p = config.proto().store().postgres();
  PgStoreOptions o{p.connection(), {{"sslmode", p.sslmode()}}, static_cast<int>(p.pool_size())};
  for (const auto& [key, value] : {std::pair{"sslrootcert", &p.sslrootcert()}, std::pair{"sslcert", &p.sslcert()},
                                   std::pair{"sslkey", &p.sslkey()}, std::pair{"passfile", &p.password_file()}}) {
    if (!value->empty()) o.options.emplace_back(key, *value);
  }
  o.options.emplace_back("application_name", "carebroker");
  return OpenPgStore(o);
}

bool IsDirectiveNotStanding(const absl::Status& s) {
  return ReasonOf(s) == reason::kDirectiveNotStanding;
}

std::string DescribeStore(const Config& config) {
  if (!config.proto().store().has_postgres()) return config.sqlite_path();
  return absl::StrCat("PostgreSQL (", config.proto().store().postgres().pool_size(), " connections, sslmode ",
                      config.proto().store().postgres().sslmode(), ")");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Broker>> Broker::Start(std::shared_ptr<const Config> config, BrokerOptions options) {
  std::unique_ptr<Broker> b(new Broker);
  b->config_ = config;
  b->clock_ = options.clock;
  const auto& c = config->proto();

  std::error_code ec;
  fs::create_directories(c.data_dir(), ec);
  if (ec) {
    return Error(absl::StatusCode::kUnavailable, reason::kDataDirUnavailable,
                 absl::StrCat("cannot create data_dir ", c.data_dir(), ": ", ec.message()));
  }
  fs::permissions(c.data_dir(), fs::perms::owner_all, fs::perm_options::replace, ec);

  auto cert = ReadFile(c.tls().cert(), "tls.cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadFile(c.tls().key(), "tls.key");
  if (!key.ok()) return key.status();
  auto ca = ReadFile(c.tls().ca(), "tls.ca");
  if (!ca.ok()) return ca.status();

  auto provider = std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
      *ca, std::vector<grpc::experimental::IdentityKeyCertPair>{{*key, *cert}});
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_root_certs();
  tls.watch_identity_key_cert_pairs();
  // gRPC asks for a certificate and checks the client holds its key; the
  // gate checks the chain, dates and CRL, so each refusal can be audited.
  tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  std::string crl;
  if (!c.tls().crl().empty()) {
    auto read = ReadFile(c.tls().crl(), "tls.crl");
    if (!read.ok()) return read.status();
    crl = *std::move(read);
  }
  auto gate = CertificateGate::Create(*ca, crl, options.clock->Now());
  if (!gate.ok()) return gate.status();
  b->gate_ = *std::move(gate);
  tls.set_certificate_verifier(b->gate_->Verifier());

  // Policy first: a broker with an invalid agreement set does not start.
  b->policy_ = std::make_unique<PolicyGate>(config);
  if (auto s = b->policy_->Reload(); !s.ok()) return s;

  auto store = OpenStore(*config);
  if (!store.ok()) return store.status();
  b->store_ = *std::move(store);
  {
    auto history = ReadConsentSync(*b->store_, "");
    if (!history.ok()) return history.status();
    for (const auto& change : *history) {
      // Two replicas may both store a withdrawal of one directive: the
      // second has no further effect.
      if (auto s = b->policy_->consent().Apply(change); !s.ok() && !IsDirectiveNotStanding(s)) {
        return Error(absl::StatusCode::kInternal, reason::kStoreCorrupt,
                     absl::StrCat("consent history does not replay at seq ", change.seq()));
      }
    }
  }
  // Every later change reaches the book through the store, in seq order:
  // this replica's before their Record answers, other replicas' as heard.
  b->store_->SetConsentListener([policy = b->policy_.get()](const v1::ConsentChange& change) {
    if (auto s = policy->consent().Apply(change); !s.ok()) {
      LogLine(absl::StrCat("consent change seq ", change.seq(), " not applied: ", s.message()));
    }
  });
  b->mailboxes_ = std::make_unique<Mailboxes>();
  b->budget_ = std::make_unique<MemoryBudget>(c.limits().memory_budget_bytes());
  b->identities_ = std::make_unique<IdentityCache>();
  b->streams_ = std::make_unique<std::atomic<int>>(0);
  Mailboxes* mailboxes = b->mailboxes_.get();
  b->store_->SetArrivalListener([mailboxes](const OrgCode& org) { mailboxes->Notify(org); });
  // The audit log before anything can happen: a broker whose log does not
  // match its own signed tree head does not start.
  const v1::AuditConfig& ac = c.audit();
  auto audit = audit::AuditLog::Open({.signing_key_pem = config->audit_signing_pem(),
                                      .subject_key = config->audit_subject_key(),
                                      .tree_head_every = ac.tree_head_every(),
                                      .tree_head_interval = FromDuration(ac.tree_head_interval())},
                                     *b->store_, *b->clock_);
  if (!audit.ok()) return audit.status();
  b->audit_ = *std::move(audit);
  b->metrics_ = std::make_unique<metrics::Registry>();
  b->exchange_metrics_ = std::make_unique<ExchangeMetrics>(*b->metrics_);
  auto& refusals = b->metrics_->AddCounters("carebroker_certificate_refusals_total",
                                            "TLS handshakes refused by the certificate gate, by reason.", {"reason"});
  b->gate_->SetRefusalSink([log = b->audit_.get(), &refusals](const CertificateGate::Refusal& r) {
    refusals.With({r.reason}).Inc();
    v1::AuditEntry e;
    e.set_actor(r.claimed_org);
    e.add_reasons(r.reason);
    e.set_detail(absl::StrCat("TLS handshake refused: ", r.detail,
                              r.claimed_org.empty() ? "" : "; the organisation named is the certificate's claim"));
    log->RecordRefusal(std::move(e));
  });
  const auto& lim = c.limits();
  b->executor_ = std::make_unique<Executor>(static_cast<int>(lim.intake_threads()), lim.intake_queue());
  b->sends_ = std::make_unique<SendPipeline>(*config, *b->store_, *b->mailboxes_, *b->budget_, *b->clock_,
                                             *b->policy_, *b->audit_, *b->executor_, *b->exchange_metrics_);
  b->deps_ = std::make_unique<ServiceDeps>(ServiceDeps{*config, *b->store_, *b->mailboxes_, *b->budget_, *b->clock_,
                                                       *b->identities_, *b->streams_, *b->policy_, *b->audit_,
                                                       *b->sends_, *b->exchange_metrics_});
  const ServiceDeps& deps = *b->deps_;
  if (auto r = AppendAuditSync(*b->store_, {PolicyLoadRecord(deps, absl::OkStatus(), "broker")}); !r.ok()) {
    return r.status();
  }
  // A head at start, so the log verifies from the first moment.
  if (auto s = b->audit_->SignNow(); !s.ok()) return s;
  b->service_ = std::make_unique<ExchangeService>(deps);
  b->consent_service_ = std::make_unique<ConsentService>(deps);
  b->policy_service_ = std::make_unique<PolicyService>(deps);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(c.listen(), grpc::experimental::TlsServerCredentials(tls), &b->port_);
  builder.RegisterService(b->service_.get());
  builder.RegisterService(b->consent_service_.get());
  builder.RegisterService(b->policy_service_.get());
  b->audit_service_ = std::make_unique<AuditService>(deps);
  builder.RegisterService(b->audit_service_.get());
  const int max_frame = static_cast<int>(c.limits().max_message_bytes() + (64 << 10));
  builder.SetMaxReceiveMessageSize(max_frame);
  builder.SetMaxSendMessageSize(max_frame);
  b->server_ = builder.BuildAndStart();
  if (!b->server_ || b->port_ == 0) {
    b->store_->Close();
    return Error(absl::StatusCode::kUnavailable, reason::kListenFailed, absl::StrCat("cannot listen on ", c.listen()));
  }
  b->RegisterMetrics();
  if (c.metrics().listen() != "off") {
    auto http = http::HttpServer::Start(c.metrics().listen(), [raw = b.get()](const http::HttpRequest& r) {
      return raw->ServeMetrics(r);
    });
    if (!http.ok()) {
      b->server_->Shutdown();
      b->store_->Close();
      return http.status();
    }
    b->metrics_server_ = *std::move(http);
  }
  // Serving only once the store has taken a write and the log is sound.
  (void)b->CheckReadiness();
  b->housekeeping_ = std::thread([raw = b.get()] { raw->Housekeeping(); });
  LogLine(absl::StrCat("listening on ", b->address(), " (mutual TLS), store ", DescribeStore(*config),
                       b->metrics_server_ ? absl::StrCat(", metrics on ", c.metrics().listen().substr(0, c.metrics().listen().rfind(':')),
                                                         ":", b->metrics_server_->port())
                                          : "",
                       ", ",
                   b->policy_->current()->agreements().agreements.size(), " agreements in force, ",
                   b->policy_->consent().people(), " people with recorded wishes"));
  return b;
}

std::string Broker::address() const {
  std::string host = config_->proto().listen().substr(0, config_->proto().listen().rfind(':'));
  return absl::StrCat(host, ":", port_);
}

void Broker::WakeAll() { mailboxes_->NotifyAll(); }

int Broker::metrics_port() const { return metrics_server_ ? metrics_server_->port() : 0; }

absl::Status Broker::Readiness() const {
  absl::MutexLock l(&ready_mu_);
  return readiness_;
}

absl::Status Broker::CheckReadiness() {
  absl::Status now = absl::OkStatus();
  if (!audit_->healthy()) {
    now = Error(absl::StatusCode::kUnavailable, reason::kAuditUnavailable,
                "the audit log failed its integrity check; restart after investigating");
  } else {
    auto r = AwaitStoreFor<bool>(absl::Seconds(2), [this](auto cb) { store_->CheckWritable(std::move(cb)); });
    if (!r.ok()) now = r.status();
  }
  bool changed;
  {
    absl::MutexLock l(&ready_mu_);
    changed = now.ok() != readiness_.ok() || readiness_.message() == "starting";
    readiness_ = now;
  }
  if (changed) {
    server_->GetHealthCheckService()->SetServingStatus(now.ok());
    LogLine(now.ok() ? std::string("ready: serving") : absl::StrCat("not ready: ", now.message()));
  }
  return now;
}

void Broker::RegisterMetrics() {
  metrics::Registry& r = *metrics_;
  r.AddCollector("carebroker_ready", "1 while the broker can take messages (store writable, audit log sound).",
                 metrics::Type::kGauge, {}, [this] { return std::vector<metrics::Sample>{{{}, Readiness().ok() ? 1.0 : 0.0}}; });
  r.AddCollector("carebroker_open_streams", "Open Receive and SendStream streams.", metrics::Type::kGauge, {},
                 [this] { return std::vector<metrics::Sample>{{{}, double(streams_->load())}}; });
  r.AddCollector("carebroker_receive_subscribers", "Receive streams listening on a mailbox.", metrics::Type::kGauge, {},
                 [this] { return std::vector<metrics::Sample>{{{}, double(mailboxes_->subscriber_count())}}; });
  r.AddCollector("carebroker_memory_budget_used_bytes", "Payload bytes held in memory against limits.memory_budget_bytes.",
                 metrics::Type::kGauge, {}, [this] { return std::vector<metrics::Sample>{{{}, double(budget_->used())}}; });
  r.AddCollector("carebroker_memory_budget_limit_bytes", "limits.memory_budget_bytes.", metrics::Type::kGauge, {},
                 [this] {
                   return std::vector<metrics::Sample>{{{}, double(config_->proto().limits().memory_budget_bytes())}};
                 });
  r.AddCollector("carebroker_audit_entries", "Entries in the audit log's Merkle tree.", metrics::Type::kGauge, {},
                 [this] { return std::vector<metrics::Sample>{{{}, double(audit_->size())}}; });
  r.AddCollector("carebroker_audit_signed_entries", "Entries covered by the latest signed tree head.",
                 metrics::Type::kGauge, {},
                 [this] { return std::vector<metrics::Sample>{{{}, double(audit_->LatestHead().tree_size())}}; });
  r.AddCollector("carebroker_audit_head_age_seconds", "Seconds since the latest signed tree head was signed.",
                 metrics::Type::kGauge, {}, [this] {
                   const auto head = audit_->LatestHead();
                   const absl::Time at = absl::FromUnixSeconds(head.timestamp().seconds()) +
                                         absl::Nanoseconds(head.timestamp().nanos());
                   return std::vector<metrics::Sample>{{{}, absl::ToDoubleSeconds(clock_->Now() - at)}};
                 });
  r.AddCollector("carebroker_crl_next_update_timestamp_seconds",
                 "When the CRL in force says a fresh one is due (Unix time); absent without a CRL.",
                 metrics::Type::kGauge, {}, [this] {
                   std::vector<metrics::Sample> out;
                   if (auto next = gate_->crl_next_update()) out.push_back({{}, absl::ToDoubleSeconds(*next - absl::UnixEpoch())});
                   return out;
                 });
  r.AddCollector("carebroker_policy_info", "The agreement set in force (value 1), labelled with its SHA-256 digest.",
                 metrics::Type::kGauge, {"digest"},
                 [this] { return std::vector<metrics::Sample>{{{policy_->current()->agreements().digest}, 1.0}}; });
  r.AddCollector("carebroker_policy_agreements", "Data-sharing agreements in force.", metrics::Type::kGauge, {}, [this] {
    return std::vector<metrics::Sample>{{{}, double(policy_->current()->agreements().agreements.size())}};
  });
  r.AddCollector("carebroker_mailbox_depth",
                 "Messages accepted and not yet acknowledged, expired or withheld, per recipient organisation.",
                 metrics::Type::kGauge, {"recipient"}, [this] {
                   std::vector<metrics::Sample> out;
                   for (const MailboxStat& m : MailboxStatsForScrape()) {
                     out.push_back({{m.recipient.str()}, double(m.depth)});
                   }
                   return out;
                 });
  r.AddCollector("carebroker_mailbox_oldest_age_seconds",
                 "Age of the oldest message not yet acknowledged, per recipient organisation.", metrics::Type::kGauge,
                 {"recipient"}, [this] {
                   std::vector<metrics::Sample> out;
                   const absl::Time now = clock_->Now();
                   for (const MailboxStat& m : MailboxStatsForScrape()) {
                     out.push_back({{m.recipient.str()}, absl::ToDoubleSeconds(now - m.oldest_accepted_at)});
                   }
                   return out;
                 });
  if (!config_->proto().store().has_postgres()) {
    r.AddCollector("carebroker_store_bytes", "Size of the embedded store's files (database and write-ahead log).",
                   metrics::Type::kGauge, {}, [this] {
                     const std::string db = config_->sqlite_path();
                     std::error_code ec;
                     double total = 0;
                     for (const std::string& f : {db, db + "-wal"}) {
                       const auto n = std::filesystem::file_size(f, ec);
                       if (!ec) total += double(n);
                     }
                     return std::vector<metrics::Sample>{{{}, total}};
                   });
  }
}

std::vector<MailboxStat> Broker::MailboxStatsForScrape() {
  absl::MutexLock l(&stats_mu_);
  // Both mailbox families of one scrape share one read of the store.
  if (stats_fresh_) return stats_;
  auto r = AwaitStoreFor<std::vector<MailboxStat>>(absl::Seconds(2),
                                                   [this](auto cb) { store_->MailboxStats(std::move(cb)); });
  if (!r.ok()) return {};  // readiness reports the store's trouble
  stats_ = *std::move(r);
  stats_fresh_ = true;
  return stats_;
}

http::HttpResponse Broker::ServeMetrics(const http::HttpRequest& r) {
  if (r.method != "GET" && r.method != "HEAD") return {405, "text/plain; charset=utf-8", "GET or HEAD only\n"};
  const std::string path = r.target.substr(0, r.target.find('?'));
  if (path == "/metrics") {
    {
      absl::MutexLock l(&stats_mu_);
      stats_fresh_ = false;  // each scrape reads the store once
    }
    return {200, std::string(metrics::kContentType), metrics_->Exposition()};
  }
  if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
  if (path == "/readyz") {
    const absl::Status s = Readiness();
    if (s.ok()) return {200, "text/plain; charset=utf-8", "ready\n"};
    return {503, "text/plain; charset=utf-8", absl::StrCat("not ready: ", s.message(), "\n")};
  }
  return {404, "text/plain; charset=utf-8", "not found: /metrics, /healthz or /readyz\n"};
}

absl::Status Broker::ReloadPolicy() {
  absl::Status s = policy_->Reload();
  if (auto r = AppendAuditSync(*store_, {PolicyLoadRecord(*deps_, s, "broker")}); !r.ok()) {
    LogLine(absl::StrCat("audit log: cannot record the policy reload: ", r.status().message()));
  }
  if (s.ok()) {
    const auto r = DescribePolicy(*policy_->current());
    LogLine(absl::StrCat("policy reloaded: ", r.agreements(), " agreements, ", r.flows(), " flows, digest ", r.digest()));
  } else {
    LogLine(absl::StrCat("policy reload refused; the old set stays in force:\n", s.message()));
  }
  return s;
}

absl::StatusOr<SweepResult> Broker::SweepNow() {
  SweepResult total;
  for (int round = 0; round < 100; ++round) {
    const absl::Time now = clock_->Now();
    absl::StatusOr<SweepResult> r =
        SweepSync(*store_, SweepRequest{now, now - config_->retention(), config_->expiry(), 10000});
    if (!r.ok()) return r.status();
    total.expired += r->expired;
    total.reports += r->reports;
    total.purged += r->purged;
    if (!r->more) break;
  }
  if (total.expired > 0 || total.purged > 0) {
    LogLine(absl::StrCat("sweep: ", total.expired, " expired, ", total.reports, " non-delivery reports, ",
                     total.purged, " bodies purged"));
  }
  return total;
}

void Broker::Housekeeping() {
  absl::Time next_sweep = absl::Now();
  absl::MutexLock l(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1));
    if (stopping_) break;
    mu_.Unlock();
    WakeAll();  // deliveries whose visibility timeout passed are claimable again
    (void)CheckReadiness();
    audit_->Tick();
    if (absl::Now() >= next_sweep) {
      if (auto r = SweepNow(); !r.ok()) LogLine(absl::StrCat("sweep failed: ", r.status().message()));
      next_sweep = absl::Now() + config_->sweep_interval();
    }
    mu_.Lock();
  }
}

void Broker::Shutdown() {
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (housekeeping_.joinable()) housekeeping_.join();
  metrics_server_.reset();  // its handler reads the store and the audit log
  // Receive streams never end by themselves: give calls a second, then cancel.
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  // Every call has ended; any intake still running finishes into the store.
  executor_.reset();
  // A last signed tree head covers every entry, so a truncated tail shows.
  if (audit_) {
    if (auto s = audit_->SignNow(); !s.ok()) LogLine(absl::StrCat("audit log: last tree head not stored: ", s.message()));
  }
  if (store_) store_->Close();  // runs the last callbacks, releasing reactors
  LogLine("stopped");
}

Broker::~Broker() { Shutdown(); }

}  // namespace carebroker
