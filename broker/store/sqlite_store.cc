#include "broker/store/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "audit/merkle.h"
#include "core/time.h"
#include "core/status.h"
#include "core/reasons.h"
#include "broker/store/mailbox_rules.h"
#include "broker/store/op_queue.h"
#include "broker/store/sqlite_schema.h"
#include "broker/store/sqlite_stmt.h"
#include "broker/store/subject_bloom.h"

namespace carebroker {
namespace {

using sqlite::ResetOnExit;
using sqlite::SqlError;
using sqlite::Stmt;

constexpr size_t kMaxOpsPerCommit = 4096;
// Committed batches waiting for their fdatasync; the writer waits when the
// syncer is this far behind.
constexpr size_t kMaxUnsyncedBatches = 4;


// One queued operation: runs inside the batch transaction, then completes.
class Op {
 public:
  virtual ~Op() = default;
  // Runs against the open transaction. A non-OK status fails the batch.
  virtual absl::Status Run() = 0;
  // Whether the op's effects must be on disk before it completes (appends,
  // acks, expiry). Claims, releases and reads complete right after their
  // commit: claims only see messages already on disk (seq <= synced_seq_),
  // and their own effects need no durability (a lost claim is a redelivery).
  virtual bool durable() const = 0;
  // The op wrote audit entries: it completes only once they are durable.
  virtual void MarkDurable() = 0;
  // Completes with the batch's outcome (OK: the commit is durable).
  virtual void Finish(const absl::Status& batch) = 0;
};

template <typename T>
class OpImpl final : public Op {
 public:
  OpImpl(bool durable, absl::AnyInvocable<absl::StatusOr<T>()> run, StoreCallback<T> done)
      : durable_(durable), run_(std::move(run)), result_(std::move(done)) {}
  bool durable() const override { return durable_; }
  void MarkDurable() override { durable_ = true; }
  absl::Status Run() override { return result_.Keep(run_()); }
  void Finish(const absl::Status& batch) override { result_.Finish(batch); }

 private:
  bool durable_;
  absl::AnyInvocable<absl::StatusOr<T>()> run_;
  OpResult<T> result_;
};

class SqliteStore final : public Store {
 public:
  ~SqliteStore() override {
    Close();
    audit_read_.Finalize();
    audit_read_subject_.Finalize();
    blocks_read_.Finalize();
    audit_read_hashes_.Finalize();
    heads_read_.Finalize();
    sqlite3_close_v2(reader_db_);
    sqlite3_close_v2(db_);
    if (wal_fd_ >= 0) ::close(wal_fd_);
  }

