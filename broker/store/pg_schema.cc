#include "broker/store/pg_schema.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace carebroker::pg {
namespace {

// One advisory lock key for schema changes ("carebrkr" in ASCII).
constexpr int64_t kMigrationLock = 0x6361726562726b72;

// Each migration takes the schema from its index to the next version.
// Times are microseconds since the Unix epoch (as the SQLite store keeps
// them); message bodies live apart from their metadata so purging one
// leaves the other.
const std::vector<const char*>& Migrations() {
  static const auto* m = new std::vector<const char*>{
      // 0 -> 1: everything the SQLite store holds at its version 4.
      R"sql(
CREATE TABLE messages (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  sender TEXT NOT NULL,
  recipient TEXT NOT NULL,
  workflow TEXT NOT NULL,
  purpose TEXT NOT NULL,
  idem_key TEXT,
  content_type TEXT NOT NULL,
  local_ref TEXT NOT NULL,
  kind INTEGER NOT NULL,
  digest BYTEA NOT NULL,
  state SMALLINT NOT NULL,
  accepted_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  visible_at BIGINT NOT NULL,
  claim_token BIGINT,
  deliveries INTEGER NOT NULL DEFAULT 0,
  first_delivered_at BIGINT,
  acked_at BIGINT,
  expired_at BIGINT,
  purged BOOLEAN NOT NULL DEFAULT false,
  subject TEXT,
  consent_check BIGINT NOT NULL DEFAULT 0,
  withheld_at BIGINT,
  withheld_reason TEXT
);
CREATE UNIQUE INDEX messages_idem ON messages (sender, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX messages_mailbox ON messages (recipient, visible_at, seq) WHERE state < 3;
CREATE INDEX messages_expiry ON messages (expires_at) WHERE state < 3;
CREATE INDEX messages_purge ON messages (acked_at) WHERE state = 3 AND NOT purged;
-- Bodies are deleted with their messages' expiry, withholding and purge (no
-- foreign key: its check would cost every insert a lookup and a row lock).
CREATE TABLE bodies (seq BIGINT PRIMARY KEY, body BYTEA NOT NULL);
CREATE TABLE consent (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  nhs_number TEXT NOT NULL,
  change BYTEA NOT NULL
);
CREATE INDEX consent_person ON consent (nhs_number, seq);
-- The audit log: one total order for every replica. An append locks the
-- single audit_next row, takes the next indexes and commits, so indexes are
-- consecutive and in commit order whichever replica appends.
CREATE TABLE audit (
  idx BIGINT PRIMARY KEY,
  at BIGINT NOT NULL,
  subject TEXT,
  entry BYTEA NOT NULL,
  leaf BYTEA NOT NULL
);
CREATE INDEX audit_subject ON audit (subject, idx) WHERE subject IS NOT NULL;
CREATE TABLE audit_next (one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one), idx BIGINT NOT NULL);
INSERT INTO audit_next (idx) VALUES (0);
CREATE TABLE tree_heads (tree_size BIGINT PRIMARY KEY, head BYTEA NOT NULL);
)sql",
      // 1 -> 2: transport metadata with each message (the MESH front door's
      // pass-through headers), chunked messages (a row per chunk) and
      // single-use credentials (MESH tokens), shared by every replica.
      R"sql(
ALTER TABLE messages ADD COLUMN meta BYTEA;
ALTER TABLE messages ADD COLUMN chunks INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN pending_audit BYTEA;
CREATE TABLE chunks (seq BIGINT NOT NULL, n INTEGER NOT NULL, part INTEGER NOT NULL, body BYTEA NOT NULL,
                     PRIMARY KEY (seq, n, part));
CREATE INDEX messages_uploading ON messages (expires_at) WHERE state = 6;
CREATE TABLE used_once (key BYTEA PRIMARY KEY, forget_at BIGINT NOT NULL);
CREATE INDEX used_once_forget ON used_once (forget_at);
)sql",
      // 2 -> 3: a CLD submission's progress between its chunks.
      R"sql(
ALTER TABLE messages ADD COLUMN progress BYTEA;
)sql",
      // 3 -> 4: held messages (rejected by their recipient, or delivered
      // delivery.max_attempts times), and the deliveries an operator's
      // release starts counting attempts from.
      R"sql(
ALTER TABLE messages ADD COLUMN held_at BIGINT;
ALTER TABLE messages ADD COLUMN held_reason TEXT;
ALTER TABLE messages ADD COLUMN reject_code TEXT;
ALTER TABLE messages ADD COLUMN reject_text TEXT;
ALTER TABLE messages ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_held ON messages (expires_at) WHERE state = 7 AND NOT purged;
)sql",
      // 4 -> 5: an operator's redirect or resend links the original and its
      // replacement; expired bodies are kept until retention (for a resend).
      R"sql(
ALTER TABLE messages ADD COLUMN replaces TEXT;
ALTER TABLE messages ADD COLUMN replaced_by TEXT;
CREATE INDEX messages_expired ON messages (expired_at) WHERE state = 4 AND NOT purged;
)sql",
  };
  return *m;
}

}  // namespace

int SchemaVersion() { return static_cast<int>(Migrations().size()); }

absl::StatusOr<int> CurrentVersion(Connection& conn) {
  auto r = conn.Exec("SELECT to_regclass('carebroker_schema') IS NOT NULL");
  if (!r.ok()) return r.status();
  if (r->Text(0, 0) != "t") return 0;
  auto v = conn.Exec("SELECT version FROM carebroker_schema");
  if (!v.ok()) return v.status();
  return v->rows() == 0 ? 0 : static_cast<int>(v->Int(0, 0));
}

absl::StatusOr<int> Migrate(Connection& conn) {
  if (auto s = conn.ExecScript("BEGIN"); !s.ok()) return s;
  auto fail = [&](absl::Status s) {
    (void)conn.ExecScript("ROLLBACK");
    return s;
  };
  if (auto r = conn.Exec("SELECT pg_advisory_xact_lock($1)", {Param::Int(kMigrationLock)}); !r.ok()) {
    return fail(r.status());
  }
  if (auto s = conn.ExecScript("CREATE TABLE IF NOT EXISTS carebroker_schema (version INTEGER NOT NULL)"); !s.ok()) {
    return fail(s);
  }
  auto found = CurrentVersion(conn);
  if (!found.ok()) return fail(found.status());
  const int latest = SchemaVersion();
  if (*found > latest) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("the PostgreSQL store is at schema version ", *found, ", newer than this build (", latest,
                     "): run a carebroker at least as new as the one that wrote it")));
  }
  for (int v = *found; v < latest; ++v) {
    if (auto s = conn.ExecScript(Migrations()[static_cast<size_t>(v)]); !s.ok()) {
      return fail(absl::Status(s.code(), absl::StrCat("migration to schema version ", v + 1, ": ", s.message())));
    }
  }
  if (*found != latest) {
    auto r = *found == 0 ? conn.Exec("INSERT INTO carebroker_schema (version) VALUES ($1)", {Param::Int(latest)})
                         : conn.Exec("UPDATE carebroker_schema SET version = $1", {Param::Int(latest)});
    if (!r.ok()) return fail(r.status());
  }
  if (auto s = conn.ExecScript("COMMIT"); !s.ok()) return s;
  return *found;
}

}  // namespace carebroker::pg
