#include "broker/exchange/policy_gate.h"

#include "absl/strings/str_split.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "broker/exchange/exchange_metrics.h"
#include "core/log.h"
#include "core/status.h"
#include "core/reasons.h"
#include "policy/agreements.h"

namespace carebroker {

absl::Status CheckPseudonymKeys(const policy::PolicySet& set, const Config& config) {
  std::vector<std::string> errors;
  for (const auto& f : set.flows()) {
    if (!f.minimiser.needs_key()) continue;
    auto missing = [&](const std::string& ods) {
      errors.push_back(absl::StrCat(f.agreement->file, ": flow ", f.flow->name(), " pseudonymises for ", ods,
                                    ", which has no key in policy.pseudonym_keys"));
    };
    for (const auto& ods : f.flow->recipients().ods()) {
      if (config.FindOrganisation(OrgCode(ods)) != nullptr && config.PseudonymKey(OrgCode(ods)) == nullptr) {
        missing(ods);
      }
    }
    for (int kind : f.flow->recipients().kinds()) {
      for (const auto& o : config.proto().organisations()) {
        if (o.kind() == kind && config.PseudonymKey(OrgCode(o.ods())) == nullptr) missing(o.ods());
      }
    }
  }
  if (errors.empty()) return absl::OkStatus();
  return InvalidArgument(reason::kAgreementsInvalid, absl::StrJoin(errors, "\n"));
}

PolicyGate::PolicyGate(std::shared_ptr<const Config> config)
    : in_force_(std::make_shared<const InForce>(InForce{std::move(config), nullptr})) {}

absl::StatusOr<std::shared_ptr<const policy::PolicySet>> PolicyGate::Prepare(const Config& config) {
  auto set = policy::PolicySet::Load(config.agreements_dir());
  if (!set.ok()) return set.status();
  if (auto s = CheckPseudonymKeys(**set, config); !s.ok()) return s;
  return std::shared_ptr<const policy::PolicySet>(*std::move(set));
}

absl::Status PolicyGate::Reload() {
  std::shared_ptr<const Config> config = this->config();
  auto set = Prepare(*config);
  if (!set.ok()) return set.status();
  Install(std::move(config), *std::move(set));
  return absl::OkStatus();
}

void PolicyGate::Install(std::shared_ptr<const Config> config, std::shared_ptr<const policy::PolicySet> policy) {
  auto next = std::make_shared<const InForce>(InForce{std::move(config), std::move(policy)});
  absl::MutexLock l(&mu_);
  in_force_ = std::move(next);
}

std::shared_ptr<const PolicyGate::InForce> PolicyGate::in_force() const {
  absl::ReaderMutexLock l(&mu_);
  return in_force_;
}

absl::string_view PolicyGate::CheckAtDelivery(const StoredDelivery& d, const OrgCode& recipient) const {
  if ((d.subject.empty() && d.consent_keys.empty()) || d.consent_check == 0) return "";
  const std::shared_ptr<const Config> config = this->config();
  const auto* org = config->FindOrganisation(recipient);
  const auto kind = org != nullptr ? org->kind() : v1::ORGANISATION_KIND_UNSPECIFIED;
  std::vector<std::string> keys;
  if (!d.subject.empty()) keys.push_back(d.subject);
  if (!d.consent_keys.empty()) {
    for (absl::string_view k : absl::StrSplit(d.consent_keys, '\n')) keys.emplace_back(k);
  }
  auto person = consent_.FindAll(keys);
  return policy::RecheckConsent(d.consent_check, policy::PurposeFromWire(d.purpose), recipient, kind,
                                person ? &*person : nullptr);
}

void WithholdAtDelivery(Store& store, ExchangeMetrics& metrics, const StoredDelivery& d, const OrgCode& recipient,
                        absl::string_view reason, absl::Time now, StoreCallback<int> done) {
  metrics.withheld.With({d.workflow, std::string(reason)}).Inc();
  Log(LogLevel::kDebug, "message.withheld")
      .Str("message_id", d.id.str())
      .Str("recipient", recipient.str())
      .Str("reason", reason);
  store.Withhold(recipient, {d.id}, std::string(reason), now, std::move(done));
}

}  // namespace carebroker
