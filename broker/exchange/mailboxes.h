// Mailboxes: who is listening on which organisation's mailbox, and waking
// them when messages arrive (from the store's arrival listener) or on the
// housekeeping tick (for redelivery after a visibility timeout).
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "core/types.h"
#include "broker/store/store.h"

namespace carebroker {

// A Receive stream. Every method is called with the registry's lock held
// except Deliver and CancelReservation: none may block or call back into
// Mailboxes.
class Subscriber {
 public:
  virtual ~Subscriber() = default;
  // Messages may be claimable: claim if there is credit.
  virtual void Wake() = 0;
  // Direct delivery: reserves one slot for a message about to be stored
  // already claimed by this stream, if the stream is open, has credit and
  // will not let it overtake an older message (see MailboxSends), and
  // takes messages of `workflow` (a stream may ask for some workflows
  // only). Returns the claim token, or 0. A reservation keeps the
  // subscriber alive until Deliver or CancelReservation.
  virtual ClaimToken Reserve(absl::string_view workflow) = 0;
  // The reserved message is durable: send it, after any older messages a
  // claim in flight may still return.
  virtual void Deliver(StoredDelivery d) = 0;
  // The reserved message was not stored (error or duplicate).
  virtual void CancelReservation() = 0;
  // A message for this mailbox went to the store without a reservation:
  // take direct deliveries again only after a claim has drained the store,
  // so that older messages are never overtaken.
  virtual void MarkBacklog() = 0;
};

// Sends to one mailbox that went to the store without a reservation, so
// that a stream can tell whether an older message may still be on its way
// into the store (it must then claim it before taking direct deliveries
// that could overtake it). Read without the registry's lock.
struct MailboxSends {
  // Stored without a reservation and not yet durable (or failed).
  std::atomic<uint64_t> unsettled{0};
  // Of those, how many have become durable (or failed), ever. A claim that
  // started after this reached n sees every such message among the first n.
  std::atomic<uint64_t> settled{0};
};

class Mailboxes {
 public:
  Mailboxes() = default;
  Mailboxes(const Mailboxes&) = delete;
  Mailboxes& operator=(const Mailboxes&) = delete;

  // The counters of `org`'s mailbox; valid as long as this registry.
  const MailboxSends* Sends(const OrgCode& org);
  void Subscribe(const OrgCode& org, Subscriber* s);
  // After this returns, `s` is never woken again.
  void Unsubscribe(const OrgCode& org, Subscriber* s);
  void Notify(const OrgCode& org);
  void NotifyAll();
  size_t subscriber_count() const;
  // Open streams per organisation (those with at least one).
  absl::flat_hash_map<OrgCode, size_t> SubscriberCounts() const;

  // For a message to `org` about to be stored: a subscriber that reserved a
  // slot for it (and its claim token in *token), or null when none can take
  // it now. On null the caller must call EndStoredSend(org) once the
  // message is durable (or failed); its subscribers are then woken to
  // claim it. Deliveries stay oldest first, except that messages sent
  // concurrently while a stream switches between claiming and direct
  // delivery may arrive in either order (MESH makes no ordering promise
  // either).
  Subscriber* ReserveDirect(const OrgCode& org, absl::string_view workflow, ClaimToken* token);
  void EndStoredSend(const OrgCode& org);

 private:
  struct Mailbox {
    absl::flat_hash_set<Subscriber*> subs;
    MailboxSends sends;
  };
  mutable absl::Mutex mu_;
  // Entries are never removed (one per organisation that was ever sent to
  // or listened on), so MailboxSends pointers stay valid.
  absl::node_hash_map<OrgCode, Mailbox> boxes_ ABSL_GUARDED_BY(mu_);
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
