// The SQLite store's Store interface: open, queue operations, close
// (sqlite_store_impl.h).
#include "broker/store/sqlite_store.h"

#include <filesystem>

#include "broker/store/sqlite_store_impl.h"
#include "core/files.h"

namespace carebroker {
namespace sqlite_impl {

void SqliteStore::CheckWritable(StoreCallback<bool> done) {
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  absl::Status s = ProbeWritable(dir.empty() ? "." : dir);
  std::move(done)(s.ok() ? absl::StatusOr<bool>(true) : absl::StatusOr<bool>(s));
}

absl::Status SqliteStore::Open(const std::string& path) {
  path_ = path;
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    return SqlError(db_, absl::StrCat("open ", path));
  }
  // 16 KiB pages hold several 2 KiB bodies each (4 KiB pages hold one),
  // which halves the WAL bytes per message. Only applies to a new file.
  // synchronous=NORMAL: a commit writes its WAL frames without syncing;
  // the syncer thread then fdatasyncs the WAL before any operation of the
  // batch completes (see SyncerLoop), so durability is the same as FULL
  // while the next batch's SQL runs during the sync.
  for (const char* pragma :
       {"PRAGMA page_size=16384", "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=5000",
        "PRAGMA temp_store=MEMORY", "PRAGMA cache_size=-65536", "PRAGMA wal_autocheckpoint=4000"}) {
    if (auto s = ExecSql(pragma); !s.ok()) return s;
  }
  if (auto s = sqlite::MigrateSchema(db_); !s.ok()) return s;
  if (auto s = PrepareAll(); !s.ok()) return s;
  // Single node: no other process can hold claims, so a previous run's
  // claims are stale. Release them so they are redelivered at once.
  if (auto s = ExecSql("UPDATE messages SET claim_token = NULL, visible_at = 0 "
                       "WHERE state < 3 AND claim_token IS NOT NULL");
      !s.ok()) {
    return s;
  }
  if (auto s = OpenWal(); !s.ok()) return s;
  // Whatever a previous run left is on disk once synced here.
  if (auto s = SyncWal(); !s.ok()) return s;
  {
    Stmt max;
    if (auto s = max.Prepare(db_, "SELECT coalesce(max(seq), 0) FROM messages"); !s.ok()) return s;
    if (auto row = max.Step(); !row.ok()) return row.status();
    synced_seq_.store(max.Int(0));
  }
  {
    Stmt n;
    if (auto s = n.Prepare(db_, "SELECT coalesce(max(idx) + 1, 0) FROM audit"); !s.ok()) return s;
    if (auto row = n.Step(); !row.ok()) return row.status();
    next_audit_index_ = static_cast<uint64_t>(n.Int(0));
    synced_audit_size_.store(next_audit_index_);
  }
  if (auto s = RebuildPendingBloom(); !s.ok()) return s;
  if (sqlite3_open_v2(path.c_str(), &reader_db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    return SqlError(reader_db_, "open the audit reader");
  }
  for (auto& [stmt, sql] : {std::pair{&audit_read_,
                                      "SELECT idx, entry, leaf FROM audit WHERE idx >= ?1 AND idx < ?2 "
                                      "ORDER BY idx LIMIT ?3"},
                            std::pair{&audit_read_subject_,
                                      "SELECT idx, entry, leaf FROM audit WHERE idx >= ?1 AND idx < ?2 AND "
                                      "subject = ?4 ORDER BY idx LIMIT ?3"},
                            std::pair{&blocks_read_,
                                      "SELECT block, bloom FROM audit_blocks WHERE block >= ?1 AND "
                                      "block < ?2 ORDER BY block"},
                            std::pair{&audit_read_hashes_,
                                      "SELECT idx, NULL, leaf FROM audit WHERE idx >= ?1 AND "
                                      "idx < ?2 ORDER BY idx LIMIT ?3"},
                            std::pair{&heads_read_, "SELECT head FROM tree_heads ORDER BY tree_size"}}) {
    if (auto s = stmt->Prepare(reader_db_, sql); !s.ok()) return s;
  }
  reader_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "cb-store-read");
    ReaderLoop();
  });
  syncer_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "cb-store-sync");
    SyncerLoop();
  });
  writer_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "cb-store");
    WriterLoop();
  });
  return absl::OkStatus();
}

void SqliteStore::Append(std::vector<NewMessage> msgs, StoreCallback<std::vector<absl::StatusOr<AppendReceipt>>> done) {
  auto shared = std::make_shared<std::vector<NewMessage>>(std::move(msgs));
  Enqueue<std::vector<absl::StatusOr<AppendReceipt>>>(
      kDurable, [this, shared]() { return DoAppend(*shared); }, std::move(done));
}

