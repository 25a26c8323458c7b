#include "broker/server/override_reviews.h"

#include "absl/strings/match.h"
#include "audit/query.h"

#include "broker/store/store_sync.h"
#include "carebroker/v1/audit.pb.h"
#include "core/time.h"

namespace carebroker {

namespace {

// Whether an entry's bytes may be an override or a review, before parsing
// it: safeguarding_override (field 20) true is the bytes A0 01 01, and the
// event OVERRIDE_REVIEWED (field 3, 18) is 18 12. Most entries hold
// neither and are skipped unparsed; a false match is parsed and dropped.
bool MayMatter(absl::string_view entry) {
  return absl::StrContains(entry, absl::string_view("\xA0\x01\x01", 3)) ||
         absl::StrContains(entry, absl::string_view("\x18\x12", 2));
}

}  // namespace

void OverrideReviews::CatchUp(absl::Time now, absl::Duration within, uint64_t max_entries) {
  constexpr int kChunk = 1000;
  v1::AuditEntry e;
  for (uint64_t read = 0; read < max_entries;) {
    auto rows = AwaitStoreFor<std::vector<AuditRow>>(absl::Seconds(2), [&](auto cb) {
      store_.ReadAudit(AuditRead{next_, kChunk, "", false}, std::move(cb));
    });
    if (!rows.ok()) break;
    for (const AuditRow& r : *rows) {
      next_ = r.index + 1;
      if (!MayMatter(r.entry) || !e.ParseFromString(r.entry)) continue;
      if (audit::IsOverride(e)) {
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
