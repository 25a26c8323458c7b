#include "broker/store/sqlite_schema.h"

#include "absl/strings/str_cat.h"
#include "broker/store/subject_bloom.h"
#include "core/reasons.h"
#include "core/status.h"

namespace carebroker::sqlite {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  sender TEXT NOT NULL,
  recipient TEXT NOT NULL,
  workflow TEXT NOT NULL,
  purpose TEXT NOT NULL,
  idem_key TEXT,
  content_type TEXT NOT NULL,
  local_ref TEXT NOT NULL,
  kind INTEGER NOT NULL,
  digest BLOB NOT NULL,
  state INTEGER NOT NULL,
  accepted_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  visible_at INTEGER NOT NULL,
  claim_token INTEGER,
  deliveries INTEGER NOT NULL DEFAULT 0,
  first_delivered_at INTEGER,
  acked_at INTEGER,
  expired_at INTEGER,
  purged INTEGER NOT NULL DEFAULT 0,
  subject TEXT,
  consent_check INTEGER NOT NULL DEFAULT 0,
  withheld_at INTEGER,
  withheld_reason TEXT,
  meta BLOB,
  chunks INTEGER NOT NULL DEFAULT 1,
  pending_audit BLOB,
  progress BLOB,
  held_at INTEGER,
  held_reason TEXT,
  reject_code TEXT,
  reject_text TEXT,
  attempt_base INTEGER NOT NULL DEFAULT 0,
  replaces TEXT,
  replaced_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_idem ON messages(sender, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_mailbox ON messages(recipient, visible_at, seq) WHERE state < 3;
CREATE INDEX IF NOT EXISTS messages_expiry ON messages(expires_at) WHERE state < 3;
CREATE INDEX IF NOT EXISTS messages_purge ON messages(acked_at) WHERE state = 3 AND purged = 0;
CREATE TABLE IF NOT EXISTS bodies (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
-- The bodies of chunked messages: chunk n in pieces (part 0, 1, ...) of at
-- most 4 MiB, never one blob.
CREATE TABLE IF NOT EXISTS chunks (seq INTEGER NOT NULL, n INTEGER NOT NULL, part INTEGER NOT NULL,
                                   body BLOB NOT NULL, PRIMARY KEY (seq, n, part));
CREATE INDEX IF NOT EXISTS messages_uploading ON messages(expires_at) WHERE state = 6;
CREATE INDEX IF NOT EXISTS messages_held ON messages(expires_at) WHERE state = 7 AND purged = 0;
CREATE INDEX IF NOT EXISTS messages_expired ON messages(expired_at) WHERE state = 4 AND purged = 0;
CREATE TABLE IF NOT EXISTS consent (seq INTEGER PRIMARY KEY, nhs_number TEXT NOT NULL, change BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS consent_person ON consent(nhs_number, seq);
CREATE TABLE IF NOT EXISTS audit (idx INTEGER PRIMARY KEY, at INTEGER NOT NULL, subject TEXT, entry BLOB NOT NULL,
                                  leaf BLOB NOT NULL);
-- A Bloom filter of the subjects in each full block of kAuditBlockEntries
-- entries (see subject_bloom.h): searching by person without an index that
-- every append would scatter writes over.
CREATE TABLE IF NOT EXISTS audit_blocks (block INTEGER PRIMARY KEY, bloom BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tree_heads (tree_size INTEGER PRIMARY KEY, head BLOB NOT NULL);
-- Single-use credentials (hashes of MESH tokens) until they could no longer
-- be presented anyway.
CREATE TABLE IF NOT EXISTS used_once (key BLOB PRIMARY KEY, forget_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_once_forget ON used_once(forget_at);
)sql";

// Version 1 (the exchange spine) to 2: consent history, the consent
// re-check at delivery and withholding.
constexpr const char* kMigrateV1 = R"sql(
ALTER TABLE messages ADD COLUMN subject TEXT;
ALTER TABLE messages ADD COLUMN consent_check INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN withheld_at INTEGER;
ALTER TABLE messages ADD COLUMN withheld_reason TEXT;
)sql";

// Version 3 to 4: the audit subject index gives way to per-block filters
// (filled in by BackfillAuditBlocks).
constexpr const char* kMigrateV3 = R"sql(
DROP INDEX IF EXISTS audit_subject;
)sql";

// Version 4 to 5: transport metadata (the MESH front door's pass-through
// headers) kept with each message, and chunked messages.
constexpr const char* kMigrateV4 = R"sql(
ALTER TABLE messages ADD COLUMN meta BLOB;
ALTER TABLE messages ADD COLUMN chunks INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN pending_audit BLOB;
)sql";

// Version 5 to 6: a CLD submission's progress between its chunks.
constexpr const char* kMigrateV5 = R"sql(
ALTER TABLE messages ADD COLUMN progress BLOB;
)sql";

// Version 6 to 7: held messages (rejected by their recipient, or delivered
// delivery.max_attempts times), and the deliveries an operator's release
// starts counting attempts from.
constexpr const char* kMigrateV6 = R"sql(
ALTER TABLE messages ADD COLUMN held_at INTEGER;
ALTER TABLE messages ADD COLUMN held_reason TEXT;
ALTER TABLE messages ADD COLUMN reject_code TEXT;
ALTER TABLE messages ADD COLUMN reject_text TEXT;
ALTER TABLE messages ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
)sql";

