// Consent: a person's standing consent and dissent directives and national
// data opt-out flag, folded from the stored history of changes, and the
// rule that decides whether they permit one flow.
//
// The ConsentBook holds standing state in memory (people with no recorded
// wishes cost nothing), rebuilt from the store's history at start and
// updated after each change is durable. Lookups are by NHS number, or by
// an organisation's local identifier for a person not yet traced.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "core/types.h"
#include "core/reasons.h"
#include "carebroker/v1/config.pb.h"
#include "carebroker/v1/consent.pb.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker::policy {

struct PersonConsent {
  bool national_opt_out = false;
  std::vector<v1::Directive> standing;  // in the order recorded
};

// Whether `person` (null: nothing recorded) permits sharing for `purpose`
// with the recipient under `model`: "" when it does, else a reason code.
//   - an applicable national opt-out denies (NATIONAL_OPT_OUT);
//   - not-applicable: nothing else is consulted;
//   - a standing dissent for the purpose, unscoped or scoped to the
//     recipient's code or kind, denies (CONSENT_DISSENT), even beside a
//     consent: the more protective wish wins until one is withdrawn;
//   - explicit: a matching standing consent is required (CONSENT_REQUIRED).
absl::string_view ConsentVerdict(v1::ConsentModel model, bool opt_out_applies, v1::Purpose purpose,
                                 const OrgCode& recipient, v1::OrganisationKind recipient_kind,
                                 const PersonConsent* person);

// The consent rule a message was admitted under, packed for the store so
// the rule can be applied again at delivery. 0 means "no check" (no
// person, or an opaque payload).
uint32_t EncodeConsentCheck(v1::ConsentModel model, bool opt_out_applies, bool overridden);

// The delivery-time re-check: ConsentVerdict under the packed rule, except
// that a justified safeguarding override still stands against dissent.
// "" to deliver, else the reason to withhold.
absl::string_view RecheckConsent(uint32_t check, v1::Purpose purpose, const OrgCode& recipient,
                                 v1::OrganisationKind recipient_kind, const PersonConsent* person);

// The keys a record's person is known by: the NHS number (if any), then
// each local identifier that can name a person (IsLocalIdentifierShape;
// at most 16), as PersonKey makes them.
std::vector<std::string> PersonKeys(absl::string_view nhs_number,
                                    const google::protobuf::RepeatedPtrField<v1::LocalIdentifier>& ids);

class ConsentBook {
 public:
  // Applies one stored change. Changes must come in the order stored; one
  // whose seq is not after the last applied was heard before and is
  // skipped (seq 0: not stored, always applied). A withdrawal of an unknown
  // or already-withdrawn directive is FAILED_PRECONDITION and changes nothing.
  absl::Status Apply(const v1::ConsentChange& change) ABSL_LOCKS_EXCLUDED(mu_);

  // A copy of the person's standing state under `key` (PersonKey: an NHS
  // number, or a local identifier's "ASSIGNER|VALUE"); nullopt when nothing
  // stands.
  std::optional<PersonConsent> Find(absl::string_view key) const ABSL_LOCKS_EXCLUDED(mu_);

  // What stands for the person a record is about, under every key it gives
  // (PersonKeys): the opt-out and directives under the NHS number, and the
  // directives recorded under any of its local identifiers; nullopt when
  // nothing stands under any.
  std::optional<PersonConsent> FindAll(const std::vector<std::string>& keys) const ABSL_LOCKS_EXCLUDED(mu_);

  // The standing directive with this id for this person, if any.
  std::optional<v1::Directive> FindDirective(absl::string_view nhs_number, absl::string_view id) const
      ABSL_LOCKS_EXCLUDED(mu_);

  size_t people() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, PersonConsent> people_ ABSL_GUARDED_BY(mu_);
  int64_t applied_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace carebroker::policy
