// Runs the store conformance suite against the SQLite store, on real files.
#include <sqlite3.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "broker/store/sqlite_schema.h"
#include "broker/store/sqlite_store.h"
#include "broker/store/store_sync.h"
#include "tests/conformance/store_conformance.h"
#include "tests/testutil/testutil.h"

namespace carebroker {
namespace {

std::string TestDir() {
  static const std::string dir = testing::TempDir("sqlite-conformance");
  return dir;
}

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformance,
                         ::testing::Values(StoreFactory{"sqlite", [](const std::string& instance) {
                                                          return OpenSqliteStore(TestDir() + "/" + instance + ".db");
                                                        }}),
                         [](const auto& p) { return p.param.name; });

// The schema of the first release (user_version 1), frozen here as it was
// shipped, so a store written by that release is opened and migrated.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE messages (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, sender TEXT NOT NULL, recipient TEXT NOT NULL,
  workflow TEXT NOT NULL, purpose TEXT NOT NULL, idem_key TEXT, content_type TEXT NOT NULL,
  local_ref TEXT NOT NULL, kind INTEGER NOT NULL, digest BLOB NOT NULL, state INTEGER NOT NULL,
  accepted_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, visible_at INTEGER NOT NULL,
  claim_token INTEGER, deliveries INTEGER NOT NULL DEFAULT 0, first_delivered_at INTEGER,
  acked_at INTEGER, expired_at INTEGER, purged INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX messages_idem ON messages(sender, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX messages_mailbox ON messages(recipient, visible_at, seq) WHERE state < 3;
CREATE INDEX messages_expiry ON messages(expires_at) WHERE state < 3;
CREATE INDEX messages_purge ON messages(acked_at) WHERE state = 3 AND purged = 0;
CREATE TABLE bodies (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
PRAGMA user_version = 1;
)sql";

void Exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

TEST(SqliteSchema, AVersionOneStoreIsMigratedWithItsMessagesIntact) {
  const std::string path = TestDir() + "/v1.db";
  const absl::Time accepted = absl::FromUnixSeconds(1795000000);
  const int64_t t = absl::ToUnixMicros(accepted);
  const int64_t expires = absl::ToUnixMicros(accepted + absl::Hours(120));
  Exec(path, kSchemaV1);
  Exec(path, absl::StrCat("INSERT INTO messages (seq, id, sender, recipient, workflow, purpose, idem_key, content_type, "
                          "local_ref, kind, digest, state, accepted_at, expires_at, visible_at) VALUES "
                          "(1, '0123456789abcdef0123456789abcdef', 'RR8', '503', 'HOSPITAL_DISCHARGE', "
                          "'direct-care', 'k-1', 'application/json', 'L-1', 1, x'00', 1, ",
                          t, ", ", expires, ", ", t, ");"
                          "INSERT INTO bodies (seq, body) VALUES (1, 'synthetic body');"));

  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok()) << store.status();
  const MessageId id("0123456789abcdef0123456789abcdef");
  auto tracked = TrackSync(**store, OrgCode("RR8"), id);
  ASSERT_TRUE(tracked.ok()) << tracked.status();
  EXPECT_EQ(tracked->status, v1::MESSAGE_STATUS_ACCEPTED);
  EXPECT_EQ(tracked->accepted_at, accepted);
  EXPECT_EQ(tracked->local_reference, "L-1");

  auto claimed = ClaimSync(**store, ClaimRequest{OrgCode("503"), 10, accepted, accepted + absl::Minutes(5), 7});
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].id, id);
  EXPECT_EQ((*claimed)[0].payload, "synthetic body");
  EXPECT_EQ((*claimed)[0].consent_check, 0u) << "a message from before consent checks is not re-checked";

  // The new parts of the schema work on the migrated file.
  EXPECT_TRUE(WithholdSync(**store, OrgCode("503"), {id}, "CONSENT_DISSENT", accepted + absl::Minutes(1)).ok());
  EXPECT_EQ(TrackSync(**store, OrgCode("RR8"), id)->status, v1::MESSAGE_STATUS_WITHHELD);
  v1::ConsentChange change;
  change.set_nhs_number("9434765919");
  change.set_national_opt_out(true);
  EXPECT_TRUE(AppendConsentSync(**store, change).ok());
  store->reset();

  // Reopening the migrated file is a no-op, and the state is kept.
  auto again = OpenSqliteStore(path);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(TrackSync(**again, OrgCode("RR8"), id)->status, v1::MESSAGE_STATUS_WITHHELD);
  auto history = ReadConsentSync(**again, "9434765919");
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_EQ(history->size(), 1u);
}

