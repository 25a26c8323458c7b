#include "broker/config/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/time.h"
#include "core/files.h"
#include "core/log.h"
#include "core/status.h"
#include "core/yaml/yaml_proto.h"
#include "core/reasons.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;
using google::protobuf::util::TimeUtil;

constexpr uint64_t kMaxMessageBytesCeiling = 64ull << 20;  // gRPC frames above this are unwise

void SetDuration(google::protobuf::Duration* d, absl::Duration v) {
  *d = TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(v));
}

// A key file: readable by the broker's user only (mode 600), or owned by
// root and readable by the broker's group but no one else (0640 or 0440: how
// Kubernetes mounts a Secret with fsGroup; libpq's rule for its keys), and at
// least `min_bytes` long. The error names the file, never its contents.
absl::StatusOr<std::string> ReadSecret(const std::string& file, size_t min_bytes) {
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) return absl::InvalidArgumentError(absl::StrCat("cannot read ", file));
  const bool root_owned_for_group = st.st_uid == 0 && ::geteuid() != 0;
  const mode_t forbidden = root_owned_for_group ? (S_IWGRP | S_IXGRP | S_IRWXO) : (S_IRWXG | S_IRWXO);
  if ((st.st_mode & forbidden) != 0) {
    return absl::InvalidArgumentError(
        "must be readable by the broker's user only (chmod 600), or owned by root and readable by its group only "
        "(chmod 640)");
  }
  auto key = ReadFileToString(file, "key");
  if (!key.ok()) return absl::InvalidArgumentError(absl::StrCat("cannot read ", file));
  if (key->size() < min_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("a key must be at least ", min_bytes, " bytes"));
  }
  return key;
}

std::string Resolve(const std::string& base, const std::string& p) {
  if (p.empty()) return p;
  fs::path path(p);
  return (path.is_absolute() ? path : fs::path(base) / path).lexically_normal().string();
}

bool ValidListen(absl::string_view s) {
  // host:port or [v6]:port
  const auto colon = s.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  absl::string_view host = s.substr(0, colon);
  if (host.front() == '[' && host.back() != ']') return false;
  uint32_t port;
  return absl::SimpleAtoi(s.substr(colon + 1), &port) && port <= 65535;
}

}  // namespace




adapters::Format Config::ReceiveFormat(const OrgCode& ods, absl::string_view workflow) const {
  const v1::Organisation* o = FindOrganisation(ods);
  if (o == nullptr) return adapters::Format::kCanonical;
  const auto it = o->receives_by_workflow().find(std::string(workflow));
  const std::string& name = it != o->receives_by_workflow().end() ? it->second : o->receives();
  auto f = adapters::FormatByName(name);  // checked when the config was loaded
  return f.ok() ? *f : adapters::Format::kCanonical;
}


const v1::Organisation* Config::FindOrganisation(const OrgCode& ods) const {
  auto it = org_index_.find(ods.str());
  return it == org_index_.end() ? nullptr : &proto_.organisations(it->second);
}

const std::string* Config::PseudonymKey(const OrgCode& ods) const {
  auto it = pseudonym_keys_.find(ods.str());
  return it == pseudonym_keys_.end() ? nullptr : &it->second;
}

namespace {
bool HasRole(const google::protobuf::RepeatedField<int>& roles, Role r) {
  const int want = r == Role::kAgency ? v1::ROLE_AGENCY : r == Role::kIgOfficer ? v1::ROLE_IG_OFFICER : v1::ROLE_OPERATOR;
  return std::find(roles.begin(), roles.end(), want) != roles.end();
}
}  // namespace

bool Config::MayWriteConsent(Role r) const { return HasRole(proto_.policy().consent_writers(), r); }
bool Config::MayReadConsent(Role r) const { return HasRole(proto_.policy().consent_readers(), r); }

