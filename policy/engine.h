// The policy engine: agreements compiled into an index, and the decision
// for one send. Deny by default: a send is allowed only by an in-force flow
// that names its sender, recipient, workflow and purpose, and only when the
// person's recorded wishes permit it under that flow's consent model.
//
// Decisions cost the same with 5 or 500 agreements: flows are indexed by
// (sender, recipient, workflow, purpose), where sender and recipient are an
// ODS code or an organisation kind, so a decision is four hash lookups plus
// the few flows they return.
//
// A PolicySet is immutable; reload builds a new one and swaps the pointer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/types.h"
#include "core/reasons.h"
#include "carebroker/v1/config.pb.h"
#include "carebroker/v1/policy.pb.h"
#include "policy/agreements.h"
#include "policy/consent.h"
#include "policy/minimise.h"

namespace carebroker::policy {

struct Party {
  OrgCode ods;
  v1::OrganisationKind kind = v1::ORGANISATION_KIND_UNSPECIFIED;
};

struct DecisionInput {
  Party sender;
  Party recipient;
  std::string workflow;
  v1::Purpose purpose = v1::PURPOSE_UNSPECIFIED;
  bool opaque = false;    // the payload is not a canonical care record
  bool document = false;  // ... but a document about the person declared (`consent`'s)
  std::string justification;
  const PersonConsent* consent = nullptr;  // null: nothing recorded
  absl::Time now;
};

struct CompiledFlow {
  const LoadedAgreement* agreement = nullptr;
  const v1::Flow* flow = nullptr;
  Minimiser minimiser;
  int order = 0;  // agreement id order, then flow order: ties break the same way every time

  // Does the national data opt-out apply to a send for `p` under this flow?
  // As the agreement states (applies, or exempt); unstated, it applies to
  // every purpose beyond direct care and safeguarding.
  bool OptOutApplies(v1::Purpose p) const;
  // Which rule decided that, and why, for `policy explain` (no patient data).
  std::string OptOutRule(v1::Purpose p) const;
};

struct Decision {
  bool allowed = false;
  // Denied: why (the first is the main reason). Allowed: empty, or
  // SAFEGUARDING_OVERRIDE when dissent was set aside.
  std::vector<std::string> reasons;
  // The flow that allowed the send, or the flow whose rule denied it; null
  // for NO_AGREEMENT.
  const CompiledFlow* flow = nullptr;
  bool overridden = false;
  bool opt_out_applies = false;
  // One line per flow considered, for `policy explain` (no patient data).
  std::vector<std::string> trace;
};

class PolicySet {
 public:
  static absl::StatusOr<std::shared_ptr<const PolicySet>> Load(const std::string& dir);
  static std::shared_ptr<const PolicySet> Build(AgreementSet agreements);

  Decision Decide(const DecisionInput& in) const;

  const AgreementSet& agreements() const { return set_; }
  const std::vector<CompiledFlow>& flows() const { return flows_; }

 private:
  PolicySet() = default;
  AgreementSet set_;
  std::vector<CompiledFlow> flows_;
  absl::flat_hash_map<std::string, std::vector<int>> index_;  // key -> flows_, in order
};

}  // namespace carebroker::policy
