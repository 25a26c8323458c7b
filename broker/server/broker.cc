#include "broker/server/broker.h"

#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <tuple>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/files.h"
#include "core/time.h"
#include "core/status.h"
#include "core/log.h"
#include "core/reasons.h"
#include "broker/exchange/exchange_metrics.h"
#include "broker/exchange/mailboxes.h"
#include "broker/http/http_server.h"
#include "broker/mesh/service.h"
#include "core/metrics.h"
#include "broker/server/exchange_service.h"
#include "broker/server/identity.h"
#include "audit/log.h"
#include "broker/server/audit_service.h"
#include "broker/server/override_reviews.h"
#include "broker/server/certificate_gate.h"
#include "broker/server/operations_service.h"
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

CertificateGate::CrlExpired CrlMode(const Config& config) {
  return config.proto().tls().crl_expired() == "warn" ? CertificateGate::CrlExpired::kWarn
                                                      : CertificateGate::CrlExpired::kRefuse;
}

void ApplyLogLevel(const Config& config) {
  if (auto level = LogLevelFromName(config.proto().log().level()); level.ok()) SetLogLevel(*level);
}

constexpr char kIdentityFile[] = "server-identity.pem";
constexpr char kRootsFile[] = "ca.pem";

// The TLS files a config names, read and checked whole: the server's
// certificate and key, and the CA bundle and CRL as the gate will apply
// them. Each error is "FILE: key: reason".
struct TlsMaterial {
  std::string cert, key, ca, crl;
  ServerIdentity identity;
  std::shared_ptr<const CertificateGate::Trust> trust;
};

absl::StatusOr<TlsMaterial> ReadTls(const Config& config, absl::Time now) {
  const v1::TlsConfig& t = config.proto().tls();
  TlsMaterial m;
  for (auto [key, path, out] : {std::tuple{"tls.cert", &t.cert(), &m.cert}, std::tuple{"tls.key", &t.key(), &m.key},
                                std::tuple{"tls.ca", &t.ca(), &m.ca}, std::tuple{"tls.crl", &t.crl(), &m.crl}}) {
    if (path->empty()) continue;
    auto data = ReadFile(*path, key);
    if (!data.ok()) return data.status();
    *out = *std::move(data);
  }
  auto named = [&](const absl::Status& s) {
    const std::string& file = absl::StrContains(s.message(), "tls.key")    ? t.key()
                              : absl::StrContains(s.message(), "tls.cert") ? t.cert()
                              : absl::StrContains(s.message(), "tls.crl")  ? t.crl()
                                                                            : t.ca();
    return Error(s.code(), reason::kConfigInvalid, absl::StrCat(file, ": ", s.message()));
  };
  auto identity = CheckServerIdentity(m.cert, m.key, now);
  if (!identity.ok()) return named(identity.status());
  m.identity = *std::move(identity);
  auto trust = CertificateGate::Prepare(m.ca, m.crl, now, CrlMode(config));
  if (!trust.ok()) return named(trust.status());
  m.trust = *std::move(trust);
  return m;
}

// gRPC's channelz (JSON; proto3 writes int64 as a string), for the count of
// connections open on the broker's server.
nlohmann::json Channelz(char* text) {
  nlohmann::json j = text != nullptr ? nlohmann::json::parse(text, nullptr, false) : nlohmann::json();
  gpr_free(text);
  return j;
}

intptr_t ChannelzId(const nlohmann::json& ref, const char* key) {
  const nlohmann::json v = ref.is_object() ? ref.value(key, nlohmann::json()) : nlohmann::json();
  if (v.is_string()) return static_cast<intptr_t>(std::stoll(v.get<std::string>()));
  return v.is_number_integer() ? v.get<intptr_t>() : 0;
}

// The newest gRPC server in this process (0: none).
intptr_t NewestServerId() {
  intptr_t newest = 0;
  for (intptr_t start = 0;;) {
    const nlohmann::json page = Channelz(grpc_channelz_get_servers(start));
    if (!page.is_object()) return newest;
    const nlohmann::json servers = page.value("server", nlohmann::json::array());
    for (const auto& s : servers) newest = std::max(newest, ChannelzId(s.value("ref", nlohmann::json()), "serverId"));
    if (page.value("end", true) || servers.empty()) return newest;
    start = newest + 1;
  }
}

