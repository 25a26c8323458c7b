// PolicyGate: the policy in force (agreements compiled into a PolicySet)
// and the consent book, shared by every handler.
//
// Reload validates the whole new folder first (and that every recipient of
// a pseudonymising flow has a key); on any error the old set stays in force
// and the error is returned. On success the pointer swap is atomic: a
// request holds the snapshot it started with, so it sees one set or the
// other, never a mix.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "broker/config/config.h"
#include "broker/store/store.h"
#include "policy/consent.h"
#include "policy/engine.h"

namespace carebroker {

class PolicyGate {
 public:
  explicit PolicyGate(std::shared_ptr<const Config> config) : config_(std::move(config)) {}

  // Loads config.policy.agreements_dir. INVALID_ARGUMENT (AGREEMENTS_INVALID)
  // listing every error; the set in force is unchanged then.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(reload_mu_, mu_);

  std::shared_ptr<const policy::PolicySet> current() const ABSL_LOCKS_EXCLUDED(mu_);

  policy::ConsentBook& consent() { return consent_; }
  const policy::ConsentBook& consent() const { return consent_; }

  // The consent re-check for a claimed message about to go to `recipient`:
  // "" to deliver, else the reason to withhold it.
  absl::string_view CheckAtDelivery(const StoredDelivery& d, const OrgCode& recipient) const;

 private:
  const std::shared_ptr<const Config> config_;
  policy::ConsentBook consent_;
  absl::Mutex reload_mu_;  // one reload at a time
  mutable absl::Mutex mu_;
  std::shared_ptr<const policy::PolicySet> current_ ABSL_GUARDED_BY(mu_);
};

// Every recipient of a pseudonymising flow that is registered with this
// broker (by code, or by kind) must have a key in policy.pseudonym_keys.
absl::Status CheckPseudonymKeys(const policy::PolicySet& set, const Config& config);

}  // namespace carebroker
