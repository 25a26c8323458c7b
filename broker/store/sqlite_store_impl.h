// The SQLite store's internals, shared by its three files (not for other
// users; they call OpenSqliteStore in sqlite_store.h):
//   sqlite_store.cc   the Store interface: open, queue operations, close
//   sqlite_commit.cc  the group-commit pipeline: the writer, the syncer
//                     that fdatasyncs the WAL, the audit reader thread
//   sqlite_ops.cc     the operations' SQL, run inside a batch transaction
// The rules the operations follow are in mailbox_rules.h; the schema in
// sqlite_schema.h; the statement wrapper in sqlite_stmt.h.
#pragma once

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <deque>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "audit/merkle.h"
#include "broker/store/mailbox_rules.h"
#include "broker/store/op_queue.h"
#include "broker/store/sqlite_schema.h"
#include "broker/store/sqlite_stmt.h"
#include "broker/store/sqlite_store.h"
#include "broker/store/subject_bloom.h"
#include "core/reasons.h"
#include "core/status.h"
#include "core/time.h"

namespace carebroker::sqlite_impl {

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

  absl::Status Open(const std::string& path);

  void Append(std::vector<NewMessage> msgs, StoreCallback<std::vector<absl::StatusOr<AppendReceipt>>> done) override;

  void Claim(ClaimRequest req, StoreCallback<std::vector<StoredDelivery>> done) override;

  void Ack(OrgCode recipient, std::vector<MessageId> ids, absl::Time now, StoreCallback<AckResult> done) override;

  void Release(OrgCode recipient, ClaimToken token, std::vector<MessageId> ids, absl::Time now,
               StoreCallback<int> done) override;

  void Hide(OrgCode recipient, MessageId id, absl::Time until, StoreCallback<bool> done) override;

  void Track(OrgCode caller, MessageId id, StoreCallback<TrackInfo> done) override;
  void TrackByKey(OrgCode sender, std::string key, absl::Time since, StoreCallback<TrackInfo> done) override;

  void Inbox(InboxQuery query, StoreCallback<InboxPage> done) override;
  void Fetch(FetchRequest req, StoreCallback<Fetched> done) override;
  void UseOnce(std::string key, absl::Time forget_at, StoreCallback<bool> done) override;
  void AppendChunk(ChunkUpload chunk, StoreCallback<ChunkStored> done) override {
    Enqueue<ChunkStored>(
        kDurable,
        [this, c = std::move(chunk)]() mutable {
          auto stored = DoAppendChunk(c);
          // Written: the chunk (up to 100 MB) is freed now, not once its
          // batch has synced, when the sender's next chunk may be arriving.
          std::string().swap(c.data);
          return stored;
        },
        std::move(done));
  }

  void ReadChunkProgress(OrgCode sender, MessageId id, StoreCallback<ChunkProgress> done) override {
    Enqueue<ChunkProgress>(
        kAtCommit, [this, s = std::move(sender), id = std::move(id)]() { return DoReadChunkProgress(s, id); },
        std::move(done));
  }

  void Withhold(OrgCode recipient, std::vector<MessageId> ids, std::string reason, absl::Time now,
                StoreCallback<int> done) override;
  void Reject(Rejection rejection, StoreCallback<v1::MessageStatus> done) override;
  void FindMessages(MessageQuery query, StoreCallback<std::vector<MessageSummary>> done) override;
  void ActOn(OperatorAction action, StoreCallback<v1::MessageStatus> done) override;
  void ReadUndelivered(MessageId id, StoreCallback<Undelivered> done) override;

  void AppendConsent(v1::ConsentChange change, AuditRecord audit, StoreCallback<v1::ConsentChange> done) override;

  void AppendAudit(std::vector<AuditRecord> records, StoreCallback<uint64_t> done) override;

  void ReadAudit(AuditRead req, StoreCallback<std::vector<AuditRow>> done) override;

  void AppendTreeHead(v1::SignedTreeHead head, StoreCallback<bool> done) override;

  void ReadTreeHeads(StoreCallback<std::vector<v1::SignedTreeHead>> done) override;

  void SetAuditRecorder(const AuditRecorder* recorder) override { recorder_ = recorder; }
  void SetAuditListener(AuditListener listener) override { audit_listener_ = std::move(listener); }

  void ReadConsent(std::string nhs_number, StoreCallback<std::vector<v1::ConsentChange>> done) override {
    Enqueue<std::vector<v1::ConsentChange>>(
        kAtCommit, [this, n = std::move(nhs_number)]() { return DoReadConsent(n); }, std::move(done));
  }

  void Sweep(SweepRequest req, StoreCallback<SweepResult> done) override;