absl::Duration Config::visibility_timeout() const { return FromDuration(proto_.delivery().visibility_timeout()); }
absl::Duration Config::expiry() const { return FromDuration(proto_.delivery().expiry()); }
absl::Duration Config::retention() const { return FromDuration(proto_.delivery().retention()); }
absl::Duration Config::idempotency_window() const { return FromDuration(proto_.delivery().idempotency_window()); }
absl::Duration Config::sweep_interval() const { return FromDuration(proto_.delivery().sweep_interval()); }

namespace {

bool IsLoopbackHost(absl::string_view host) {
  return host.empty() || host[0] == '/' || host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

// Checks store.postgres, resolves its files and fills its defaults.
template <typename Err>
absl::Status CheckPostgres(v1::PostgresStore* p, const std::string& base_dir, const Err& err) {
  if (p->connection().empty()) {
    return err("store.postgres.connection", "required (postgresql://user@host:port/dbname)");
  }
  // libpq's own parser; its message is not repeated, as it may quote the string.
  char* why = nullptr;
  PQconninfoOption* opts = PQconninfoParse(p->connection().c_str(), &why);
  if (why != nullptr) PQfreemem(why);
  if (opts == nullptr) {
    return err("store.postgres.connection",
               "not a libpq connection string (postgresql://user@host:port/dbname, or key=value pairs)");
  }
  std::string hosts, sslmode;
  bool password = false;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const absl::string_view k = o->keyword;
    if (k == "password") password = true;
    if (k == "host" || k == "hostaddr") hosts = absl::StrCat(hosts, hosts.empty() ? "" : ",", o->val);
    if (k == "sslmode") sslmode = o->val;
  }
  PQconninfoFree(opts);
  if (password) {
    return err("store.postgres.connection", "must not hold a password: put it in store.postgres.password_file");
  }
  bool local = true;
  for (absl::string_view h : absl::StrSplit(hosts, ',')) local &= IsLoopbackHost(h);
  if (!p->sslmode().empty()) sslmode = p->sslmode();
  if (sslmode.empty()) sslmode = local ? "prefer" : "verify-full";
  static constexpr absl::string_view kModes[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
  if (std::find(std::begin(kModes), std::end(kModes), sslmode) == std::end(kModes)) {
    return err("store.postgres.sslmode", "must be one of disable, allow, prefer, require, verify-ca, verify-full");
  }
  const bool verify = sslmode == "verify-ca" || sslmode == "verify-full";
  if (!local && !verify) {
    return err("store.postgres.sslmode",
               "a database on another machine needs verify-full or verify-ca: the link is encrypted and the "
               "server proven");
  }
  p->set_sslmode(sslmode);
  if (verify && p->sslrootcert().empty()) {
    return err("store.postgres.sslrootcert", "required with sslmode verify-ca or verify-full (PEM CA bundle)");
  }
  if (p->sslcert().empty() != p->sslkey().empty()) {
    return err(p->sslcert().empty() ? "store.postgres.sslcert" : "store.postgres.sslkey",
               "sslcert and sslkey go together");
  }
  struct {
    const char* key;
    std::string* value;
  } files[] = {{"store.postgres.sslrootcert", p->mutable_sslrootcert()},
               {"store.postgres.sslcert", p->mutable_sslcert()},
               {"store.postgres.sslkey", p->mutable_sslkey()},
               {"store.postgres.password_file", p->mutable_password_file()}};
  for (auto& f : files) {
    if (f.value->empty()) continue;
    *f.value = Resolve(base_dir, *f.value);
    std::ifstream in(*f.value);
    if (!in) return err(f.key, absl::StrCat("cannot read ", *f.value));
  }
  if (p->pool_size() == 0) p->set_pool_size(2);
  if (p->pool_size() > 64) return err("store.postgres.pool_size", "must be 1..64");
  return absl::OkStatus();
}

}  // namespace

namespace {

bool IsMeshMailboxShape(absl::string_view s) {
  if (s.size() < 4 || s.size() > 20) return false;
  for (char c : s) {
    if (!(absl::ascii_isupper(c) || absl::ascii_isdigit(c))) return false;
  }
  return true;
}

bool IsMeshWorkflowShape(absl::string_view s) {
  if (s.empty() || s.size() > 300) return false;
  for (char c : s) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == '-')) return false;
  }
  return true;
}

}  // namespace