// Version 7 to 8: an operator's redirect or resend links the original and
// its replacement (expired bodies are kept from now on until retention).
constexpr const char* kMigrateV7 = R"sql(
ALTER TABLE messages ADD COLUMN replaces TEXT;
ALTER TABLE messages ADD COLUMN replaced_by TEXT;
)sql";

}  // namespace

const char kSubjectsInRange[] = "SELECT subject FROM audit WHERE idx >= ?1 AND idx < ?2 AND subject IS NOT NULL";

absl::StatusOr<SubjectBloom> SubjectFilter(Stmt& subjects, uint64_t first, uint64_t last) {
  subjects.Bind(1, static_cast<int64_t>(first)).Bind(2, static_cast<int64_t>(last));
  ResetOnExit reset{subjects};
  SubjectBloom bloom;
  while (true) {
    auto row = subjects.Step();
    if (!row.ok()) return row.status();
    if (!*row) return bloom;
    bloom.Add(subjects.View(0));
  }
}

namespace {

// Writes the filter of every full audit block that has none (a store from
// before version 4). Inside the migration transaction.
absl::Status BackfillAuditBlocks(sqlite3* db) {
  Stmt extent, subjects, insert;
  if (auto s = extent.Prepare(db, "SELECT (SELECT coalesce(max(block) + 1, 0) FROM audit_blocks), "
                                  "(SELECT coalesce(max(idx) + 1, 0) FROM audit)");
      !s.ok()) {
    return s;
  }
  if (auto row = extent.Step(); !row.ok()) return row.status();
  const auto first_block = static_cast<uint64_t>(extent.Int(0));
  const auto entries = static_cast<uint64_t>(extent.Int(1));
  extent.Reset();
  if (auto s = subjects.Prepare(db, kSubjectsInRange); !s.ok()) return s;
  if (auto s = insert.Prepare(db, "INSERT INTO audit_blocks (block, bloom) VALUES (?1, ?2)"); !s.ok()) return s;
  for (uint64_t b = first_block; (b + 1) * kAuditBlockEntries <= entries; ++b) {
    auto bloom = SubjectFilter(subjects, b * kAuditBlockEntries, (b + 1) * kAuditBlockEntries);
    if (!bloom.ok()) return bloom.status();
    insert.Bind(1, static_cast<int64_t>(b)).BindBlob(2, bloom->bytes());
    if (auto s = insert.Exec(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MigrateSchema(sqlite3* db) {
  Stmt v;
  if (auto s = v.Prepare(db, "PRAGMA user_version"); !s.ok()) return s;
  auto row = v.Step();
  if (!row.ok()) return row.status();
  const int64_t version = v.Int(0);
  v.Reset();
  if (version > kSchemaVersion) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kStoreSchemaNewer,
                 absl::StrCat("store schema version ", version, " is newer than this build (", kSchemaVersion, ")"));
  }
  if (version == kSchemaVersion) return absl::OkStatus();
  if (auto s = ExecSql(db, "BEGIN IMMEDIATE"); !s.ok()) return s;
  if ((version == 1 && sqlite3_exec(db, kMigrateV1, nullptr, nullptr, nullptr) != SQLITE_OK) ||
      (version >= 1 && version <= 3 && sqlite3_exec(db, kMigrateV3, nullptr, nullptr, nullptr) != SQLITE_OK) ||
      (version >= 1 && version <= 4 && sqlite3_exec(db, kMigrateV4, nullptr, nullptr, nullptr) != SQLITE_OK) ||
      (version >= 1 && version <= 5 && sqlite3_exec(db, kMigrateV5, nullptr, nullptr, nullptr) != SQLITE_OK) ||
      (version >= 1 && version <= 6 && sqlite3_exec(db, kMigrateV6, nullptr, nullptr, nullptr) != SQLITE_OK) ||
      (version >= 1 && version <= 7 && sqlite3_exec(db, kMigrateV7, nullptr, nullptr, nullptr) != SQLITE_OK) ||
      sqlite3_exec(db, kSchema, nullptr, nullptr, nullptr) != SQLITE_OK) {
    auto err = SqlError(db, "create schema");
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return err;
  }
  if (auto s = BackfillAuditBlocks(db); !s.ok()) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  }
  if (auto s = ExecSql(db, absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str()); !s.ok()) return s;
  return ExecSql(db, "COMMIT");
}

}  // namespace carebroker::sqlite