TEST(SqliteSchema, AStoreFromANewerBuildIsRefused) {
  const std::string path = TestDir() + "/future.db";
  Exec(path, "PRAGMA user_version = 99;");
  auto store = OpenSqliteStore(path);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("newer than this build"), std::string::npos) << store.status();
}

int64_t Count(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_stmt* st = nullptr;
  int64_t n = -1;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK && sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    n = sqlite3_column_int64(st, 0);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

AuditRecord About(const std::string& subject) {
  v1::AuditEntry e;
  e.set_subject(subject);
  AuditRecord r;
  r.subject = subject;
  e.SerializeToString(&r.entry);
  return r;
}

// Appends `n` entries in batches of 100, every third about `subject`.
void AppendEntries(Store& s, int n, const std::string& subject, absl::StatusCode want = absl::StatusCode::kOk) {
  for (int i = 0; i < n; i += 100) {
    std::vector<AuditRecord> batch;
    for (int k = i; k < std::min(n, i + 100); ++k) batch.push_back(About(k % 3 == 0 ? subject : "someone else"));
    ASSERT_EQ(AppendAuditSync(s, std::move(batch)).status().code(), want);
  }
}

size_t Found(Store& s, const std::string& subject) {
  auto rows = ReadAuditSync(s, {.from = 0, .max = 100000, .subject = subject});
  EXPECT_TRUE(rows.ok()) << rows.status();
  return rows.ok() ? rows->size() : 0;
}

TEST(SqliteSchema, AChunkedBodyIsStoredInPiecesAndPurgedWithItsMessage) {
  const std::string path = TestDir() + "/chunks.db";
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok()) << store.status();
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  NewMessage m = testing::TestMessage(OrgCode("RR8"), OrgCode("503"), "", std::string(9 << 20, 'a'), t0);
  m.chunks = 2;
  auto appended = AppendSync(**store, {m});
  ASSERT_TRUE(appended.ok() && (*appended)[0].ok());
  auto last = AwaitStore<ChunkStored>([&](auto cb) {
    (*store)->AppendChunk(ChunkUpload{m.sender, m.id, 2, 2, std::string(100, 'b'), t0}, std::move(cb));
  });
  ASSERT_TRUE(last.ok() && last->complete) << last.status();
  // 9 MiB in 4 MiB pieces (three rows) and the last chunk (one).
  EXPECT_EQ(Count(path, "SELECT count(*) FROM chunks"), 4);
  EXPECT_EQ(Count(path, "SELECT max(length(body)) FROM chunks"), 4 << 20);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM bodies"), 0);
  ASSERT_EQ(AckSync(**store, m.recipient, {m.id}, t0)->acknowledged.size(), 1u);
  SweepRequest purge{t0 + absl::Hours(1), t0 + absl::Minutes(1), absl::Hours(120)};
  EXPECT_EQ(SweepSync(**store, purge)->purged, 1);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM chunks"), 0) << "retention purges every chunk";
}

TEST(SqliteSchema, EachFullAuditBlockGetsASearchFilterNotAnIndex) {
  const std::string path = TestDir() + "/blocks.db";
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok()) << store.status();
  AppendEntries(**store, 2100, "person");
  EXPECT_EQ(Found(**store, "person"), 700u);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM audit_blocks"), 2);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit'"), 0);
}