  void SetArrivalListener(ArrivalListener listener) override { listener_ = std::move(listener); }
  void SetConsentListener(ConsentListener listener) override { consent_listener_ = std::move(listener); }
  void SetCommitObserver(CommitObserver observer) override { commit_observer_ = std::move(observer); }
  StoreGauges Gauges() const override {
    absl::MutexLock l(&mu_);
    return {1, 1, static_cast<int64_t>(queue_.size())};
  }

  void CheckWritable(StoreCallback<bool> done) override;
  void MailboxStats(StoreCallback<std::vector<MailboxStat>> done) override {
    Enqueue<std::vector<MailboxStat>>(kAtCommit, [this] { return DoMailboxStats(); }, std::move(done));
  }

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
    std::vector<std::string> leaves;         // audit entries written, from audit_first
    std::vector<v1::ConsentChange> consent;  // consent changes stored, in seq order
  };

  void WriterLoop();

  // Makes committed batches durable with one fdatasync of the WAL for all
  // batches waiting, then completes their operations in commit order and
  // announces arrivals. Nothing is delivered or acknowledged before this.
  void SyncerLoop();

  // One fdatasync for `ready` (if any of it needs durability), then every
  // operation completes in commit order and arrivals are announced.
  void SyncAndComplete(std::deque<Committed>& ready);

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

  void ReaderLoop();

  absl::StatusOr<std::vector<AuditRow>> DoReadAudit(const AuditRead& req);

  // Appends to `out` the entries in [first, last) that `q` selects, until
  // `out` holds req.max.
  absl::Status ReadRange(Stmt& q, uint64_t first, uint64_t last, const AuditRead& req, std::vector<AuditRow>& out);

  absl::StatusOr<std::vector<v1::SignedTreeHead>> DoReadTreeHeads();

  // Writes one audit entry at the next index, inside the open transaction.
  absl::Status WriteAudit(const AuditRecord& r);

  // Records a lifecycle event, when a recorder is set.
  absl::Status RecordEvent(const MessageEvent& e);

  // Opens our own descriptor on the WAL file: fdatasync on any descriptor
  // of a file flushes that file's data. The folder is synced once so the
  // WAL's directory entry is durable too.
  absl::Status OpenWal();

  absl::Status SyncWal();

  absl::Status ExecSql(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return SqlError(db_, sql);
    return absl::OkStatus();
  }

  // The filter of the block being filled, from the entries already in it
  // (at start, and after a failed batch took back the entries it added).
  absl::Status RebuildPendingBloom();

  absl::Status PrepareAll();

  // Inserts one message; the caller runs inside the batch transaction.
  // Stores one message; its seq.
  absl::StatusOr<int64_t> Insert(const NewMessage& m);

  absl::StatusOr<std::vector<absl::StatusOr<AppendReceipt>>> DoAppend(const std::vector<NewMessage>& msgs);

  // A delivery from the columns a claim and a fetch both select first:
  // seq, id, sender, workflow, purpose, content_type, local_ref, kind,
  // accepted_at, deliveries, subject, consent_check.
  static StoredDelivery DeliveryColumns(Stmt& q);
  // Reads the body of a message being delivered and records its DELIVERED event.
  absl::Status HandOver(StoredDelivery& d, const OrgCode& recipient, absl::Time now);
  // Stores chunk `n` of message `seq` in pieces, replacing any earlier try.
  absl::Status WriteChunk(int64_t seq, uint32_t n, absl::string_view data);
  // Hands each piece of chunk `n` to `piece`, in order.
  absl::Status ReadChunk(int64_t seq, uint32_t n, const std::function<void(absl::string_view)>& piece);
  // Reads a message's payload (chunk `chunk` of a chunked one) into `d`.
  absl::Status ReadBody(StoredDelivery& d, uint32_t chunk);
  // Deletes a message's body (or its chunks).
  absl::Status DeleteBody(int64_t seq);
  absl::StatusOr<ChunkStored> DoAppendChunk(const ChunkUpload& c);
  absl::StatusOr<ChunkProgress> DoReadChunkProgress(const OrgCode& sender, const MessageId& id);

  absl::StatusOr<std::vector<StoredDelivery>> DoClaim(const ClaimRequest& req);

  absl::StatusOr<AckResult> DoAck(const OrgCode& recipient, const std::vector<MessageId>& ids, absl::Time now);

  absl::StatusOr<int> DoRelease(const OrgCode& recipient, ClaimToken token, const std::vector<MessageId>& ids,
                                absl::Time now);

  absl::StatusOr<TrackInfo> DoTrack(const OrgCode& caller, const MessageId& id);
  absl::StatusOr<InboxPage> DoInbox(const InboxQuery& q);
  absl::StatusOr<Fetched> DoFetch(const FetchRequest& req);
  absl::StatusOr<bool> DoUseOnce(const std::string& key, absl::Time forget_at);
  absl::StatusOr<std::vector<MailboxStat>> DoMailboxStats();

  absl::StatusOr<int> DoWithhold(const OrgCode& recipient, const std::vector<MessageId>& ids, const std::string& reason,
                                 absl::Time now);
  absl::StatusOr<v1::MessageStatus> DoReject(const Rejection& r);
  absl::StatusOr<std::vector<MessageSummary>> DoFindMessages(const MessageQuery& q);
  absl::StatusOr<v1::MessageStatus> DoActOn(const OperatorAction& a);
  // A message an operator acts on, by id (action_select_).
  absl::StatusOr<mailbox::Original> SelectOriginal(const MessageId& id);
  absl::StatusOr<Undelivered> DoReadUndelivered(const MessageId& id);
  // The rest of storing `m` (at `seq`), a redirect or resend of `o`: the
  // original's body deleted, both linked, the OPERATOR_ACTION entry.
  absl::Status LinkReplacement(const mailbox::Original& o, const NewMessage& m, int64_t seq);
  // The last chunk of message `seq` is stored: its SEND_ACCEPTED entry
  // (`pending`) written with the whole payload's digest, or `patch` merged
  // in; claimable now.
  absl::Status CompleteUpload(int64_t seq, int64_t chunks, const std::string& pending, const std::string& patch,
                              const OrgCode& recipient, absl::Time now);
  // Holds message `seq` (`m`, expiring at `expires_at`): its state, its
  // HELD event and its sender's report.
  absl::Status HoldRow(int64_t seq, const mailbox::Row& m, absl::Time expires_at, const mailbox::Hold& h,
                       absl::Time now);

  absl::StatusOr<v1::ConsentChange> DoAppendConsent(v1::ConsentChange c);

  absl::StatusOr<std::vector<v1::ConsentChange>> DoReadConsent(const std::string& nhs_number);

  absl::StatusOr<SweepResult> DoSweep(const SweepRequest& req);
  // The seqs `q` selects (?1 a time, ?2 the bound), at most `max_items`;
  // `more` set when there were more (mailbox::SweepBatch).
  absl::StatusOr<std::vector<int64_t>> SweepSeqs(Stmt& q, absl::Time at, int max_items, bool& more);

  sqlite3* db_ = nullptr;
  std::string path_;
  int wal_fd_ = -1;
  ino_t wal_ino_ = 0;
  std::thread writer_, syncer_;
  ArrivalListener listener_;

  absl::Mutex sync_mu_;
  std::deque<Committed> unsynced_ ABSL_GUARDED_BY(sync_mu_);
  bool writer_done_ ABSL_GUARDED_BY(sync_mu_) = false;

  mutable absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::unique_ptr<Op>> queue_ ABSL_GUARDED_BY(mu_);

  // The highest message seq known to be on disk; claims see no later one.
  std::atomic<int64_t> synced_seq_{0};

  // Writer thread only.
  absl::flat_hash_set<OrgCode> arrivals_;
  int64_t batch_max_seq_ = 0;  // highest seq stored by the batch being built
  Stmt find_idem_, insert_msg_, insert_claimed_, insert_body_, claim_select_, claim_update_, select_body_;
  Stmt ack_update_, ack_state_, release_, hide_, track_, mailbox_stats_, expire_select_, expire_update_, delete_body_;
  Stmt forget_key_, hold_update_, reject_select_, purge_held_select_, find_messages_, action_select_, release_update_, cancel_update_;
  Stmt purge_expired_select_, replaced_update_, replaces_update_, copy_chunks_;
  Stmt purge_select_, purge_update_, withhold_select_, withhold_update_, consent_insert_, consent_person_, consent_all_;
  Stmt audit_insert_, head_insert_, block_insert_;
  Stmt inbox_page_, inbox_count_, fetch_select_, fetch_update_, once_insert_, once_forget_;
  Stmt insert_chunk_, replace_chunk_, select_chunk_, select_piece_, chunk_size_, delete_chunks_, chunk_state_, progress_update_, chunk_complete_, abandon_select_, abandon_update_;
  SubjectBloom pending_bloom_;       // writer thread: the block being filled
  bool pending_bloom_valid_ = true;  // false: that block gets no filter
  const AuditRecorder* recorder_ = nullptr;
  AuditListener audit_listener_;
  uint64_t next_audit_index_ = 0;                 // writer thread
  std::vector<std::string> batch_leaves_;         // writer thread: leaves of the batch being built
  std::vector<v1::ConsentChange> batch_consent_;  // writer thread: consent stored by that batch
  ConsentListener consent_listener_;
  CommitObserver commit_observer_;
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

}  // namespace carebroker::sqlite_impl
