// The safeguarding overrides that wait for an IG officer's review, read
// from the audit log (shared by every replica): each SEND_ACCEPTED entry
// that set aside recorded dissent is pending until an OVERRIDE_REVIEWED
// entry names it, and overdue once governance.review_days have passed.
// The broker's housekeeping reads the entries appended since its last
// look, every second (the whole log the first time, at most 200,000
// entries a call), so the counts follow every replica's overrides and
// reviews. Each entry is read once more this way; only the few that may be
// an override or a review are parsed.
#pragma once

#include <cstdint>
#include <map>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "broker/store/store.h"

namespace carebroker {

class OverrideReviews {
 public:
  explicit OverrideReviews(Store& store) : store_(store) {}

  // Reads up to `max_entries` entries appended since the last call and
  // counts, at `now`, the overrides pending and those older than `within`.
  // Blocks (the housekeeping thread). A store that does not answer leaves
  // the counts as they were, to try again.
  void CatchUp(absl::Time now, absl::Duration within, uint64_t max_entries = 200000) ABSL_LOCKS_EXCLUDED(mu_);

  struct Counts {
    uint64_t pending = 0;
    uint64_t overdue = 0;
  };
  Counts counts() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  Store& store_;
  uint64_t next_ = 0;                       // the next entry to read (housekeeping only)
  std::map<uint64_t, absl::Time> pending_;  // override entry -> when it was made (housekeeping only)
  mutable absl::Mutex mu_;
  Counts counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace carebroker