// Connections open now on the server channelz knows as `server_id`; -1
// when it cannot say.
int64_t OpenConnections(intptr_t server_id) {
  if (server_id == 0) return -1;
  int64_t open = 0;
  for (intptr_t start = 0;;) {
    const nlohmann::json page = Channelz(grpc_channelz_get_server_sockets(server_id, start, 1000));
    if (!page.is_object()) return -1;
    const nlohmann::json refs = page.value("socketRef", nlohmann::json::array());
    for (const auto& ref : refs) start = std::max(start, ChannelzId(ref, "socketId") + 1);
    open += static_cast<int64_t>(refs.size());
    if (page.value("end", true) || refs.empty()) return open;
  }
}

std::string Rfc3339(absl::Time t) { return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone()); }

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

  ApplyLogLevel(*config);
  b->reload_config_ = options.reload_config;
  auto material = ReadTls(*config, absl::Now());
  if (!material.ok()) return material.status();
  // gRPC reads the server's certificate from files it re-reads every
  // second: a reload replaces them, and new handshakes present the new one.
  b->tls_dir_ = (fs::path(c.data_dir()) / "tls").string();
  fs::create_directories(b->tls_dir_, ec);
  fs::permissions(b->tls_dir_, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (auto s = b->WriteServerIdentity(material->cert, material->key, material->ca); !s.ok()) return s;
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      (fs::path(b->tls_dir_) / kIdentityFile).string(), (fs::path(b->tls_dir_) / kIdentityFile).string(),
      (fs::path(b->tls_dir_) / kRootsFile).string(), 1);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_root_certs();
  tls.watch_identity_key_cert_pairs();
  // gRPC asks for a certificate and checks the client holds its key; the
  // gate checks the chain, dates and CRL, so each refusal can be audited.
  tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  auto gate = CertificateGate::Create(material->ca, material->crl, absl::Now(), CrlMode(*config));
  if (!gate.ok()) return gate.status();
  b->gate_ = *std::move(gate);
  tls.set_certificate_verifier(b->gate_->Verifier());
  {
    absl::MutexLock l(&b->reload_mu_);
    b->ca_pem_ = material->ca;
    b->crl_file_ = StatCrl(c.tls().crl());
    b->identity_ = material->identity;
    b->loaded_at_ = absl::Now();
  }

  // Policy first: a broker with an invalid agreement set does not start.
  b->policy_ = std::make_unique<PolicyGate>(config);
  if (auto s = b->policy_->Reload(); !s.ok()) return s;

  auto store = OpenStore(*config);
  if (!store.ok()) return store.status();
  b->store_ = *std::move(store);
  b->metrics_ = std::make_unique<metrics::Registry>();
  auto& commit = b->metrics_->AddHistogram(
      "carebroker_store_commit_seconds",
      "Time for a commit to reach disk: the embedded store's write-ahead-log sync, PostgreSQL's COMMIT.",
      metrics::LatencyBuckets());
  b->store_->SetCommitObserver([&commit](absl::Duration d) { commit.Observe(absl::ToDoubleSeconds(d)); });
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
      Log(LogLevel::kError, "consent.not_applied").Int("seq", change.seq()).Str("reason", ReasonOf(s));
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
  b->override_reviews_ = std::make_unique<OverrideReviews>(*b->store_);
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
  b->deps_ = std::make_unique<ServiceDeps>(ServiceDeps{
      *config, *b->store_, *b->mailboxes_, *b->budget_, *b->clock_, *b->identities_, *b->streams_, *b->policy_,
      *b->audit_, *b->sends_, *b->exchange_metrics_,
      [raw = b.get()](const std::string& actor) { return raw->Reload(actor); }});
  const ServiceDeps& deps = *b->deps_;
  if (auto r = AppendAuditSync(*b->store_, {PolicyLoadRecord(deps, absl::OkStatus(), "broker")}); !r.ok()) {
    return r.status();
  }
  // A head at start, so the log verifies from the first moment.
  if (auto s = b->audit_->SignNow(); !s.ok()) return s;
  b->service_ = std::make_unique<ExchangeService>(deps);
  b->consent_service_ = std::make_unique<ConsentService>(deps);
  b->policy_service_ = std::make_unique<PolicyService>(deps);
  b->operations_service_ = std::make_unique<OperationsService>(deps);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(c.listen(), grpc::experimental::TlsServerCredentials(tls), &b->port_);
  builder.RegisterService(b->service_.get());
  builder.RegisterService(b->consent_service_.get());
  builder.RegisterService(b->policy_service_.get());
  builder.RegisterService(b->operations_service_.get());
  b->audit_service_ = std::make_unique<AuditService>(deps);
  builder.RegisterService(b->audit_service_.get());
  const int max_frame = static_cast<int>(c.limits().max_message_bytes() + (64 << 10));
  builder.SetMaxReceiveMessageSize(max_frame);
  builder.SetMaxSendMessageSize(max_frame);
  // No BDP probing: it grows a connection's receive window while a fast
  // sender keeps it busy, and every message here is stored before the next
  // is read, so the window only parks the sender's data in the broker's
  // memory (a 2 GB SendLarge in 32 MiB chunks peaked 271 MB above idle with
  // it, 163 MB without; at full load of small messages the same throughput,
  // and deliveries trail sends by less: docs/performance.md).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // A connection that never completes its handshake, or holds no call, is
  // closed rather than held (limits.handshake_timeout, limits.idle_timeout).
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(FromDuration(c.limits().handshake_timeout()))));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(FromDuration(c.limits().idle_timeout()))));
  // Which server is ours, for channelz's count of its connections.
  const intptr_t servers_before = NewestServerId();
  b->server_ = builder.BuildAndStart();
  if (const intptr_t newest = NewestServerId(); newest > servers_before) b->channelz_id_ = newest;
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
  if (c.mesh().listen() != "off") {
    b->mesh_service_ = std::make_unique<mesh::MeshService>(mesh::ServiceDeps{
        *b->store_, *b->sends_, *b->policy_, *b->audit_, *b->identities_, *b->clock_, *b->exchange_metrics_});
    http::ServerOptions https_options;
    https_options.body_limit = c.mesh().max_request_bytes();
    // Client certificates are decided as on the gRPC listener, refusals audited.
    https_options.tls = http::TlsOptions{material->cert, material->key,
                                   [gate = b->gate_](const std::string& chain) { return gate->Decide(chain); }};
    auto https = http::HttpServer::Start(
        c.mesh().listen(),
        [svc = b->mesh_service_.get()](http::HttpRequest r, http::Reply reply) { svc->Handle(std::move(r), std::move(reply)); },
        std::move(https_options));
    if (!https.ok()) {
      b->Shutdown();
      return https.status();
    }
    b->mesh_server_ = *std::move(https);
  }
  // Serving only once the store has taken a write and the log is sound.
  (void)b->CheckReadiness();
  b->housekeeping_ = std::thread([raw = b.get()] { raw->Housekeeping(); });
  const std::string metrics_at =
      b->metrics_server_
          ? absl::StrCat(c.metrics().listen().substr(0, c.metrics().listen().rfind(':')), ":", b->metrics_server_->port())
          : "off";
  const std::string mesh_at =
      b->mesh_server_
          ? absl::StrCat(c.mesh().listen().substr(0, c.mesh().listen().rfind(':')), ":", b->mesh_server_->port())
          : "off";
  Log(LogLevel::kInfo, "broker.started")
      .Str("listen", b->address())
      .Str("metrics", metrics_at)
      .Str("mesh", mesh_at)
      .Str("store", DescribeStore(*config))
      .Int("agreements", static_cast<int64_t>(b->policy_->current()->agreements().agreements.size()))
      .Int("people_with_wishes", static_cast<int64_t>(b->policy_->consent().people()))
      .Msg(absl::StrCat("listening on ", b->address(), " (mutual TLS), metrics on ", metrics_at));
  return b;
}