  absl::Status Open(const std::string& path) {
    path_ = path;
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      return SqlError(db_, absl::StrCat("open ", path));
    }
    // 16 KiB pages hold several 2 KiB bodies each (4 KiB pages hold one),
    // which halves the WAL bytes per message. Only applies to a new file.
    // synchronous=NORMAL: a commit writes its WAL frames without syncing;
    // the syncer thread then fdatasyncs the WAL before any operation of the
    // batch completes (see SyncerLoop), so durability is the same as FULL
    // while the next batch's SQL runs during the sync.
    for (const char* pragma : {"PRAGMA page_size=16384", "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                               "PRAGMA busy_timeout=5000", "PRAGMA temp_store=MEMORY",
                               "PRAGMA cache_size=-65536", "PRAGMA wal_autocheckpoint=4000"}) {
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
    for (auto& [stmt, sql] : {std::pair{&audit_read_, "SELECT idx, entry, leaf FROM audit WHERE idx >= ?1 AND idx < ?2 "
                                                      "ORDER BY idx LIMIT ?3"},
                              std::pair{&audit_read_subject_,
                                        "SELECT idx, entry, leaf FROM audit WHERE idx >= ?1 AND idx < ?2 AND "
                                        "subject = ?4 ORDER BY idx LIMIT ?3"},
                              std::pair{&blocks_read_, "SELECT block, bloom FROM audit_blocks WHERE block >= ?1 AND "
                                                       "block < ?2 ORDER BY block"},
                              std::pair{&audit_read_hashes_, "SELECT idx, NULL, leaf FROM audit WHERE idx >= ?1 AND "
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

  void Append(std::vector<NewMessage> msgs,
              StoreCallback<std::vector<absl::StatusOr<AppendReceipt>>> done) override {
    auto shared = std::make_shared<std::vector<NewMessage>>(std::move(msgs));
    Enqueue<std::vector<absl::StatusOr<AppendReceipt>>>(
        kDurable, [this, shared]() { return DoAppend(*shared); }, std::move(done));
  }

  void Claim(ClaimRequest req, StoreCallback<std::vector<StoredDelivery>> done) override {
    if (req.max < 1 || req.max > 10000) {
      std::move(done)(InvalidArgument(reason::kClaimInvalid, "claim max must be 1..10000"));
      return;
    }
    Enqueue<std::vector<StoredDelivery>>(
        kAtCommit, [this, req = std::move(req)]() { return DoClaim(req); }, std::move(done));
  }

  void Ack(OrgCode recipient, std::vector<MessageId> ids, absl::Time now,
           StoreCallback<AckResult> done) override {
    Enqueue<AckResult>(
        kDurable, [this, r = std::move(recipient), ids = std::move(ids), now]() { return DoAck(r, ids, now); },
        std::move(done));
  }

  void Release(OrgCode recipient, ClaimToken token, std::vector<MessageId> ids, absl::Time now,
               StoreCallback<int> done) override {
    Enqueue<int>(kAtCommit, [this, r = std::move(recipient), token, ids = std::move(ids),
                  now]() -> absl::StatusOr<int> { return DoRelease(r, token, ids, now); },
                 std::move(done));
  }

  void Track(OrgCode caller, MessageId id, StoreCallback<TrackInfo> done) override {
    Enqueue<TrackInfo>(
        kAtCommit, [this, c = std::move(caller), id = std::move(id)]() { return DoTrack(c, id); }, std::move(done));
  }

  void Withhold(OrgCode recipient, std::vector<MessageId> ids, std::string reason, absl::Time now,
                StoreCallback<int> done) override {
    Enqueue<int>(kDurable, [this, r = std::move(recipient), ids = std::move(ids), reason = std::move(reason),
                  now]() -> absl::StatusOr<int> { return DoWithhold(r, ids, reason, now); },
                 std::move(done));
  }

  void AppendConsent(v1::ConsentChange change, AuditRecord audit, StoreCallback<v1::ConsentChange> done) override {
    Enqueue<v1::ConsentChange>(
        kDurable,
        [this, c = std::move(change), a = std::move(audit)]() mutable -> absl::StatusOr<v1::ConsentChange> {
          if (auto s = WriteAudit(a); !s.ok()) return s;
          return DoAppendConsent(std::move(c));
        },
        std::move(done));
  }

  void AppendAudit(std::vector<AuditRecord> records, StoreCallback<uint64_t> done) override {
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

  void ReadAudit(AuditRead req, StoreCallback<std::vector<AuditRow>> done) override {
    if (req.max < 1 || req.max > 100000) {
      std::move(done)(InvalidArgument(reason::kAuditReadInvalid, "audit read max must be 1..100000"));
      return;
    }
    Read([this, req = std::move(req), done = std::move(done)](bool closed) mutable {
      if (closed) return std::move(done)(StoreClosed());
      std::move(done)(DoReadAudit(req));
    });
  }

  void AppendTreeHead(v1::SignedTreeHead head, StoreCallback<bool> done) override {
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

  void ReadTreeHeads(StoreCallback<std::vector<v1::SignedTreeHead>> done) override {
    Read([this, done = std::move(done)](bool closed) mutable {
      if (closed) return std::move(done)(StoreClosed());
      std::move(done)(DoReadTreeHeads());
    });
  }

  void SetAuditRecorder(const AuditRecorder* recorder) override { recorder_ = recorder; }
  void SetAuditListener(AuditListener listener) override { audit_listener_ = std::move(listener); }

  void ReadConsent(std::string nhs_number, StoreCallback<std::vector<v1::ConsentChange>> done) override {
    Enqueue<std::vector<v1::ConsentChange>>(
        kAtCommit, [this, n = std::move(nhs_number)]() { return DoReadConsent(n); }, std::move(done));
  }

  void Sweep(SweepRequest req, StoreCallback<SweepResult> done) override {
    Enqueue<SweepResult>(kDurable, [this, req]() { return DoSweep(req); }, std::move(done));
  }

  void SetArrivalListener(ArrivalListener listener) override { listener_ = std::move(listener); }
  void SetConsentListener(ConsentListener listener) override { consent_listener_ = std::move(listener); }

  void Close() override {
    {
      absl::MutexLock l(&mu_);
      if (closed_) return;
      closed_ = true;
    }
    if (writer_.joinable()) writer_.join();
    {
      absl::MutexLock l(&sync_mu_);
      writer_done_ = true;
    }
    if (syncer_.joinable()) syncer_.join();
    {
      absl::MutexLock l(&read_mu_);
      read_closed_ = true;
    }
    if (reader_.joinable()) reader_.join();
  }

 private:
  static constexpr bool kDurable = true, kAtCommit = false;

  template <typename T>
  void Enqueue(bool durable, absl::AnyInvocable<absl::StatusOr<T>()> run, StoreCallback<T> done) {
    {
      absl::MutexLock l(&mu_);
      if (!closed_) {
        queue_.push_back(std::make_unique<OpImpl<T>>(durable, std::move(run), std::move(done)));
        return;
      }
    }
    std::move(done)(StoreClosedError());
  }

  // A committed (or failed) batch on its way to the syncer.
  struct Committed {
    std::vector<std::unique_ptr<Op>> ops;
    absl::Status status;
    absl::flat_hash_set<OrgCode> arrivals;
    int64_t max_seq = 0;  // highest message seq stored by this batch, 0: none
    uint64_t audit_first = 0;
    std::vector<std::string> leaves;  // audit entries written, from audit_first
    std::vector<v1::ConsentChange> consent;  // consent changes stored, in seq order
  };

  void WriterLoop() {
    std::vector<std::unique_ptr<Op>> batch;
    while (true) {
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(
            +[](SqliteStore* s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s->closed_ || !s->queue_.empty(); },
            this));
        if (queue_.empty()) return;  // closed and drained
        while (!queue_.empty() && batch.size() < kMaxOpsPerCommit) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      const uint64_t audit_first = next_audit_index_;
      absl::Status s = ExecSql("BEGIN IMMEDIATE");
      for (size_t i = 0; s.ok() && i < batch.size(); ++i) {
        const uint64_t before = next_audit_index_;
        s = batch[i]->Run();
        if (next_audit_index_ != before) batch[i]->MarkDurable();
      }
      if (s.ok()) s = ExecSql("COMMIT");
      if (!s.ok()) {
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        arrivals_.clear();
        if (next_audit_index_ != audit_first) {
          next_audit_index_ = audit_first;
          // A block's filter written by the failed batch went with it. If
          // the filter cannot be rebuilt, that block gets none and
          // searches scan it whole.
          pending_bloom_valid_ = RebuildPendingBloom().ok();
        }
        batch_leaves_.clear();
        batch_consent_.clear();
      }
      // Claims, releases and reads complete now, not behind the fdatasync.
      if (s.ok()) {
        std::vector<std::unique_ptr<Op>> durable;
        for (auto& op : batch) {
          if (op->durable()) {
            durable.push_back(std::move(op));
          } else {
            op->Finish(s);
          }
        }
        batch.swap(durable);
      }
      Committed c{std::move(batch),        s, std::move(arrivals_), batch_max_seq_, audit_first, std::move(batch_leaves_),
                  std::move(batch_consent_)};
      batch_max_seq_ = 0;
      batch_leaves_.clear();
      batch_consent_.clear();
      batch.clear();
      arrivals_.clear();
      absl::MutexLock sl(&sync_mu_);
      sync_mu_.Await(absl::Condition(
          +[](SqliteStore* st) ABSL_NO_THREAD_SAFETY_ANALYSIS { return st->unsynced_.size() < kMaxUnsyncedBatches; },
          this));
      unsynced_.push_back(std::move(c));
    }
  }

  // Makes committed batches durable with one fdatasync of the WAL for all
  // batches waiting, then completes their operations in commit order and
  // announces arrivals. Nothing is delivered or acknowledged before this.
  void SyncerLoop() {
    std::deque<Committed> ready;
    while (true) {
      {
        absl::MutexLock l(&sync_mu_);
        sync_mu_.Await(absl::Condition(
            +[](SqliteStore* st) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return st->writer_done_ || !st->unsynced_.empty();
            },
            this));
        if (unsynced_.empty()) return;  // the writer is done and all is synced
        ready.swap(unsynced_);
      }
      SyncAndComplete(ready);
      ready.clear();
    }
  }

  // One fdatasync for `ready` (if any of it needs durability), then every
  // operation completes in commit order and arrivals are announced.
  void SyncAndComplete(std::deque<Committed>& ready) {
    bool needs_sync = false;
    for (const Committed& c : ready) {
      for (const auto& op : c.ops) needs_sync |= c.status.ok() && op->durable();
    }
    absl::Status sync = needs_sync ? SyncWal() : absl::OkStatus();
    if (sync.ok()) {
      // The stored messages are on disk: claims may now return them.
      for (const Committed& c : ready) {
        if (c.status.ok() && c.max_seq > synced_seq_.load(std::memory_order_relaxed)) {
          synced_seq_.store(c.max_seq, std::memory_order_release);
        }
      }
    }
    for (Committed& c : ready) {
      const absl::Status& s = c.status.ok() ? sync : c.status;
      if (s.ok() && !c.leaves.empty()) {
        synced_audit_size_.store(c.audit_first + c.leaves.size(), std::memory_order_release);
        if (audit_listener_) audit_listener_(c.audit_first, c.leaves);
      }
      // Mailboxes hear of arrivals before senders hear of their commit, so a
      // sender's receipt implies its recipient was woken.
      if (s.ok() && listener_) {
        for (const auto& r : c.arrivals) listener_(r);
      }
      if (s.ok() && consent_listener_) {
        for (const auto& change : c.consent) consent_listener_(change);
      }
      for (auto& op : c.ops) op->Finish(s);
    }
  }

  static absl::Status StoreClosed() { return StoreClosedError(); }

  // Runs `task(false)` on the reader thread (its own read-only connection,
  // so audit reads never hold up the writer), or `task(true)` at once when
  // the store is closed.
  void Read(absl::AnyInvocable<void(bool closed)> task) {
    {
      absl::MutexLock l(&read_mu_);
      if (!read_closed_) {
        read_queue_.push_back(std::move(task));
        return;
      }
    }
    task(true);
  }

  void ReaderLoop() {
    while (true) {
      absl::AnyInvocable<void(bool)> task;
      {
        absl::MutexLock l(&read_mu_);
        read_mu_.Await(absl::Condition(
            +[](SqliteStore* st) ABSL_NO_THREAD_SAFETY_ANALYSIS { return st->read_closed_ || !st->read_queue_.empty(); },
            this));
        if (read_queue_.empty()) return;
        task = std::move(read_queue_.front());
        read_queue_.pop_front();
      }
      task(false);
    }
  }

  absl::StatusOr<std::vector<AuditRow>> DoReadAudit(const AuditRead& req) {
    const uint64_t end = synced_audit_size_.load(std::memory_order_acquire);
    const uint64_t from = std::min<uint64_t>(req.from, end);
    std::vector<AuditRow> out;
    if (req.hashes_only || req.subject.empty()) {
      if (auto s = ReadRange(req.hashes_only ? audit_read_hashes_ : audit_read_, from, end, req, out); !s.ok()) {
        return s;
      }
      return out;
    }
    // By subject: scan only the blocks whose filter may hold it, then the
    // block being filled (and any block without a filter) whole.
    blocks_read_.Bind(1, static_cast<int64_t>(from / kAuditBlockEntries))
        .Bind(2, static_cast<int64_t>(end / kAuditBlockEntries));
    ResetOnExit reset{blocks_read_};
    const SubjectBloom::Probe probe(req.subject);
    uint64_t cursor = from;
    while (out.size() < static_cast<size_t>(req.max)) {
      auto row = blocks_read_.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      const uint64_t first = static_cast<uint64_t>(blocks_read_.Int(0)) * kAuditBlockEntries;
      const uint64_t last = first + kAuditBlockEntries;
      if (cursor < first) {  // blocks without a filter
        if (auto s = ReadRange(audit_read_subject_, cursor, first, req, out); !s.ok()) return s;
      }
      cursor = std::max(cursor, first);
      if (probe.MayBeIn(blocks_read_.View(1))) {
        if (auto s = ReadRange(audit_read_subject_, cursor, last, req, out); !s.ok()) return s;
      }
      cursor = last;
    }
    if (auto s = ReadRange(audit_read_subject_, cursor, end, req, out); !s.ok()) return s;
    return out;
  }

  // Appends to `out` the entries in [first, last) that `q` selects, until
  // `out` holds req.max.
  absl::Status ReadRange(Stmt& q, uint64_t first, uint64_t last, const AuditRead& req, std::vector<AuditRow>& out) {
    if (first >= last || out.size() >= static_cast<size_t>(req.max)) return absl::OkStatus();
    q.Bind(1, static_cast<int64_t>(first)).Bind(2, static_cast<int64_t>(last));
    q.Bind(3, static_cast<int64_t>(req.max - out.size()));
    if (&q == &audit_read_subject_) q.Bind(4, req.subject);
    ResetOnExit reset{q};
    while (true) {
      auto row = q.Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      AuditRow& r = out.emplace_back();
      r.index = static_cast<uint64_t>(q.Int(0));
      r.entry = q.Text(1);
      r.leaf_hash = q.Text(2);
    }
  }

  absl::StatusOr<std::vector<v1::SignedTreeHead>> DoReadTreeHeads() {
    ResetOnExit reset{heads_read_};
    std::vector<v1::SignedTreeHead> out;
    while (true) {
      auto row = heads_read_.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      if (!out.emplace_back().ParseFromString(heads_read_.Text(0))) {
        return Error(absl::StatusCode::kDataLoss, reason::kStoreCorrupt, "a stored tree head cannot be read");
      }
    }
    return out;
  }

  // Writes one audit entry at the next index, inside the open transaction.
  absl::Status WriteAudit(const AuditRecord& r) {
    if (r.empty()) return absl::OkStatus();
    const std::string entry = IndexedAuditEntry(next_audit_index_, r.entry);
    const audit::Hash leaf = audit::LeafHash(entry);
    audit_insert_.Bind(1, static_cast<int64_t>(next_audit_index_)).Bind(2, Micros(r.at));
    if (r.subject.empty()) {
      audit_insert_.BindNull(3);
    } else {
      audit_insert_.Bind(3, r.subject);
    }
    audit_insert_.BindBlob(4, entry).BindBlob(5, audit::AsBytes(leaf));
    if (auto s = audit_insert_.Exec(); !s.ok()) return s;
    if (!r.subject.empty()) pending_bloom_.Add(r.subject);
    if (++next_audit_index_ % kAuditBlockEntries == 0) {
      if (pending_bloom_valid_) {
        block_insert_.Bind(1, static_cast<int64_t>(next_audit_index_ / kAuditBlockEntries - 1))
            .BindBlob(2, pending_bloom_.bytes());
        if (auto s = block_insert_.Exec(); !s.ok()) return s;
      }
      pending_bloom_.Clear();
      pending_bloom_valid_ = true;
    }
    batch_leaves_.emplace_back(audit::AsBytes(leaf));
    return absl::OkStatus();
  }

  // Records a lifecycle event, when a recorder is set.
  absl::Status RecordEvent(const MessageEvent& e) {
    return recorder_ == nullptr ? absl::OkStatus() : WriteAudit(recorder_->Record(e));
  }

  // Opens our own descriptor on the WAL file: fdatasync on any descriptor
  // of a file flushes that file's data. The folder is synced once so the
  // WAL's directory entry is durable too.
  absl::Status OpenWal() {
    const std::string wal = path_ + "-wal";
    wal_fd_ = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
    if (wal_fd_ < 0) {
      return Error(absl::StatusCode::kUnavailable, reason::kStoreUnavailable, "store: cannot open the WAL file");
    }
    struct stat st;
    if (::fstat(wal_fd_, &st) == 0) wal_ino_ = st.st_ino;
    const std::string dir = path_.find('/') == std::string::npos ? "." : path_.substr(0, path_.rfind('/') + 1);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    return absl::OkStatus();
  }

  absl::Status SyncWal() {
    // SQLite keeps one WAL file while a connection is open; should it ever
    // be replaced, follow it so the sync covers the live file.
    struct stat st;
    if (::stat((path_ + "-wal").c_str(), &st) == 0 && st.st_ino != wal_ino_) {
      ::close(wal_fd_);
      if (auto s = OpenWal(); !s.ok()) return s;
    }
    if (::fdatasync(wal_fd_) != 0) {
      return Error(absl::StatusCode::kUnavailable, reason::kStoreUnavailable, "store: cannot sync the WAL file");
    }
    return absl::OkStatus();
  }

  absl::Status ExecSql(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return SqlError(db_, sql);
    return absl::OkStatus();
  }

  // The filter of the block being filled, from the entries already in it
  // (at start, and after a failed batch took back the entries it added).
  absl::Status RebuildPendingBloom() {
    Stmt subjects;
    if (auto s = subjects.Prepare(db_, sqlite::kSubjectsInRange); !s.ok()) return s;
    auto bloom = sqlite::SubjectFilter(subjects, next_audit_index_ - next_audit_index_ % kAuditBlockEntries, next_audit_index_);
    if (!bloom.ok()) return bloom.status();
    pending_bloom_ = *bloom;
    return absl::OkStatus();
  }

  absl::Status PrepareAll() {
    struct {
      Stmt* s;
      const char* sql;
    } all[] = {
        {&find_idem_, "SELECT id, accepted_at, digest FROM messages WHERE sender = ?1 AND idem_key = ?2"},
        {&insert_msg_,
         "INSERT INTO messages (id, sender, recipient, workflow, purpose, idem_key, content_type, "
         "local_ref, kind, digest, state, accepted_at, expires_at, visible_at, claim_token, deliveries, "
         "first_delivered_at, subject, consent_check) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11, ?12, ?11, NULL, 0, NULL, ?15, ?16)"},
        {&insert_claimed_,
         "INSERT INTO messages (id, sender, recipient, workflow, purpose, idem_key, content_type, "
         "local_ref, kind, digest, state, accepted_at, expires_at, visible_at, claim_token, deliveries, "
         "first_delivered_at, subject, consent_check) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 2, ?11, ?12, ?13, ?14, 1, ?11, ?15, ?16)"},
        {&insert_body_, "INSERT INTO bodies (seq, body) VALUES (?1, ?2)"},
        {&claim_select_,
         "SELECT seq, id, sender, workflow, purpose, content_type, local_ref, kind, accepted_at, deliveries, "
         "subject, consent_check FROM messages WHERE recipient = ?1 AND state < 3 AND visible_at <= ?2 AND expires_at > ?2 "
         "AND seq <= ?4 ORDER BY visible_at, seq LIMIT ?3"},
        {&claim_update_,
         "UPDATE messages SET state = 2, visible_at = ?2, claim_token = ?3, deliveries = deliveries + 1, "
         "first_delivered_at = coalesce(first_delivered_at, ?4) WHERE seq = ?1"},
        {&select_body_, "SELECT body FROM bodies WHERE seq = ?1"},
        {&ack_update_, "UPDATE messages SET state = 3, acked_at = ?2, claim_token = NULL, subject = NULL WHERE seq = ?1"},
        {&ack_state_,
         "SELECT seq, state, sender, workflow, purpose, subject, kind FROM messages WHERE id = ?1 AND recipient = ?2"},
        {&release_,
         "UPDATE messages SET visible_at = ?4, claim_token = NULL "
         "WHERE id = ?1 AND recipient = ?2 AND claim_token = ?3 AND state < 3"},
        {&track_,
         "SELECT id, sender, recipient, workflow, local_ref, state, accepted_at, first_delivered_at, "
         "acked_at, expired_at, expires_at, deliveries, purged, withheld_at, withheld_reason FROM messages "
         "WHERE id = ?1 AND (sender = ?2 OR recipient = ?2)"},
        {&expire_select_,
         "SELECT seq, id, sender, recipient, workflow, local_ref, accepted_at, kind, purpose, subject FROM messages "
         "WHERE state < 3 AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2"},
        {&expire_update_,
         "UPDATE messages SET state = 4, expired_at = ?2, claim_token = NULL, purged = 1, subject = NULL "
         "WHERE seq = ?1"},
        {&delete_body_, "DELETE FROM bodies WHERE seq = ?1"},
        {&purge_select_,
         "SELECT seq FROM messages WHERE state = 3 AND purged = 0 AND acked_at <= ?1 "
         "ORDER BY acked_at LIMIT ?2"},
        {&purge_update_, "UPDATE messages SET purged = 1 WHERE seq = ?1"},
        {&withhold_select_,
         "SELECT seq, sender, workflow, purpose, subject FROM messages WHERE id = ?1 AND recipient = ?2 AND state < 3"},
        {&withhold_update_,
         "UPDATE messages SET state = 5, withheld_at = ?2, withheld_reason = ?3, claim_token = NULL, purged = 1, "
         "subject = NULL WHERE seq = ?1"},
        {&consent_insert_, "INSERT INTO consent (nhs_number, change) VALUES (?1, ?2)"},
        {&consent_person_, "SELECT seq, change FROM consent WHERE nhs_number = ?1 ORDER BY seq"},
        {&consent_all_, "SELECT seq, change FROM consent ORDER BY seq"},
        {&audit_insert_, "INSERT INTO audit (idx, at, subject, entry, leaf) VALUES (?1, ?2, ?3, ?4, ?5)"},
        {&block_insert_, "INSERT INTO audit_blocks (block, bloom) VALUES (?1, ?2)"},
        {&head_insert_, "INSERT OR IGNORE INTO tree_heads (tree_size, head) VALUES (?1, ?2)"},
    };
    for (auto& p : all) {
      if (auto s = p.s->Prepare(db_, p.sql); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Inserts one message; the caller runs inside the batch transaction.
  absl::Status Insert(const NewMessage& m) {
    if (auto s = WriteAudit(m.audit); !s.ok()) return s;
    Stmt& ins = m.claim_token != 0 ? insert_claimed_ : insert_msg_;
    ins.Bind(1, m.id.str()).Bind(2, m.sender.str()).Bind(3, m.recipient.str());
    ins.Bind(4, m.workflow).Bind(5, m.purpose);
    if (m.idempotency_key.empty()) {
      ins.BindNull(6);
    } else {
      ins.Bind(6, m.idempotency_key);
    }
    ins.Bind(7, m.content_type).Bind(8, m.local_reference).Bind(9, int64_t{m.kind});
    ins.BindBlob(10, m.digest).Bind(11, Micros(m.accepted_at)).Bind(12, Micros(m.expires_at));
    if (m.claim_token != 0) ins.Bind(13, Micros(m.visible_until)).Bind(14, static_cast<int64_t>(m.claim_token));
    if (m.subject.empty()) {
      ins.BindNull(15);
    } else {
      ins.Bind(15, m.subject);
    }
    ins.Bind(16, int64_t{m.consent_check});
    if (auto s = ins.Exec(); !s.ok()) return s;
    const int64_t seq = sqlite3_last_insert_rowid(db_);
    if (auto s = insert_body_.Bind(1, seq).BindBlob(2, m.payload).Exec(); !s.ok()) return s;
    batch_max_seq_ = seq;
    // A message stored already claimed needs no wake-up: its stream has it.
    if (m.claim_token == 0) arrivals_.insert(m.recipient);
    if (auto e = mailbox::StoredClaimedEvent(m)) return RecordEvent(*e);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<absl::StatusOr<AppendReceipt>>> DoAppend(const std::vector<NewMessage>& msgs) {
    std::vector<absl::StatusOr<AppendReceipt>> out;
    out.reserve(msgs.size());
    for (const NewMessage& m : msgs) {
      if (!m.idempotency_key.empty()) {
        find_idem_.Bind(1, m.sender.str()).Bind(2, m.idempotency_key);
        ResetOnExit reset{find_idem_};
        auto row = find_idem_.Step();
        if (!row.ok()) return row.status();
        if (*row) {
          out.push_back(mailbox::RepeatedKey(MessageId(find_idem_.Text(0)), FromMicros(find_idem_.Int(1)),
                                             find_idem_.Text(2), m));
          continue;
        }
      }
      if (auto s = Insert(m); !s.ok()) return s;
      out.push_back(AppendReceipt{m.id, m.accepted_at, false});
    }
    return out;
  }

  absl::StatusOr<std::vector<StoredDelivery>> DoClaim(const ClaimRequest& req) {
    std::vector<std::pair<int64_t, StoredDelivery>> rows;
    {
      claim_select_.Bind(1, req.recipient.str()).Bind(2, Micros(req.now)).Bind(3, int64_t{req.max});
      claim_select_.Bind(4, synced_seq_.load(std::memory_order_acquire));
      ResetOnExit reset{claim_select_};
      while (true) {
        auto row = claim_select_.Step();
        if (!row.ok()) return row.status();
        if (!*row) break;
        StoredDelivery d;
        d.id = MessageId(claim_select_.Text(1));
        d.sender = OrgCode(claim_select_.Text(2));
        d.workflow = claim_select_.Text(3);
        d.purpose = claim_select_.Text(4);
        d.content_type = claim_select_.Text(5);
        d.local_reference = claim_select_.Text(6);
        d.kind = static_cast<v1::MessageKind>(claim_select_.Int(7));
        d.accepted_at = FromMicros(claim_select_.Int(8));
        d.delivery_count = static_cast<uint32_t>(claim_select_.Int(9)) + 1;
        if (!claim_select_.IsNull(10)) d.subject = claim_select_.Text(10);
        d.consent_check = static_cast<uint32_t>(claim_select_.Int(11));
        rows.emplace_back(claim_select_.Int(0), std::move(d));
      }
    }
    std::vector<StoredDelivery> out;
    out.reserve(rows.size());
    for (auto& [seq, d] : rows) {
      claim_update_.Bind(1, seq).Bind(2, Micros(req.visible_until));
      claim_update_.Bind(3, static_cast<int64_t>(req.token)).Bind(4, Micros(req.now));
      if (auto s = claim_update_.Exec(); !s.ok()) return s;
      select_body_.Bind(1, seq);
      ResetOnExit reset{select_body_};
      auto row = select_body_.Step();
      if (!row.ok()) return row.status();
      if (*row) d.payload = select_body_.Text(0);
      if (auto e = mailbox::DeliveredEvent(d, req.recipient, req.now)) {
        if (auto s = RecordEvent(*e); !s.ok()) return s;
      }
      out.push_back(std::move(d));
    }
    return out;
  }

  absl::StatusOr<AckResult> DoAck(const OrgCode& recipient, const std::vector<MessageId>& ids,
                                  absl::Time now) {
    AckResult r;
    for (const MessageId& id : ids) {
      int64_t seq, state;
      mailbox::Row m{.id = id, .recipient = recipient};
      {
        ack_state_.Bind(1, id.str()).Bind(2, recipient.str());
        ResetOnExit reset{ack_state_};
        auto row = ack_state_.Step();
        if (!row.ok()) return row.status();
        if (!*row) {
          r.not_found.push_back(id);
          continue;
        }
        seq = ack_state_.Int(0);
        state = ack_state_.Int(1);
        m.sender = OrgCode(ack_state_.Text(2));
        m.workflow = ack_state_.Text(3);
        m.purpose = ack_state_.Text(4);
        m.subject = ack_state_.Text(5);
        m.kind = static_cast<v1::MessageKind>(ack_state_.Int(6));
      }
      const mailbox::AckOutcome outcome = mailbox::ClassifyAck(state);
      if (outcome == mailbox::AckOutcome::kAcknowledge) {
        if (auto s = ack_update_.Bind(1, seq).Bind(2, Micros(now)).Exec(); !s.ok()) return s;
        if (auto e = mailbox::AcknowledgedEvent(m, now)) {
          if (auto s = RecordEvent(*e); !s.ok()) return s;
        }
      }
      mailbox::Report(outcome, id, r);
    }
    return r;
  }

  absl::StatusOr<int> DoRelease(const OrgCode& recipient, ClaimToken token, const std::vector<MessageId>& ids,
                                absl::Time now) {
    int n = 0;
    for (const MessageId& id : ids) {
      release_.Bind(1, id.str()).Bind(2, recipient.str()).Bind(3, static_cast<int64_t>(token));
      release_.Bind(4, Micros(now));
      if (auto s = release_.Exec(); !s.ok()) return s;
      n += release_.Changes();
    }
    if (n > 0) arrivals_.insert(recipient);
    return n;
  }

  absl::StatusOr<TrackInfo> DoTrack(const OrgCode& caller, const MessageId& id) {
    track_.Bind(1, id.str()).Bind(2, caller.str());
    ResetOnExit reset{track_};
    auto row = track_.Step();
    if (!row.ok()) return row.status();
    if (!*row) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in your mailboxes");
    TrackInfo t;
    t.id = MessageId(track_.Text(0));
    t.sender = OrgCode(track_.Text(1));
    t.recipient = OrgCode(track_.Text(2));
    t.workflow = track_.Text(3);
    t.local_reference = track_.Text(4);
    auto status = mailbox::StatusOf(track_.Int(5));
    if (!status.ok()) return status.status();
    t.status = *status;
    t.accepted_at = FromMicros(track_.Int(6));
    if (!track_.IsNull(7)) t.first_delivered_at = FromMicros(track_.Int(7));
    if (!track_.IsNull(8)) t.acknowledged_at = FromMicros(track_.Int(8));
    if (!track_.IsNull(9)) t.expired_at = FromMicros(track_.Int(9));
    t.expires_at = FromMicros(track_.Int(10));
    t.delivery_count = static_cast<uint32_t>(track_.Int(11));
    t.body_purged = track_.Int(12) != 0;
    if (!track_.IsNull(13)) t.withheld_at = FromMicros(track_.Int(13));
    if (!track_.IsNull(14)) t.withheld_reason = track_.Text(14);
    return t;
  }

  absl::StatusOr<int> DoWithhold(const OrgCode& recipient, const std::vector<MessageId>& ids,
                                 const std::string& reason, absl::Time now) {
    int n = 0;
    for (const MessageId& id : ids) {
      int64_t seq;
      mailbox::Row m{.id = id, .recipient = recipient};
      {
        withhold_select_.Bind(1, id.str()).Bind(2, recipient.str());
        ResetOnExit reset{withhold_select_};
        auto row = withhold_select_.Step();
        if (!row.ok()) return row.status();
        if (!*row) continue;
        seq = withhold_select_.Int(0);
        m.sender = OrgCode(withhold_select_.Text(1));
        m.workflow = withhold_select_.Text(2);
        m.purpose = withhold_select_.Text(3);
        m.subject = withhold_select_.Text(4);
      }
      if (auto s = RecordEvent(mailbox::WithheldEvent(m, reason, now)); !s.ok()) return s;
      if (auto s = withhold_update_.Bind(1, seq).Bind(2, Micros(now)).Bind(3, reason).Exec(); !s.ok()) return s;
      if (auto s = delete_body_.Bind(1, seq).Exec(); !s.ok()) return s;
      ++n;
    }
    return n;
  }

  absl::StatusOr<v1::ConsentChange> DoAppendConsent(v1::ConsentChange c) {
    c.clear_seq();
    if (auto s = consent_insert_.Bind(1, c.nhs_number()).BindBlob(2, c.SerializeAsString()).Exec(); !s.ok()) {
      return s;
    }
    c.set_seq(sqlite3_last_insert_rowid(db_));
    batch_consent_.push_back(c);
    return c;
  }

  absl::StatusOr<std::vector<v1::ConsentChange>> DoReadConsent(const std::string& nhs_number) {
    Stmt& q = nhs_number.empty() ? consent_all_ : consent_person_;
    if (!nhs_number.empty()) q.Bind(1, nhs_number);
    ResetOnExit reset{q};
    std::vector<v1::ConsentChange> out;
    while (true) {
      auto row = q.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      v1::ConsentChange& c = out.emplace_back();
      if (!c.ParseFromString(q.Text(1))) {
        return Error(absl::StatusCode::kInternal, reason::kStoreCorrupt, "a stored consent change cannot be read");
      }
      c.set_seq(q.Int(0));
    }
    return out;
  }

  absl::StatusOr<SweepResult> DoSweep(const SweepRequest& req) {
    SweepResult r;
    std::vector<std::pair<int64_t, mailbox::Row>> expired;
    {
      expire_select_.Bind(1, Micros(req.now)).Bind(2, int64_t{req.max_items} + 1);
      ResetOnExit reset{expire_select_};
      while (true) {
        auto row = expire_select_.Step();
        if (!row.ok()) return row.status();
        if (!*row) break;
        mailbox::Row e;
        e.id = MessageId(expire_select_.Text(1));
        e.sender = OrgCode(expire_select_.Text(2));
        e.recipient = OrgCode(expire_select_.Text(3));
        e.workflow = expire_select_.Text(4);
        e.local_reference = expire_select_.Text(5);
        e.accepted_at = FromMicros(expire_select_.Int(6));
        e.kind = static_cast<v1::MessageKind>(expire_select_.Int(7));
        e.purpose = expire_select_.Text(8);
        e.subject = expire_select_.Text(9);
        expired.emplace_back(expire_select_.Int(0), std::move(e));
      }
    }
    expired.resize(mailbox::SweepBatch(static_cast<int>(expired.size()), req.max_items, r.more));
    for (const auto& [seq, e] : expired) {
      if (auto s = expire_update_.Bind(1, seq).Bind(2, Micros(req.now)).Exec(); !s.ok()) return s;
      if (auto s = delete_body_.Bind(1, seq).Exec(); !s.ok()) return s;
      ++r.expired;
      mailbox::ExpiryPlan plan = mailbox::PlanExpiry(e, req);
      if (plan.event) {
        if (auto s = RecordEvent(*plan.event); !s.ok()) return s;
      }
      if (plan.report) {
        if (auto s = Insert(*plan.report); !s.ok()) return s;
        ++r.reports;
      }
    }
    std::vector<int64_t> purge;
    {
      purge_select_.Bind(1, Micros(req.purge_acked_before)).Bind(2, int64_t{req.max_items} + 1);
      ResetOnExit reset{purge_select_};
      while (true) {
        auto row = purge_select_.Step();
        if (!row.ok()) return row.status();
        if (!*row) break;
        purge.push_back(purge_select_.Int(0));
      }
    }
    purge.resize(mailbox::SweepBatch(static_cast<int>(purge.size()), req.max_items, r.more));
    for (int64_t seq : purge) {
      if (auto s = purge_update_.Bind(1, seq).Exec(); !s.ok()) return s;
      if (auto s = delete_body_.Bind(1, seq).Exec(); !s.ok()) return s;
      ++r.purged;
    }
    return r;
  }

  sqlite3* db_ = nullptr;
  std::string path_;
  int wal_fd_ = -1;
  ino_t wal_ino_ = 0;
  std::thread writer_, syncer_;
  ArrivalListener listener_;

  absl::Mutex sync_mu_;
  std::deque<Committed> unsynced_ ABSL_GUARDED_BY(sync_mu_);
  bool writer_done_ ABSL_GUARDED_BY(sync_mu_) = false;

  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::unique_ptr<Op>> queue_ ABSL_GUARDED_BY(mu_);

  // The highest message seq known to be on disk; claims see no later one.
  std::atomic<int64_t> synced_seq_{0};

  // Writer thread only.
  absl::flat_hash_set<OrgCode> arrivals_;
  int64_t batch_max_seq_ = 0;  // highest seq stored by the batch being built
  Stmt find_idem_, insert_msg_, insert_claimed_, insert_body_, claim_select_, claim_update_, select_body_;
  Stmt ack_update_, ack_state_, release_, track_, expire_select_, expire_update_, delete_body_;
  Stmt purge_select_, purge_update_, withhold_select_, withhold_update_, consent_insert_, consent_person_, consent_all_;
  Stmt audit_insert_, head_insert_, block_insert_;
  SubjectBloom pending_bloom_;          // writer thread: the block being filled
  bool pending_bloom_valid_ = true;     // false: that block gets no filter
  const AuditRecorder* recorder_ = nullptr;
  AuditListener audit_listener_;
  uint64_t next_audit_index_ = 0;          // writer thread
  std::vector<std::string> batch_leaves_;  // writer thread: leaves of the batch being built
  std::vector<v1::ConsentChange> batch_consent_;  // writer thread: consent stored by that batch
  ConsentListener consent_listener_;
  // Entries known durable; readers see no later one.
  std::atomic<uint64_t> synced_audit_size_{0};

  // The audit reader: its own connection and thread.
  sqlite3* reader_db_ = nullptr;
  std::thread reader_;
  absl::Mutex read_mu_;
  bool read_closed_ ABSL_GUARDED_BY(read_mu_) = false;
  std::deque<absl::AnyInvocable<void(bool)>> read_queue_ ABSL_GUARDED_BY(read_mu_);
  Stmt audit_read_, audit_read_subject_, audit_read_hashes_, heads_read_, blocks_read_;
};

}  // namespace

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
    each("SELECT head FROM tree_heads ORDER BY tree_size", [&](sqlite3_stmt* st) {
      visitor.Head(ParseStoredHead(blob(st, 0)));
    });
  }
  sqlite3_close(db);
  return status;
}

}  // namespace carebroker