template <typename Err>
absl::Status Config::CheckMesh(Config& cfg, const std::string& base_dir, const ConfigOverrides& overrides,
                              const Err& err) {
  v1::MeshConfig* mesh = cfg.proto_.mutable_mesh();
  if (overrides.mesh_listen) mesh->set_listen(*overrides.mesh_listen);
  if (mesh->listen().empty()) mesh->set_listen("off");
  if (mesh->listen() != "off" && !ValidListen(mesh->listen())) {
    return err("mesh.listen", "expected host:port with a port 0-65535, or off");
  }
  if (mesh->max_request_bytes() == 0) mesh->set_max_request_bytes(kMeshMaxRequestBytes);
  if (mesh->max_request_bytes() > kMeshMaxRequestBytes) {
    return err("mesh.max_request_bytes", "must be at most 104857600 (100 MiB, MESH's limit)");
  }
  if (!mesh->shared_secret_file().empty()) {
    mesh->set_shared_secret_file(Resolve(base_dir, mesh->shared_secret_file()));
    auto secret = ReadSecret(mesh->shared_secret_file(), 1);
    if (!secret.ok()) return err("mesh.shared_secret_file", secret.status().message());
    cfg.mesh_shared_secret_ = std::string(absl::StripTrailingAsciiWhitespace(*secret));
  } else if (mesh->listen() != "off") {
    return err("mesh.shared_secret_file", "required when mesh.listen is on (the environment's shared secret)");
  }
  for (int i = 0; i < mesh->workflows_size(); ++i) {
    auto* w = mesh->mutable_workflows(i);
    const std::string at = absl::StrCat("mesh.workflows[", i, "]");
    if (!IsMeshWorkflowShape(w->id())) return err(at + ".id", "required: letters, digits, _ and -, 1-300 characters");
    if (w->workflow().empty()) {
      if (!IsWorkflowShape(w->id())) {
        return err(at + ".workflow", "required: the id is not a carebroker workflow (UPPER_SNAKE)");
      }
      w->set_workflow(w->id());
    }
    if (!IsWorkflowShape(w->workflow())) return err(at + ".workflow", "UPPER_SNAKE, e.g. HOSPITAL_DISCHARGE");
    if (!IsPurposeShape(w->purpose())) return err(at + ".purpose", "required: a purpose of use, e.g. direct-care");
    if (!cfg.mesh_workflow_index_.emplace(w->id(), i).second) return err(at + ".id", "is listed twice");
  }
  for (int i = 0; i < mesh->mailboxes_size(); ++i) {
    auto* m = mesh->mutable_mailboxes(i);
    const std::string at = absl::StrCat("mesh.mailboxes[", i, "]");
    if (!IsMeshMailboxShape(m->id())) {
      return err(at + ".id", "required: 4 to 20 upper-case letters or digits, e.g. RR8HC001");
    }
    const v1::Organisation* org = cfg.FindOrganisation(OrgCode(m->organisation()));
    if (org == nullptr) return err(at + ".organisation", "not a registered organisation");
    if (m->name().empty()) m->set_name(org->name());
    for (const std::string& w : m->workflows()) {
      if (!cfg.mesh_workflow_index_.contains(w)) return err(at + ".workflows", absl::StrCat("'", w, "' is not in mesh.workflows"));
    }
    if (m->password_file().empty()) return err(at + ".password_file", "required (the mailbox password, mode 600)");
    m->set_password_file(Resolve(base_dir, m->password_file()));
    auto password = ReadSecret(m->password_file(), 1);
    if (!password.ok()) return err(at + ".password_file", password.status().message());
    if (!cfg.mesh_mailbox_index_.emplace(m->id(), i).second) return err(at + ".id", "is listed twice");
    cfg.mesh_passwords_.emplace(m->id(), std::string(absl::StripTrailingAsciiWhitespace(*password)));
  }
  return absl::OkStatus();
}