TEST(SqliteSchema, AFailedBatchAcrossABlockEndLeavesTheFilterWhole) {
  const std::string path = TestDir() + "/failed-block.db";
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok()) << store.status();
  AppendEntries(**store, 1000, "person");
  // The next batch (entries 1000 to 1099) closes block 0 and then fails.
  Exec(path, "CREATE TRIGGER refuse BEFORE INSERT ON audit WHEN NEW.idx = 1050 BEGIN SELECT RAISE(ABORT, 'x'); END;");
  AppendEntries(**store, 100, "person", absl::StatusCode::kUnavailable);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM audit_blocks"), 0);
  Exec(path, "DROP TRIGGER refuse;");
  // Block 0's filter, now written, must still hold the person, who is in
  // none of the entries that closed it.
  AppendEntries(**store, 100, "another");
  EXPECT_EQ(Count(path, "SELECT count(*) FROM audit_blocks"), 1);
  EXPECT_EQ(Found(**store, "person"), 334u);
  EXPECT_EQ(Found(**store, "another"), 34u);
}

TEST(SqliteSchema, AVersionThreeAuditLogGetsItsSearchFilters) {
  const std::string path = TestDir() + "/v3.db";
  {
    auto store = OpenSqliteStore(path);
    ASSERT_TRUE(store.ok()) << store.status();
    AppendEntries(**store, 2500, "person");
  }
  // As version 3 left it: a subject index and no filters (nor what
  // version 5 added: transport metadata and single-use credentials, nor
  // version 6's submission progress, nor version 7's held messages, nor
  // version 8's links between a message and its redirect or resend).
  Exec(path, "DROP TABLE audit_blocks; CREATE INDEX audit_subject ON audit(subject, idx) WHERE subject IS NOT NULL; "
             "ALTER TABLE messages DROP COLUMN meta; ALTER TABLE messages DROP COLUMN chunks; "
             "ALTER TABLE messages DROP COLUMN pending_audit; ALTER TABLE messages DROP COLUMN progress; "
             "DROP INDEX messages_held; ALTER TABLE messages DROP COLUMN held_at; "
             "ALTER TABLE messages DROP COLUMN held_reason; ALTER TABLE messages DROP COLUMN reject_code; "
             "ALTER TABLE messages DROP COLUMN reject_text; ALTER TABLE messages DROP COLUMN attempt_base; "
             "DROP INDEX messages_uploading; DROP TABLE chunks; "
             "DROP TABLE used_once; DROP INDEX messages_expired; ALTER TABLE messages DROP COLUMN replaces; "
             "ALTER TABLE messages DROP COLUMN replaced_by; PRAGMA user_version = 3;");
  auto store = OpenSqliteStore(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(Count(path, "PRAGMA user_version"), sqlite::kSchemaVersion);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'meta'"), 1);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'progress'"), 1);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'reject_text'"), 1);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM sqlite_master WHERE name = 'messages_held'"), 1);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'replaced_by'"), 1);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM sqlite_master WHERE name = 'messages_expired'"), 1);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM sqlite_master WHERE name = 'used_once'"), 1);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM audit_blocks"), 2);
  EXPECT_EQ(Count(path, "SELECT count(*) FROM sqlite_master WHERE name = 'audit_subject'"), 0);
  EXPECT_EQ(Found(**store, "person"), 834u);
  // The block being filled at the reopen (entries 2048 on) closes with
  // other people's entries; its filter still holds the person.
  AppendEntries(**store, 600, "another");
  EXPECT_EQ(Count(path, "SELECT count(*) FROM audit_blocks"), 3);
  EXPECT_EQ(Found(**store, "person"), 834u);
}

}  // namespace
}  // namespace carebroker
