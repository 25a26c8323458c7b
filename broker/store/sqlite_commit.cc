// The SQLite store's group-commit pipeline (sqlite_store_impl.h).
#include "broker/store/sqlite_store_impl.h"

namespace carebroker::sqlite_impl {

void SqliteStore::WriterLoop() {
  std::vector<std::unique_ptr<Op>> batch;
  while (true) {
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](SqliteStore* s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s->closed_ || !s->queue_.empty(); }, this));
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
    Committed c{std::move(batch),         s,           std::move(arrivals_),
                batch_max_seq_,           audit_first, std::move(batch_leaves_),
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

void SqliteStore::SyncerLoop() {
  std::deque<Committed> ready;
  while (true) {
    {
      absl::MutexLock l(&sync_mu_);
      sync_mu_.Await(absl::Condition(
          +[](SqliteStore* st) ABSL_NO_THREAD_SAFETY_ANALYSIS { return st->writer_done_ || !st->unsynced_.empty(); },
          this));
      if (unsynced_.empty()) return;  // the writer is done and all is synced
      ready.swap(unsynced_);
    }
    SyncAndComplete(ready);
    ready.clear();
  }
}

void SqliteStore::SyncAndComplete(std::deque<Committed>& ready) {
  bool needs_sync = false;
  for (const Committed& c : ready) {
    for (const auto& op : c.ops) needs_sync |= c.status.ok() && op->durable();
  }
  absl::Status sync = absl::OkStatus();
  if (needs_sync) {
    const absl::Time start = absl::Now();
    sync = SyncWal();
    if (sync.ok() && commit_observer_) commit_observer_(absl::Now() - start);
  }
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

void SqliteStore::ReaderLoop() {
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

absl::Status SqliteStore::OpenWal() {
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

absl::Status SqliteStore::SyncWal() {
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

}  // namespace carebroker::sqlite_impl