const v1::MeshMailbox* Config::FindMeshMailbox(absl::string_view id) const {
  auto it = mesh_mailbox_index_.find(id);
  return it == mesh_mailbox_index_.end() ? nullptr : &proto_.mesh().mailboxes(it->second);
}

const v1::MeshWorkflow* Config::FindMeshWorkflow(absl::string_view id) const {
  auto it = mesh_workflow_index_.find(id);
  return it == mesh_workflow_index_.end() ? nullptr : &proto_.mesh().workflows(it->second);
}

const std::string* Config::MeshPassword(absl::string_view mailbox) const {
  auto it = mesh_passwords_.find(mailbox);
  return it == mesh_passwords_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::shared_ptr<const Config>> ParseConfig(absl::string_view text, absl::string_view file,
                                                              const std::string& base_dir,
                                                              const ConfigOverrides& overrides) {
  auto cfg = std::shared_ptr<Config>(new Config);
  v1::BrokerConfig& c = cfg->proto_;
  YamlLines lines;
  if (auto s = YamlToProto(text, file, &c, &lines); !s.ok()) return s;
  auto err = [&](absl::string_view path, absl::string_view reason) {
    return YamlError(file, lines, path, reason);
  };

  if (overrides.listen) c.set_listen(*overrides.listen);
  if (c.listen().empty()) return err("listen", "required (host:port, e.g. 127.0.0.1:7443)");
  if (!ValidListen(c.listen())) return err("listen", "expected host:port with a port 0-65535");

  if (overrides.data_dir) {
    c.set_data_dir(fs::absolute(*overrides.data_dir).lexically_normal().string());
  } else {
    if (c.data_dir().empty()) return err("data_dir", "required (folder for the store)");
    c.set_data_dir(Resolve(base_dir, c.data_dir()));
  }

  // TLS: mutual TLS always; every file must be readable now, not at the first handshake.
  auto* tls = c.mutable_tls();
  struct {
    const char* key;
    std::string* value;
    bool required;
  } files[] = {{"tls.cert", tls->mutable_cert(), true},
               {"tls.key", tls->mutable_key(), true},
               {"tls.ca", tls->mutable_ca(), true},
               {"tls.crl", tls->mutable_crl(), false}};
  for (auto& f : files) {
    if (f.value->empty()) {
      if (f.required) return err(f.key, "required (PEM file)");
      continue;
    }
    *f.value = Resolve(base_dir, *f.value);
    std::ifstream in(*f.value);
    if (!in) return err(f.key, absl::StrCat("cannot read ", *f.value));
  }

  if (tls->crl_expired().empty()) tls->set_crl_expired("refuse");
  if (tls->crl_expired() != "refuse" && tls->crl_expired() != "warn") {
    return err("tls.crl_expired", "refuse or warn");
  }
  if (c.log().level().empty()) c.mutable_log()->set_level("info");
  if (!LogLevelFromName(c.log().level()).ok()) return err("log.level", "debug, info, warning or error");

  // Store: SQLite is the embedded default; PostgreSQL is shared by replicas.
  if (c.store().has_postgres()) {
    if (auto s = CheckPostgres(c.mutable_store()->mutable_postgres(), base_dir, err); !s.ok()) return s;
  } else {
    if (!c.store().has_sqlite()) c.mutable_store()->mutable_sqlite();
    std::string file_name = c.store().sqlite().file().empty() ? "carebroker.db" : c.store().sqlite().file();
    cfg->sqlite_path_ = Resolve(c.data_dir(), file_name);
  }

  auto* lim = c.mutable_limits();
  if (lim->max_message_bytes() == 0) lim->set_max_message_bytes(8ull << 20);
  if (lim->max_message_bytes() > kMaxMessageBytesCeiling) {
    return err("limits.max_message_bytes", "must be at most 67108864 (64 MiB)");
  }
  if (lim->max_in_flight_per_stream() == 0) lim->set_max_in_flight_per_stream(1000);
  if (lim->max_in_flight_per_stream() > 100000) {
    return err("limits.max_in_flight_per_stream", "must be at most 100000");
  }
  if (lim->max_pending_per_stream() == 0) lim->set_max_pending_per_stream(1000);
  if (lim->max_pending_per_stream() > 100000) {
    return err("limits.max_pending_per_stream", "must be at most 100000");
  }
  if (lim->memory_budget_bytes() == 0) lim->set_memory_budget_bytes(256ull << 20);
  if (lim->memory_budget_bytes() < 2 * lim->max_message_bytes()) {
    return err("limits.memory_budget_bytes", "must hold at least two messages of max_message_bytes");
  }
  if (lim->max_streams() == 0) lim->set_max_streams(1024);
  if (lim->intake_threads() == 0) lim->set_intake_threads(std::max(1u, std::thread::hardware_concurrency()));
  if (lim->intake_threads() > 256) return err("limits.intake_threads", "must be at most 256");
  if (lim->intake_queue() == 0) lim->set_intake_queue(4096);
  if (overrides.metrics_listen) c.mutable_metrics()->set_listen(*overrides.metrics_listen);
  if (c.metrics().listen().empty()) c.mutable_metrics()->set_listen("127.0.0.1:9464");
  if (c.metrics().listen() != "off" && !ValidListen(c.metrics().listen())) {
    return err("metrics.listen", "expected host:port with a port 0-65535, or off");
  }
  if (lim->intake_queue() > 1000000) return err("limits.intake_queue", "must be at most 1000000");
  if (!lim->has_handshake_timeout()) SetDuration(lim->mutable_handshake_timeout(), absl::Seconds(10));
  if (!lim->has_idle_timeout()) SetDuration(lim->mutable_idle_timeout(), absl::Minutes(5));
  if (const absl::Duration d = FromDuration(lim->handshake_timeout()); d < absl::Seconds(1) || d > absl::Minutes(5)) {
    return err("limits.handshake_timeout", "must be 1s to 5m");
  }
  if (const absl::Duration d = FromDuration(lim->idle_timeout()); d < absl::Seconds(1) || d > absl::Hours(24)) {
    return err("limits.idle_timeout", "must be 1s to 24h");
  }

  // has_ before mutable_, which makes the field (never one call's two
  // arguments: their order is unspecified, and under clang every default
  // looked given).
  auto* del = c.mutable_delivery();
  if (!del->has_visibility_timeout()) SetDuration(del->mutable_visibility_timeout(), absl::Seconds(30));
  if (!del->has_expiry()) SetDuration(del->mutable_expiry(), absl::Hours(24 * 5));
  if (!del->has_retention()) SetDuration(del->mutable_retention(), absl::Hours(24 * 30));
  if (!del->has_sweep_interval()) SetDuration(del->mutable_sweep_interval(), absl::Seconds(60));
  if (!del->has_idempotency_window()) SetDuration(del->mutable_idempotency_window(), FromDuration(del->retention()));
  for (auto [key, d] : {std::pair{"delivery.visibility_timeout", del->visibility_timeout()},
                        std::pair{"delivery.expiry", del->expiry()},
                        std::pair{"delivery.retention", del->retention()},
                        std::pair{"delivery.sweep_interval", del->sweep_interval()},
                        std::pair{"delivery.idempotency_window", del->idempotency_window()}}) {
    if (FromDuration(d) <= absl::ZeroDuration()) return err(key, "must be more than zero");
  }
  if (del->max_attempts() == 0) del->set_max_attempts(10);
  if (del->max_attempts() > 1000) return err("delivery.max_attempts", "must be 1 to 1000");

  if (c.organisations().empty()) return err("organisations", "at least one organisation is required");
  for (int i = 0; i < c.organisations_size(); ++i) {
    const auto& o = c.organisations(i);
    const std::string at = absl::StrCat("organisations[", i, "]");
    if (o.ods().empty()) return err(at + ".ods", "required");
    if (!IsOdsCodeShape(o.ods())) {
      return err(at + ".ods", "an ODS code is 3 to 10 upper-case letters or digits");
    }
    if (o.name().empty()) return err(at + ".name", "required");
    if (o.kind() == v1::ORGANISATION_KIND_UNSPECIFIED) {
      return err(at + ".kind", "required (nhs_trust, gp_practice, local_authority, nhs_england, ...)");
    }
    if (!cfg->org_index_.emplace(o.ods(), i).second) {
      return err(at + ".ods", absl::StrCat("'", o.ods(), "' is registered twice"));
    }
    if (!o.receives().empty() && !adapters::FormatByName(o.receives()).ok()) {
      return err(at + ".receives", adapters::FormatByName(o.receives()).status().message());
    }
    for (const auto& [workflow, format] : o.receives_by_workflow()) {
      if (!IsWorkflowShape(workflow)) return err(at + ".receives_by_workflow", "keys are workflows, e.g. CLD_RETURN");
      if (!adapters::FormatByName(format).ok()) {
        return err(absl::StrCat(at, ".receives_by_workflow.", workflow), adapters::FormatByName(format).status().message());
      }
    }
  }
  // Both routing tables: keys of the right shape, each naming a registered council.
  for (const auto& [table, entries, key_ok, key_shape] :
       {std::tuple{"routing.postcode_districts", &c.routing().postcode_districts(), &IsPostcodeDistrictShape,
                   "keys are postcode districts in capitals, e.g. LS1, SW1A, B33"},
        std::tuple{"routing.gp_practice_councils", &c.routing().gp_practice_councils(), &IsOdsCodeShape,
                   "keys are GP practice ODS codes"}}) {
    for (const auto& [key, council] : *entries) {
      if (!key_ok(key)) return err(table, key_shape);
      const v1::Organisation* o = cfg->FindOrganisation(OrgCode(council));
      if (o == nullptr || o->kind() != v1::ORGANISATION_KIND_LOCAL_AUTHORITY) {
        return err(absl::StrCat(table, ".", key), "must name a registered local_authority organisation");
      }
    }
  }

  auto* pol = c.mutable_policy();
  if (pol->agreements_dir().empty()) {
    return err("policy.agreements_dir", "required: the folder of data-sharing agreements (nothing is shared without one)");
  }
  pol->set_agreements_dir(Resolve(base_dir, pol->agreements_dir()));
  if (!fs::is_directory(pol->agreements_dir())) {
    return err("policy.agreements_dir", absl::StrCat("cannot read the folder ", pol->agreements_dir()));
  }
  for (int i = 0; i < pol->pseudonym_keys_size(); ++i) {
    auto* k = pol->mutable_pseudonym_keys(i);
    const std::string at = absl::StrCat("policy.pseudonym_keys[", i, "]");
    if (cfg->FindOrganisation(OrgCode(k->organisation())) == nullptr) {
      return err(at + ".organisation", "not a registered organisation");
    }
    if (k->file().empty()) return err(at + ".file", "required (a file of at least 32 random bytes)");
    k->set_file(Resolve(base_dir, k->file()));
    auto key = ReadSecret(k->file(), 32);
    if (!key.ok()) return err(at + ".file", key.status().message());
    if (!cfg->pseudonym_keys_.emplace(k->organisation(), *std::move(key)).second) {
      return err(at + ".organisation", "has two keys");
    }
  }
  auto* audit = c.mutable_audit();
  if (audit->signing_key().empty()) {
    return err("audit.signing_key", "required: an Ed25519 private key, PEM (openssl genpkey -algorithm ed25519)");
  }
  audit->set_signing_key(Resolve(base_dir, audit->signing_key()));
  auto signing = ReadSecret(audit->signing_key(), 1);
  if (!signing.ok()) return err("audit.signing_key", signing.status().message());
  cfg->audit_signing_pem_ = *std::move(signing);
  if (audit->subject_key().empty()) {
    return err("audit.subject_key", "required: a file of at least 32 random bytes (openssl rand -out FILE 32)");
  }
  audit->set_subject_key(Resolve(base_dir, audit->subject_key()));
  auto subject = ReadSecret(audit->subject_key(), 32);
  if (!subject.ok()) return err("audit.subject_key", subject.status().message());
  cfg->audit_subject_key_ = *std::move(subject);
  if (audit->tree_head_every() == 0) audit->set_tree_head_every(1000);
  if (!audit->has_tree_head_interval()) audit->mutable_tree_head_interval()->set_seconds(60);
  if (audit->tree_head_interval().seconds() < 1) {
    return err("audit.tree_head_interval", "must be at least 1s");
  }
  v1::GovernanceConfig* gov = c.mutable_governance();
  if (gov->review_days() == 0) gov->set_review_days(5);
  if (gov->review_days() > 365) return err("governance.review_days", "must be 1 to 365 days");
  if (auto s = Config::CheckMesh(*cfg, base_dir, overrides, err); !s.ok()) return s;
  if (pol->consent_writers().empty()) {
    pol->add_consent_writers(v1::ROLE_AGENCY);
    pol->add_consent_writers(v1::ROLE_IG_OFFICER);
  }
  if (pol->consent_readers().empty()) {
    pol->add_consent_readers(v1::ROLE_AGENCY);
    pol->add_consent_readers(v1::ROLE_IG_OFFICER);
  }
  return std::shared_ptr<const Config>(std::move(cfg));
}

absl::StatusOr<std::shared_ptr<const Config>> LoadConfig(const std::string& path,
                                                         const ConfigOverrides& overrides) {
  auto text = ReadFileToString(path, "file");
  if (!text.ok()) {
    return Error(absl::StatusCode::kInvalidArgument, reason::kConfigInvalid,
                 absl::StrCat(path, ": cannot read the config file"));
  }
  const std::string base = fs::absolute(path).parent_path().string();
  return ParseConfig(*text, path, base, overrides);
}

}  // namespace carebroker

