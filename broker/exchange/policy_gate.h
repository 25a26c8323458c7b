// PolicyGate: what is in force (the config's reloadable part and the
// agreements compiled into a PolicySet, as one snapshot) and the consent
// book, shared by every handler.
//
// Reload validates the whole new folder first (and that every recipient of
// a pseudonymising flow has a key); on any error the old set stays in force
// and the error is returned. Install swaps in a config and a set validated
// together (Prepare). The swap is atomic: a request holds the snapshot it
// started with, so it sees one config and set or the other, never a mix.
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
  struct InForce {
    std::shared_ptr<const Config> config;
    std::shared_ptr<const policy::PolicySet> policy;
  };

  explicit PolicyGate(std::shared_ptr<const Config> config);

  // The agreements of `config`'s agreements_dir, checked against `config`
  // (pseudonymisation keys). INVALID_ARGUMENT (AGREEMENTS_INVALID) listing
  // every error.
  static absl::StatusOr<std::shared_ptr<const policy::PolicySet>> Prepare(const Config& config);

  // Loads the agreements folder again, with the config in force. On error
  // the set in force is unchanged.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(mu_);
  // Puts a config and a set prepared for it in force together.
  void Install(std::shared_ptr<const Config> config, std::shared_ptr<const policy::PolicySet> policy)
      ABSL_LOCKS_EXCLUDED(mu_);

  std::shared_ptr<const InForce> in_force() const ABSL_LOCKS_EXCLUDED(mu_);
  std::shared_ptr<const policy::PolicySet> current() const { return in_force()->policy; }
  std::shared_ptr<const Config> config() const { return in_force()->config; }

  policy::ConsentBook& consent() { return consent_; }
  const policy::ConsentBook& consent() const { return consent_; }

  // The consent re-check for a claimed message about to go to `recipient`:
  // "" to deliver, else the reason to withhold it.
  absl::string_view CheckAtDelivery(const StoredDelivery& d, const OrgCode& recipient) const;

 private:
  policy::ConsentBook consent_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const InForce> in_force_ ABSL_GUARDED_BY(mu_);
};

struct ExchangeMetrics;

// Withholds `d` from `recipient` for `reason` (what CheckAtDelivery said):
// counted by workflow and reason, logged at debug (ids and the reason only)
// and stored (Store::Withhold, which reports it to the sender). The one path
// of every front door that delivers (a Receive stream, a MESH download).
void WithholdAtDelivery(Store& store, ExchangeMetrics& metrics, const StoredDelivery& d, const OrgCode& recipient,
                        absl::string_view reason, absl::Time now, StoreCallback<int> done);

// Every recipient of a pseudonymising flow that is registered with this
// broker (by code, or by kind) must have a key in policy.pseudonym_keys.
absl::Status CheckPseudonymKeys(const policy::PolicySet& set, const Config& config);

}  // namespace carebroker