void SqliteStore::Claim(ClaimRequest req, StoreCallback<std::vector<StoredDelivery>> done) {
  if (req.max < 1 || req.max > 10000) {
    std::move(done)(InvalidArgument(reason::kClaimInvalid, "claim max must be 1..10000"));
    return;
  }
  Enqueue<std::vector<StoredDelivery>>(
      kAtCommit, [this, req = std::move(req)]() { return DoClaim(req); }, std::move(done));
}

void SqliteStore::Ack(OrgCode recipient, std::vector<MessageId> ids, absl::Time now, StoreCallback<AckResult> done) {
  Enqueue<AckResult>(
      kDurable, [this, r = std::move(recipient), ids = std::move(ids), now]() { return DoAck(r, ids, now); },
      std::move(done));
}

void SqliteStore::Hide(OrgCode recipient, MessageId id, absl::Time until, StoreCallback<bool> done) {
  Enqueue<bool>(
      kAtCommit,
      [this, r = std::move(recipient), id = std::move(id), until]() -> absl::StatusOr<bool> {
        hide_.Bind(1, id.str()).Bind(2, r.str()).Bind(3, Micros(until));
        if (auto s = hide_.Exec(); !s.ok()) return s;
        return hide_.Changes() > 0;
      },
      std::move(done));
}

void SqliteStore::Release(OrgCode recipient, ClaimToken token, std::vector<MessageId> ids, absl::Time now,
                          StoreCallback<int> done) {
  Enqueue<int>(
      kAtCommit,
      [this, r = std::move(recipient), token, ids = std::move(ids), now]() -> absl::StatusOr<int> {
        return DoRelease(r, token, ids, now);
      },
      std::move(done));
}

void SqliteStore::Track(OrgCode caller, MessageId id, StoreCallback<TrackInfo> done) {
  Enqueue<TrackInfo>(
      kAtCommit, [this, c = std::move(caller), id = std::move(id)]() { return DoTrack(c, id); }, std::move(done));
}

void SqliteStore::TrackByKey(OrgCode sender, std::string key, absl::Time since, StoreCallback<TrackInfo> done) {
  Enqueue<TrackInfo>(
      kAtCommit,
      [this, s = std::move(sender), key = std::move(key), since]() -> absl::StatusOr<TrackInfo> {
        MessageId id;
        {
          find_idem_.Bind(1, s.str()).Bind(2, key);
          ResetOnExit reset{find_idem_};
          auto row = find_idem_.Step();
          if (!row.ok()) return row.status();
          if (!*row || mailbox::KeyForgotten(FromMicros(find_idem_.Int(1)), since)) return mailbox::NoMessageWithKey();
          id = MessageId(find_idem_.Text(0));
        }
        return DoTrack(s, id);
      },
      std::move(done));
}

void SqliteStore::Withhold(OrgCode recipient, std::vector<MessageId> ids, std::string reason, absl::Time now,
                           StoreCallback<int> done) {
  Enqueue<int>(
      kDurable,
      [this, r = std::move(recipient), ids = std::move(ids), reason = std::move(reason), now]() -> absl::StatusOr<int> {
        return DoWithhold(r, ids, reason, now);
      },
      std::move(done));
}

void SqliteStore::Reject(Rejection rejection, StoreCallback<v1::MessageStatus> done) {
  Enqueue<v1::MessageStatus>(
      kDurable, [this, r = std::move(rejection)]() { return DoReject(r); }, std::move(done));
}

void SqliteStore::FindMessages(MessageQuery query, StoreCallback<std::vector<MessageSummary>> done) {
  if (auto s = mailbox::CheckQuery(query); !s.ok()) {
    std::move(done)(s);
    return;
  }
  Enqueue<std::vector<MessageSummary>>(
      kAtCommit, [this, q = std::move(query)]() { return DoFindMessages(q); }, std::move(done));
}

void SqliteStore::ActOn(OperatorAction action, StoreCallback<v1::MessageStatus> done) {
  Enqueue<v1::MessageStatus>(
      kDurable, [this, a = std::move(action)]() { return DoActOn(a); }, std::move(done));
}

void SqliteStore::ReadUndelivered(MessageId id, StoreCallback<Undelivered> done) {
  Enqueue<Undelivered>(kAtCommit, [this, id = std::move(id)]() { return DoReadUndelivered(id); }, std::move(done));
}

void SqliteStore::AppendConsent(v1::ConsentChange change, AuditRecord audit, StoreCallback<v1::ConsentChange> done) {
  Enqueue<v1::ConsentChange>(
      kDurable,
      [this, c = std::move(change), a = std::move(audit)]() mutable -> absl::StatusOr<v1::ConsentChange> {
        if (auto s = WriteAudit(a); !s.ok()) return s;
        return DoAppendConsent(std::move(c));
      },
      std::move(done));
}

