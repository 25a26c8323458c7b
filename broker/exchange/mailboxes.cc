#include "broker/exchange/mailboxes.h"

namespace carebroker {

const MailboxSends* Mailboxes::Sends(const OrgCode& org) {
  absl::MutexLock l(&mu_);
  return &boxes_[org].sends;
}

void Mailboxes::Subscribe(const OrgCode& org, Subscriber* s) {
  absl::MutexLock l(&mu_);
  boxes_[org].subs.insert(s);
}

void Mailboxes::Unsubscribe(const OrgCode& org, Subscriber* s) {
  absl::MutexLock l(&mu_);
  if (auto it = boxes_.find(org); it != boxes_.end()) it->second.subs.erase(s);
}

void Mailboxes::Notify(const OrgCode& org) {
  absl::MutexLock l(&mu_);
  auto it = boxes_.find(org);
  if (it == boxes_.end()) return;
  for (Subscriber* s : it->second.subs) s->Wake();
}

void Mailboxes::NotifyAll() {
  absl::MutexLock l(&mu_);
  for (auto& [org, box] : boxes_) {
    for (Subscriber* s : box.subs) s->Wake();
  }
}

Subscriber* Mailboxes::ReserveDirect(const OrgCode& org, absl::string_view workflow, ClaimToken* token) {
  absl::MutexLock l(&mu_);
  Mailbox& box = boxes_[org];
  for (Subscriber* s : box.subs) {
    if (ClaimToken t = s->Reserve(workflow); t != 0) {
      *token = t;
      return s;
    }
  }
  box.sends.unsettled.fetch_add(1);
  for (Subscriber* s : box.subs) s->MarkBacklog();
  return nullptr;
}

void Mailboxes::EndStoredSend(const OrgCode& org) {
  absl::MutexLock l(&mu_);
  Mailbox& box = boxes_[org];
  // settled before unsettled: a stream that reads unsettled == 0 and then
  // settled sees this message counted.
  box.sends.settled.fetch_add(1);
  box.sends.unsettled.fetch_sub(1);
  // The message is claimable now (or was never stored): streams claim it,
  // or find that nothing older is left, before their direct deliveries go out.
  for (Subscriber* s : box.subs) s->Wake();
}

size_t Mailboxes::subscriber_count() const {
  absl::MutexLock l(&mu_);
  size_t n = 0;
  for (const auto& [org, box] : boxes_) n += box.subs.size();
  return n;
}

absl::flat_hash_map<OrgCode, size_t> Mailboxes::SubscriberCounts() const {
  absl::MutexLock l(&mu_);
  absl::flat_hash_map<OrgCode, size_t> out;
  for (const auto& [org, box] : boxes_) {
    if (!box.subs.empty()) out.emplace(org, box.subs.size());
  }
  return out;
}

bool MemoryBudget::TryAcquire(uint64_t n) {
  uint64_t cur = used_.load(std::memory_order_relaxed);
  while (true) {
    if (cur + n > limit_) return false;
    if (used_.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed)) return true;
  }
}

}  // namespace carebroker
