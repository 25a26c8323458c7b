#include "broker/exchange/mailboxes.h"

namespace carebroker {

void Mailboxes::Subscribe(const OrgCode& org, Subscriber* s) {
  absl::MutexLock l(&mu_);
  subs_[org].insert(s);
}

void Mailboxes::Unsubscribe(const OrgCode& org, Subscriber* s) {
  absl::MutexLock l(&mu_);
  auto it = subs_.find(org);
  if (it == subs_.end()) return;
  it->second.erase(s);
  if (it->second.empty()) subs_.erase(it);
}

void Mailboxes::Notify(const OrgCode& org) {
  absl::MutexLock l(&mu_);
  auto it = subs_.find(org);
  if (it == subs_.end()) return;
  for (Subscriber* s : it->second) s->Wake();
}

void Mailboxes::NotifyAll() {
  absl::MutexLock l(&mu_);
  for (auto& [org, set] : subs_) {
    for (Subscriber* s : set) s->Wake();
  }
}

Subscriber* Mailboxes::ReserveDirect(const OrgCode& org, ClaimToken* token) {
  absl::MutexLock l(&mu_);
  auto it = subs_.find(org);
  if (it != subs_.end()) {
    for (Subscriber* s : it->second) {
      if (ClaimToken t = s->Reserve(); t != 0) {
        *token = t;
        return s;
      }
    }
  }
  if (it != subs_.end()) {
    for (Subscriber* s : it->second) s->MarkBacklog();
  }
  return nullptr;
}

void Mailboxes::EndStoredSend(const OrgCode& org) {
  absl::MutexLock l(&mu_);
  // The message is now claimable; streams must claim it before taking
  // direct deliveries again.
  if (auto s = subs_.find(org); s != subs_.end()) {
    for (Subscriber* sub : s->second) sub->MarkBacklog();
  }
}

size_t Mailboxes::subscriber_count() const {
  absl::MutexLock l(&mu_);
  size_t n = 0;
  for (const auto& [org, set] : subs_) n += set.size();
  return n;
}

bool MemoryBudget::TryAcquire(uint64_t n) {
  uint64_t cur = used_.load(std::memory_order_relaxed);
  while (true) {
    if (cur + n > limit_) return false;
    if (used_.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed)) return true;
  }
}

}  // namespace carebroker