void SqliteStore::AppendAudit(std::vector<AuditRecord> records, StoreCallback<uint64_t> done) {
  Enqueue<uint64_t>(
      kDurable,
      [this, rs = std::move(records)]() -> absl::StatusOr<uint64_t> {
        const uint64_t first = next_audit_index_;
        for (const auto& r : rs) {
          if (auto s = WriteAudit(r); !s.ok()) return s;
        }
        return first;
      },
      std::move(done));
}

void SqliteStore::ReadAudit(AuditRead req, StoreCallback<std::vector<AuditRow>> done) {
  if (req.max < 1 || req.max > 100000) {
    std::move(done)(InvalidArgument(reason::kAuditReadInvalid, "audit read max must be 1..100000"));
    return;
  }
  Read([this, req = std::move(req), done = std::move(done)](bool closed) mutable {
    if (closed) return std::move(done)(StoreClosed());
    std::move(done)(DoReadAudit(req));
  });
}

void SqliteStore::AppendTreeHead(v1::SignedTreeHead head, StoreCallback<bool> done) {
  Enqueue<bool>(
      kDurable,
      [this, h = std::move(head)]() -> absl::StatusOr<bool> {
        const std::string bytes = h.SerializeAsString();
        head_insert_.Bind(1, static_cast<int64_t>(h.tree_size())).BindBlob(2, bytes);
        if (auto s = head_insert_.Exec(); !s.ok()) return s;
        return head_insert_.Changes() == 1;
      },
      std::move(done));
}

void SqliteStore::ReadTreeHeads(StoreCallback<std::vector<v1::SignedTreeHead>> done) {
  Read([this, done = std::move(done)](bool closed) mutable {
    if (closed) return std::move(done)(StoreClosed());
    std::move(done)(DoReadTreeHeads());
  });
}

void SqliteStore::Inbox(InboxQuery query, StoreCallback<InboxPage> done) {
  if (query.max < 1 || query.max > 10000) {
    return std::move(done)(InvalidArgument(reason::kClaimInvalid, "inbox page size must be 1..10000"));
  }
  Enqueue<InboxPage>(kAtCommit, [this, q = std::move(query)]() { return DoInbox(q); }, std::move(done));
}

void SqliteStore::Fetch(FetchRequest req, StoreCallback<Fetched> done) {
  // A delivery records its audit entry: it completes once that is durable.
  const bool durable = req.deliver;
  Enqueue<Fetched>(durable, [this, r = std::move(req)]() { return DoFetch(r); }, std::move(done));
}

void SqliteStore::UseOnce(std::string key, absl::Time forget_at, StoreCallback<bool> done) {
  Enqueue<bool>(kDurable, [this, k = std::move(key), forget_at]() { return DoUseOnce(k, forget_at); },
                std::move(done));
}

void SqliteStore::Sweep(SweepRequest req, StoreCallback<SweepResult> done) {
  Enqueue<SweepResult>(
      kDurable, [this, req]() { return DoSweep(req); }, std::move(done));
}

}  // namespace sqlite_impl

using sqlite_impl::SqliteStore;

absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path) {
  auto store = std::make_unique<SqliteStore>();
  if (auto s = store->Open(path); !s.ok()) return s;
  return std::unique_ptr<Store>(std::move(store));
}

absl::Status ReadSqliteAuditLog(const std::string& path, AuditLogVisitor& visitor) {
  sqlite3* db = nullptr;
  const std::string uri = absl::StrCat("file:", path, "?mode=ro");
  if (sqlite3_open_v2(uri.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return absl::NotFoundError(absl::StrCat(path, ": cannot open the store"));
  }
  absl::Status status;
  auto each = [&](const char* sql, auto&& row) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
      status = absl::DataLossError(absl::StrCat(path, ": not a carebroker store with an audit log"));
      return;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) row(st);
    if (rc != SQLITE_DONE) status = absl::DataLossError(absl::StrCat(path, ": cannot read: ", sqlite3_errmsg(db)));
    sqlite3_finalize(st);
  };
  auto blob = [](sqlite3_stmt* st, int col) {
    const void* p = sqlite3_column_blob(st, col);
    return p ? absl::string_view(static_cast<const char*>(p), sqlite3_column_bytes(st, col)) : absl::string_view();
  };
  each("SELECT idx, entry, leaf FROM audit ORDER BY idx", [&](sqlite3_stmt* st) {
    visitor.Entry(static_cast<uint64_t>(sqlite3_column_int64(st, 0)), blob(st, 1), blob(st, 2));
  });
  if (status.ok()) {
    each("SELECT head FROM tree_heads ORDER BY tree_size",
         [&](sqlite3_stmt* st) { visitor.Head(ParseStoredHead(blob(st, 0))); });
  }
  sqlite3_close(db);
  return status;
}

}  // namespace carebroker