namespace carebroker {

std::shared_ptr<const Config> ForReload(const Config& next, const Config& running, std::vector<std::string>* pending) {
  auto out = std::make_shared<Config>(next);
  v1::BrokerConfig& c = out->proto_;
  const v1::BrokerConfig& was = running.proto_;
  using google::protobuf::util::MessageDifferencer;
  auto keep = [&](const char* key, bool same) {
    if (!same && pending != nullptr) pending->push_back(key);
  };
  keep("listen", c.listen() == was.listen());
  keep("data_dir", c.data_dir() == was.data_dir());
  keep("store", MessageDifferencer::Equals(c.store(), was.store()));
  keep("limits", MessageDifferencer::Equals(c.limits(), was.limits()));
  keep("delivery", MessageDifferencer::Equals(c.delivery(), was.delivery()));
  keep("audit", MessageDifferencer::Equals(c.audit(), was.audit()) &&
                    next.audit_signing_pem_ == running.audit_signing_pem_ &&
                    next.audit_subject_key_ == running.audit_subject_key_);
  keep("metrics", MessageDifferencer::Equals(c.metrics(), was.metrics()));
  keep("mesh.listen", c.mesh().listen() == was.mesh().listen());
  c.mutable_mesh()->set_listen(was.mesh().listen());
  c.set_listen(was.listen());
  c.set_data_dir(was.data_dir());
  *c.mutable_store() = was.store();
  *c.mutable_limits() = was.limits();
  *c.mutable_delivery() = was.delivery();
  *c.mutable_audit() = was.audit();
  *c.mutable_metrics() = was.metrics();
  out->sqlite_path_ = running.sqlite_path_;
  out->audit_signing_pem_ = running.audit_signing_pem_;
  out->audit_subject_key_ = running.audit_subject_key_;
  return out;
}

}  // namespace carebroker
