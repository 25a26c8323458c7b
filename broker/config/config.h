// The broker's configuration: one YAML file (schema: proto BrokerConfig),
// validated once at start and then held as an immutable snapshot.
//
// LoadConfig resolves relative paths (TLS files against the config file's
// folder; the store file against data_dir), fills defaults, and checks every
// key. A bad config is INVALID_ARGUMENT whose message is
// "FILE:LINE: key.path: reason"; the server must not start.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "adapters/formats.h"
#include "core/shapes.h"
#include "core/types.h"
#include "carebroker/v1/config.pb.h"

namespace carebroker {

// Command-line values that win over the file.
struct ConfigOverrides {
  std::optional<std::string> listen;
  std::optional<std::string> data_dir;
  std::optional<std::string> metrics_listen;
  std::optional<std::string> mesh_listen;
};

// The validated config plus derived lookups. Immutable once built.
class Config {
 public:
  const v1::BrokerConfig& proto() const { return proto_; }
  // Absolute path of the SQLite file.
  const std::string& sqlite_path() const { return sqlite_path_; }
  // The registered organisation with this ODS code, or null.
  const v1::Organisation* FindOrganisation(const OrgCode& ods) const;

  // Absolute path of the agreements folder.
  const std::string& agreements_dir() const { return proto_.policy().agreements_dir(); }
  // The recipient's pseudonymisation key, or null when it has none.
  const std::string* PseudonymKey(const OrgCode& ods) const;
  // The audit log's Ed25519 signing key (PEM) and subject HMAC key.
  const std::string& audit_signing_pem() const { return audit_signing_pem_; }
  const std::string& audit_subject_key() const { return audit_subject_key_; }
  // The format `ods` receives records of `workflow` in (canonical unless configured).
  adapters::Format ReceiveFormat(const OrgCode& ods, absl::string_view workflow) const;
  const v1::RoutingConfig& routing() const { return proto_.routing(); }
  bool MayWriteConsent(Role r) const;
  bool MayReadConsent(Role r) const;

  // The MESH front door: a mailbox by id, a workflow by MESH workflow id
  // (null when not configured), a mailbox's password, the shared secret.
  const v1::MeshMailbox* FindMeshMailbox(absl::string_view id) const;
  const v1::MeshWorkflow* FindMeshWorkflow(absl::string_view id) const;
  const std::string* MeshPassword(absl::string_view mailbox) const;
  const std::string& mesh_shared_secret() const { return mesh_shared_secret_; }

  absl::Duration visibility_timeout() const;
  absl::Duration expiry() const;
  absl::Duration retention() const;
  // governance.review_days, as a duration.
  absl::Duration override_review_within() const { return absl::Hours(24) * proto_.governance().review_days(); }
  absl::Duration idempotency_window() const;
  absl::Duration sweep_interval() const;

 private:
  friend std::shared_ptr<const Config> ForReload(const Config&, const Config&, std::vector<std::string>*);
  friend absl::StatusOr<std::shared_ptr<const Config>> ParseConfig(absl::string_view, absl::string_view,
                                                                   const std::string&,
                                                                   const ConfigOverrides&);
  template <typename Err>
  static absl::Status CheckMesh(Config& cfg, const std::string& base_dir, const ConfigOverrides& overrides,
                                const Err& err);

  v1::BrokerConfig proto_;
  std::string sqlite_path_;
  absl::flat_hash_map<std::string, int> org_index_;
  absl::flat_hash_map<std::string, std::string> pseudonym_keys_;
  std::string audit_signing_pem_, audit_subject_key_;
  absl::flat_hash_map<std::string, int> mesh_mailbox_index_, mesh_workflow_index_;
  absl::flat_hash_map<std::string, std::string> mesh_passwords_;
  std::string mesh_shared_secret_;
};

// MESH's limit on one request's body (a message, or a chunk of one).
inline constexpr uint64_t kMeshMaxRequestBytes = 100ull << 20;

// Reads, validates and completes the config at `path`.
absl::StatusOr<std::shared_ptr<const Config>> LoadConfig(const std::string& path,
                                                         const ConfigOverrides& overrides = {});

// The config a reload puts in force. From `next` (the file as it reads
// now): what a reload changes (organisations, routing, policy, tls, log).
// From `running`: what only a restart changes (listen, data_dir, store,
// limits, delivery, audit, metrics); `pending`, when given, gets the name of
// each of those that `next` changes.
std::shared_ptr<const Config> ForReload(const Config& next, const Config& running, std::vector<std::string>* pending);

// As LoadConfig, from text; `file` names it in errors and `base_dir` anchors
// relative paths.
absl::StatusOr<std::shared_ptr<const Config>> ParseConfig(absl::string_view text, absl::string_view file,
                                                          const std::string& base_dir,
                                                          const ConfigOverrides& overrides);

}  // namespace carebroker
