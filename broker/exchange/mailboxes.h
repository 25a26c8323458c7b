// Mailboxes: who is listening on which organisation's mailbox, and waking
// them when messages arrive (from the store's arrival listener) or on the
// housekeeping tick (for redelivery after a visibility timeout).
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "broker/core/types.h"

namespace carebroker {

// A Receive stream. Wake() is called with the registry's lock held: it must
// not block and must not call back into Mailboxes.
class Subscriber {
 public:
  virtual ~Subscriber() = default;
  virtual void Wake() = 0;
};

class Mailboxes {
 public:
  Mailboxes() = default;
  Mailboxes(const Mailboxes&) = delete;
  Mailboxes& operator=(const Mailboxes&) = delete;

  void Subscribe(const OrgCode& org, Subscriber* s);
  // After this returns, `s` is never woken again.
  void Unsubscribe(const OrgCode& org, Subscriber* s);
  void Notify(const OrgCode& org);
  void NotifyAll();
  size_t subscriber_count() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<OrgCode, absl::flat_hash_set<Subscriber*>> subs_ ABSL_GUARDED_BY(mu_);
};

// Bytes of payload held in memory across the broker. Admission takes bytes
// before work starts; when the budget is spent, new work is refused or
// deferred, never buffered without bound.
class MemoryBudget {
 public:
  explicit MemoryBudget(uint64_t limit) : limit_(limit) {}
  // Takes `n` bytes if they fit; false otherwise.
  bool TryAcquire(uint64_t n);
  // Takes `n` bytes even past the limit (work already done, e.g. a claim).
  void ForceAcquire(uint64_t n) { used_.fetch_add(n, std::memory_order_relaxed); }
  void Release(uint64_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }
  bool Exhausted() const { return used_.load(std::memory_order_relaxed) >= limit_; }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

}  // namespace carebroker
