#include "policy/consent.h"

#include "core/ids.h"

#include <algorithm>

#include "core/status.h"
#include "core/reasons.h"

namespace carebroker::policy {
namespace {

bool Matches(const v1::Directive& d, v1::Purpose purpose, const OrgCode& recipient, v1::OrganisationKind kind) {
  if (d.purpose() != purpose) return false;
  switch (d.scope().target_case()) {
    case v1::Scope::TARGET_NOT_SET:
      return true;
    case v1::Scope::kOds:
      return d.scope().ods() == recipient.str();
    case v1::Scope::kKind:
      return d.scope().kind() == kind;
  }
  return false;
}

}  // namespace

absl::string_view ConsentVerdict(v1::ConsentModel model, bool opt_out_applies, v1::Purpose purpose,
                                 const OrgCode& recipient, v1::OrganisationKind recipient_kind,
                                 const PersonConsent* person) {
  if (person == nullptr) return model == v1::CONSENT_MODEL_EXPLICIT ? reason::kConsentRequired : "";
  if (opt_out_applies && person->national_opt_out) return reason::kNationalOptOut;
  if (model == v1::CONSENT_MODEL_NOT_APPLICABLE) return "";
  bool consent = false;
  for (const auto& d : person->standing) {
    if (!Matches(d, purpose, recipient, recipient_kind)) continue;
    if (d.kind() == v1::DIRECTIVE_KIND_DISSENT) return reason::kConsentDissent;
    consent = true;
  }
  if (model == v1::CONSENT_MODEL_EXPLICIT && !consent) return reason::kConsentRequired;
  return "";
}

uint32_t EncodeConsentCheck(v1::ConsentModel model, bool opt_out_applies, bool overridden) {
  return static_cast<uint32_t>(model & 3) | (opt_out_applies ? 4u : 0u) | (overridden ? 8u : 0u);
}

absl::string_view RecheckConsent(uint32_t check, v1::Purpose purpose, const OrgCode& recipient,
                                 v1::OrganisationKind recipient_kind, const PersonConsent* person) {
  if (check == 0) return "";
  const auto model = static_cast<v1::ConsentModel>(check & 3);
  absl::string_view verdict = ConsentVerdict(model, (check & 4) != 0, purpose, recipient, recipient_kind, person);
  const bool overridden = (check & 8) != 0;
  if (overridden && (verdict == reason::kConsentDissent || verdict == reason::kConsentRequired)) return "";
  return verdict;
}

absl::Status ConsentBook::Apply(const v1::ConsentChange& change) {
  absl::MutexLock l(&mu_);
  if (change.seq() != 0) {
    if (change.seq() <= applied_seq_) return absl::OkStatus();  // heard before
    applied_seq_ = change.seq();
  }
  const std::string key = PersonKey(change.nhs_number(), change.local_identifier());
  switch (change.change_case()) {
    case v1::ConsentChange::kRecorded:
      people_[key].standing.push_back(change.recorded());
      return absl::OkStatus();
    case v1::ConsentChange::kWithdrawn: {
      auto it = people_.find(key);
      if (it != people_.end()) {
        auto& standing = it->second.standing;
        auto d = std::find_if(standing.begin(), standing.end(),
                              [&](const v1::Directive& x) { return x.id() == change.withdrawn(); });
        if (d != standing.end()) {
          standing.erase(d);
          if (standing.empty() && !it->second.national_opt_out) people_.erase(it);
          return absl::OkStatus();
        }
      }
      return Error(absl::StatusCode::kFailedPrecondition, reason::kDirectiveNotStanding,
                   "no standing directive with that id for this person");
    }
    case v1::ConsentChange::kNationalOptOut:
      if (change.national_opt_out()) {
        people_[key].national_opt_out = true;
      } else if (auto it = people_.find(key); it != people_.end()) {
        it->second.national_opt_out = false;
        if (it->second.standing.empty()) people_.erase(it);
      }
      return absl::OkStatus();
    case v1::ConsentChange::CHANGE_NOT_SET:
      break;
  }
  return InvalidArgument(reason::kConsentChangeInvalid, "a consent change must record, withdraw or set the opt-out");
}

std::optional<PersonConsent> ConsentBook::Find(absl::string_view nhs_number) const {
  absl::ReaderMutexLock l(&mu_);
  auto it = people_.find(nhs_number);
  if (it == people_.end()) return std::nullopt;
  return it->second;
}

std::optional<PersonConsent> ConsentBook::FindAll(const std::vector<std::string>& keys) const {
  if (keys.size() == 1) return Find(keys[0]);
  absl::ReaderMutexLock l(&mu_);
  std::optional<PersonConsent> out;
  for (const auto& k : keys) {
    auto it = people_.find(k);
    if (it == people_.end()) continue;
    if (!out) out.emplace();
    out->national_opt_out = out->national_opt_out || it->second.national_opt_out;
    out->standing.insert(out->standing.end(), it->second.standing.begin(), it->second.standing.end());
  }
  return out;
}

std::vector<std::string> PersonKeys(absl::string_view nhs_number,
                                    const google::protobuf::RepeatedPtrField<v1::LocalIdentifier>& ids) {
  constexpr int kMaxLocal = 16;
  std::vector<std::string> keys;
  if (!nhs_number.empty()) keys.emplace_back(nhs_number);
  int local = 0;
  for (const auto& id : ids) {
    if (local == kMaxLocal) break;
    if (IsLocalIdentifierShape(id)) {
      keys.push_back(PersonKey("", id));
      ++local;
    }
  }
  return keys;
}

std::optional<v1::Directive> ConsentBook::FindDirective(absl::string_view nhs_number, absl::string_view id) const {
  absl::MutexLock l(&mu_);
  auto it = people_.find(nhs_number);
  if (it == people_.end()) return std::nullopt;
  for (const auto& d : it->second.standing) {
    if (d.id() == id) return d;
  }
  return std::nullopt;
}

size_t ConsentBook::people() const {
  absl::MutexLock l(&mu_);
  return people_.size();
}

}  // namespace carebroker::policy