Broker::CrlFile Broker::StatCrl(const std::string& path) {
  Broker::CrlFile f;
  f.path = path;
  struct stat st {};
  if (!path.empty() && ::stat(path.c_str(), &st) == 0) {
    f.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
    f.size = static_cast<uint64_t>(st.st_size);
    f.inode = static_cast<uint64_t>(st.st_ino);
  }
  return f;
}

std::string Broker::address() const {
  std::string host = config_->proto().listen().substr(0, config_->proto().listen().rfind(':'));
  return absl::StrCat(host, ":", port_);
}

void Broker::WakeAll() { mailboxes_->NotifyAll(); }

int Broker::metrics_port() const { return metrics_server_ ? metrics_server_->port() : 0; }
int Broker::mesh_port() const { return mesh_server_ ? mesh_server_->port() : 0; }

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
    if (now.ok()) {
      Log(LogLevel::kInfo, "broker.ready").Msg("ready: serving");
    } else {
      Log(LogLevel::kError, "broker.not_ready").Str("reason", ReasonOf(now)).Msg(now.message());
    }
  }
  return now;
}

void Broker::RegisterMetrics() {
  metrics::Registry& r = *metrics_;
  r.AddCollector("carebroker_ready", "1 while the broker can take messages (store writable, audit log sound).",
                 metrics::Type::kGauge, {}, [this] { return std::vector<metrics::Sample>{{{}, Readiness().ok() ? 1.0 : 0.0}}; });
  r.AddCollector("carebroker_open_streams", "Open Receive and SendStream streams.", metrics::Type::kGauge, {},
                 [this] { return std::vector<metrics::Sample>{{{}, double(streams_->load())}}; });
  r.AddCollector("carebroker_connections", "Client connections open on the mutual-TLS listener.",
                 metrics::Type::kGauge, {}, [this] {
                   std::vector<metrics::Sample> out;
                   if (const int64_t n = OpenConnections(channelz_id_); n >= 0) out.push_back({{}, double(n)});
                   return out;
                 });
  r.AddCollector("carebroker_store_connections", "The store's database connections, by state (up, down).",
                 metrics::Type::kGauge, {"state"}, [this] {
                   const StoreGauges g = store_->Gauges();
                   return std::vector<metrics::Sample>{{{"up"}, double(g.connections_up)},
                                                       {{"down"}, double(g.connections - g.connections_up)}};
                 });
  r.AddCollector("carebroker_store_queued_operations", "Store operations waiting for a connection.",
                 metrics::Type::kGauge, {}, [this] {
                   return std::vector<metrics::Sample>{{{}, double(store_->Gauges().queued)}};
                 });
  r.AddCollector("carebroker_receive_subscribers", "Receive streams listening on a mailbox.", metrics::Type::kGauge, {},
                 [this] { return std::vector<metrics::Sample>{{{}, double(mailboxes_->subscriber_count())}}; });
  r.AddCollector("carebroker_memory_budget_used_bytes", "Payload bytes held in memory against limits.memory_budget_bytes.",
                 metrics::Type::kGauge, {}, [this] { return std::vector<metrics::Sample>{{{}, double(budget_->used())}}; });
  r.AddCollector("carebroker_memory_budget_limit_bytes", "limits.memory_budget_bytes.", metrics::Type::kGauge, {},
                 [this] {
                   return std::vector<metrics::Sample>{{{}, double(config_->proto().limits().memory_budget_bytes())}};
                 });
  r.AddCollector("carebroker_override_reviews_pending",
                 "Safeguarding overrides no IG officer has reviewed yet (carebroker-audit overrides pending).",
                 metrics::Type::kGauge, {},
                 [this] { return std::vector<metrics::Sample>{{{}, double(override_reviews_->counts().pending)}}; });
  r.AddCollector("carebroker_override_reviews_overdue",
                 "Safeguarding overrides unreviewed for longer than governance.review_days.", metrics::Type::kGauge, {},
                 [this] { return std::vector<metrics::Sample>{{{}, double(override_reviews_->counts().overdue)}}; });
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
  reloads_ = &r.AddCounters("carebroker_config_reloads_total",
                            "Reloads (SIGHUP, carebrokerctl reload) put in force (ok) or refused.", {"outcome"});
  r.AddCollector("carebroker_config_load_timestamp_seconds",
                 "When the config and agreements in force were loaded (Unix time).", metrics::Type::kGauge, {}, [this] {
                   absl::MutexLock l(&reload_mu_);
                   return std::vector<metrics::Sample>{{{}, absl::ToDoubleSeconds(loaded_at_ - absl::UnixEpoch())}};
                 });
  r.AddCollector("carebroker_crl_expired",
                 "1 while the CRL in force is past its next-update time (see tls.crl_expired).",
                 metrics::Type::kGauge, {},
                 [this] { return std::vector<metrics::Sample>{{{}, gate_->crl_expired(absl::Now()) ? 1.0 : 0.0}}; });
  r.AddCollector("carebroker_server_certificate_expiry_timestamp_seconds",
                 "When the server certificate in force expires (Unix time).", metrics::Type::kGauge, {}, [this] {
                   absl::MutexLock l(&reload_mu_);
                   return std::vector<metrics::Sample>{
                       {{}, absl::ToDoubleSeconds(identity_.not_after - absl::UnixEpoch())}};
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
                     if (m.depth == 0) continue;  // only held messages
                     out.push_back({{m.recipient.str()}, absl::ToDoubleSeconds(now - m.oldest_accepted_at)});
                   }
                   return out;
                 });
  r.AddCollector("carebroker_mailbox_held",
                 "Held messages (rejected by their recipient, or delivered delivery.max_attempts times) whose bodies "
                 "are kept for an operator's release, per recipient organisation.",
                 metrics::Type::kGauge, {"recipient"}, [this] {
                   std::vector<metrics::Sample> out;
                   for (const MailboxStat& m : MailboxStatsForScrape()) out.push_back({{m.recipient.str()}, double(m.held)});
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

absl::Status Broker::WriteServerIdentity(const std::string& cert_pem, const std::string& key_pem,
                                         const std::string& ca_pem) {
  // The key first, then the chain: OpenSSL reads each from the one file.
  std::string identity = key_pem;
  if (!identity.empty() && identity.back() != '\n') identity.push_back('\n');
  identity += cert_pem;
  if (!WriteFileAtomically(tls_dir_, kRootsFile, ca_pem) || !WriteFileAtomically(tls_dir_, kIdentityFile, identity)) {
    return Error(absl::StatusCode::kUnavailable, reason::kDataDirUnavailable,
                 absl::StrCat("cannot write the server's TLS files to ", tls_dir_));
  }
  return absl::OkStatus();
}

void Broker::RecordReload(const std::string& actor, v1::AuditEvent event, const std::string& detail) {
  v1::AuditEntry e;
  *e.mutable_at() = ToTimestamp(clock_->Now());
  e.set_actor(actor);
  e.set_event(event);
  e.set_detail(detail);
  std::vector<AuditRecord> records;
  records.push_back(audit_->entries().Make(std::move(e)));
  if (auto r = AppendAuditSync(*store_, std::move(records)); !r.ok()) {
    Log(LogLevel::kError, "audit.append_failed").Str("reason", ReasonOf(r.status())).Msg(r.status().message());
  }
}

absl::StatusOr<v1::ReloadResponse> Broker::Reload(const std::string& actor) {
  absl::MutexLock l(&reload_mu_);
  const absl::Time now = absl::Now();
  std::vector<std::string> errors, pending;
  std::shared_ptr<const Config> next;
  if (reload_config_) {
    auto read = reload_config_();
    if (read.ok()) {
      next = ForReload(**read, *config_, &pending);
    } else {
      errors.emplace_back(read.status().message());
    }
  } else {
    next = policy_->config();
  }
  absl::StatusOr<TlsMaterial> tls = absl::UnknownError("not read");
  absl::StatusOr<std::shared_ptr<const policy::PolicySet>> set = absl::UnknownError("not read");
  bool agreements_failed = false;
  if (next != nullptr) {
    tls = ReadTls(*next, now);
    if (!tls.ok()) errors.emplace_back(tls.status().message());
    set = PolicyGate::Prepare(*next);
    if (!set.ok()) {
      errors.emplace_back(set.status().message());
      agreements_failed = true;
    }
  }
  if (errors.empty()) {
    if (auto s = WriteServerIdentity(tls->cert, tls->key, tls->ca); !s.ok()) errors.emplace_back(s.message());
  }
  if (!errors.empty()) {
    const std::string all = absl::StrJoin(errors, "\n");
    const size_t count = std::count(all.begin(), all.end(), '\n') + 1;
    reloads_->With({"refused"}).Inc();
    RecordReload(actor, agreements_failed ? v1::AUDIT_EVENT_AGREEMENTS_REJECTED : v1::AUDIT_EVENT_CONFIG_REJECTED,
                 absl::StrCat(count, " errors; the set in force stays. First: ", all.substr(0, all.find('\n'))));
    Log(LogLevel::kError, "config.reload_refused").Str("actor", actor).Int("errors", static_cast<int64_t>(count))
        .Msg(absl::StrCat("reload refused; the set in force stays:\n", all));
    return Error(absl::StatusCode::kInvalidArgument, agreements_failed ? reason::kAgreementsInvalid : reason::kConfigInvalid,
                 all);
  }
  const std::string old_digest = policy_->current()->agreements().digest;
  gate_->Install(tls->trust);
  policy_->Install(next, *set);
  ApplyLogLevel(*next);
  ca_pem_ = tls->ca;
  crl_file_ = StatCrl(next->proto().tls().crl());
  identity_ = tls->identity;
  if (mesh_server_) {
    if (auto s = mesh_server_->SetIdentity(tls->cert, tls->key); !s.ok()) {
      Log(LogLevel::kError, "mesh.identity_not_replaced").Msg(s.message());
    }
  }
  loaded_at_ = now;
  reloads_->With({"ok"}).Inc();

  v1::ReloadResponse r = DescribePolicy(**set);
  r.set_organisations(next->proto().organisations_size());
  r.set_server_certificate(identity_.subject);
  r.set_server_certificate_not_after(Rfc3339(identity_.not_after));
  if (auto due = gate_->crl_next_update()) r.set_crl_next_update(Rfc3339(*due));
  for (auto& key : pending) r.add_restart_pending(key);
  const std::string detail = absl::StrCat(
      r.organisations(), " organisations; ", r.agreements(), " agreements, ", r.flows(), " flows, digest ", r.digest(),
      "; server certificate ", r.server_certificate(), " until ", r.server_certificate_not_after(),
      r.crl_next_update().empty() ? "" : absl::StrCat("; CRL due ", r.crl_next_update()),
      pending.empty() ? "" : absl::StrCat("; at the next restart: ", absl::StrJoin(pending, ", ")));
  RecordReload(actor, v1::AUDIT_EVENT_CONFIG_RELOADED, detail);
  if (r.digest() != old_digest) {
    std::vector<AuditRecord> records;
    records.push_back(PolicyLoadRecord(*deps_, absl::OkStatus(), actor));
    (void)AppendAuditSync(*store_, std::move(records));
  }
  LogEvent line(LogLevel::kInfo, "config.reloaded");
  line.Str("actor", actor)
      .Int("organisations", r.organisations())
      .Int("agreements", r.agreements())
      .Str("digest", r.digest())
      .Str("server_certificate_not_after", r.server_certificate_not_after());
  if (!pending.empty()) {
    Log(LogLevel::kWarning, "config.restart_pending")
        .Str("keys", absl::StrJoin(pending, ","))
        .Msg("these keys changed in the file and take effect at the next restart");
  }
  line.Msg("reloaded");
  return r;
}

void Broker::WatchCrl() {
  absl::MutexLock l(&reload_mu_);
  if (crl_file_.path.empty()) return;
  const CrlFile now_file = StatCrl(crl_file_.path);
  if (now_file == crl_file_) return;
  crl_file_ = now_file;
  const std::shared_ptr<const Config> config = policy_->config();
  auto crl = ReadFile(crl_file_.path, "tls.crl");
  absl::StatusOr<std::shared_ptr<const CertificateGate::Trust>> trust =
      crl.ok() ? CertificateGate::Prepare(ca_pem_, *crl, absl::Now(), CrlMode(*config)) : crl.status();
  if (!trust.ok()) {
    // A half-written file is read again when it changes again.
    RecordReload("broker", v1::AUDIT_EVENT_CONFIG_REJECTED,
                 absl::StrCat("the changed CRL file was not put in force: ", trust.status().message()));
    Log(LogLevel::kError, "tls.crl_refused").Str("file", crl_file_.path).Msg(trust.status().message());
    return;
  }
  gate_->Install(*std::move(trust));
  const auto due = gate_->crl_next_update();
  RecordReload("broker", v1::AUDIT_EVENT_CONFIG_RELOADED,
               absl::StrCat("CRL re-read from ", crl_file_.path, due ? absl::StrCat("; next due ", Rfc3339(*due)) : ""));
  Log(LogLevel::kInfo, "tls.crl_reloaded")
      .Str("file", crl_file_.path)
      .Str("next_update", due ? Rfc3339(*due) : "")
      .Msg("the changed CRL file is in force");
}

void Broker::AlarmOnStaleCrl() {
  const absl::Time now = absl::Now();
  if (!gate_->crl_expired(now)) return;
  absl::MutexLock l(&reload_mu_);
  if (now - crl_warned_at_ < absl::Minutes(1)) return;
  crl_warned_at_ = now;
  const bool refuse = CrlMode(*policy_->config()) == CertificateGate::CrlExpired::kRefuse;
  Log(refuse ? LogLevel::kError : LogLevel::kWarning, "tls.crl_expired")
      .Str("next_update", Rfc3339(*gate_->crl_next_update()))
      .Str("crl_expired", refuse ? "refuse" : "warn")
      .Msg(refuse ? "the CRL is past its next-update time: every client handshake is refused until a fresh CRL is "
                    "published"
                  : "the CRL is past its next-update time: still applied as it stands; publish a fresh CRL");
}

absl::StatusOr<SweepResult> Broker::SweepNow() {
  SweepResult total;
  for (int round = 0; round < 100; ++round) {
    const absl::Time now = clock_->Now();
    absl::StatusOr<SweepResult> r =
        SweepSync(*store_, SweepRequest{now, now - config_->retention(), config_->expiry(), 10000});
    if (!r.ok()) return r.status();
    total.expired += r->expired;
    for (const auto& [workflow, n] : r->expired_by_workflow) {
      exchange_metrics_->expired.With({workflow}).Inc(static_cast<uint64_t>(n));
    }
    total.reports += r->reports;
    total.purged += r->purged;
    if (!r->more) break;
  }
  if (total.expired > 0 || total.purged > 0) {
    Log(LogLevel::kInfo, "sweep")
        .Int("expired", total.expired)
        .Int("non_delivery_reports", total.reports)
        .Int("purged", total.purged);
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
    WatchCrl();
    AlarmOnStaleCrl();
    audit_->Tick();
    override_reviews_->CatchUp(clock_->Now(), policy_->config()->override_review_within());
    if (absl::Now() >= next_sweep) {
      if (auto r = SweepNow(); !r.ok()) {
        Log(LogLevel::kError, "sweep.failed").Str("reason", ReasonOf(r.status())).Msg(r.status().message());
      }
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
  // MESH requests taken are answered (their sends committed) before the
  // pipeline and the store go; later ones are answered 503.
  if (mesh_service_ && !mesh_service_->Drain(absl::Seconds(10))) {
    Log(LogLevel::kWarning, "mesh.drain_timeout").Msg("MESH requests still in flight at shutdown");
  }
  // Receive streams never end by themselves: give calls a second, then cancel.
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  // Every call has ended; any intake still running finishes into the store.
  executor_.reset();
  // A last signed tree head covers every entry, so a truncated tail shows.
  if (audit_) {
    if (auto s = audit_->SignNow(); !s.ok()) {
      Log(LogLevel::kError, "audit.head_not_stored").Str("reason", ReasonOf(s)).Msg(s.message());
    }
  }
  if (store_) store_->Close();  // runs the last callbacks, releasing reactors
  mesh_server_.reset();
  if (server_) Log(LogLevel::kInfo, "broker.stopped");
}

Broker::~Broker() { Shutdown(); }

}  // namespace carebroker
