#include "broker/server/override_reviews.h"

#include "broker/store/store_sync.h"
#include "carebroker/v1/audit.pb.h"
#include "core/time.h"

namespace carebroker {

void OverrideReviews::CatchUp(absl::Time now, absl::Duration within, uint64_t max_entries) {
  constexpr int kChunk = 1000;
  v1::AuditEntry e;
  for (uint64_t read = 0; read < max_entries;) {
    auto rows = AwaitStoreFor<std::vector<AuditRow>>(absl::Seconds(10), [&](auto cb) {
      store_.ReadAudit(AuditRead{next_, kChunk, "", false}, std::move(cb));
    });
    if (!rows.ok()) break;
    for (const AuditRow& r : *rows) {
      next_ = r.index + 1;
      if (!e.ParseFromString(r.entry)) continue;
      if (e.event() == v1::AUDIT_EVENT_SEND_ACCEPTED && e.safeguarding_override()) {
        pending_[r.index] = FromTimestamp(e.at());
      } else if (e.event() == v1::AUDIT_EVENT_OVERRIDE_REVIEWED) {
        pending_.erase(e.override_index());
      }
    }
    read += rows->size();
    if (static_cast<int>(rows->size()) < kChunk) break;
  }
  Counts c;
  c.pending = pending_.size();
  for (const auto& [index, at] : pending_) c.overdue += at + within <= now ? 1 : 0;
  absl::MutexLock l(&mu_);
  counts_ = c;
}

OverrideReviews::Counts OverrideReviews::counts() const {
  absl::MutexLock l(&mu_);
  return counts_;
}

}  // namespace carebroker
