#include "policy/engine.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/enum_names.h"
#include "core/reasons.h"

namespace carebroker::policy {
namespace {

std::string PartyKey(absl::string_view ods) { return absl::StrCat("o:", ods); }
std::string PartyKey(int kind) { return absl::StrCat("k:", kind); }

std::string IndexKey(absl::string_view sender, absl::string_view recipient, absl::string_view workflow,
                     int purpose) {
  return absl::StrCat(sender, "|", recipient, "|", workflow, "|", purpose);
}

std::vector<std::string> PartyKeys(const v1::Parties& p) {
  std::vector<std::string> keys;
  for (const auto& o : p.ods()) keys.push_back(PartyKey(o));
  for (int k : p.kinds()) keys.push_back(PartyKey(k));
  return keys;
}

bool HasText(absl::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return !absl::ascii_isspace(c); });
}

std::string FlowName(const CompiledFlow& f) {
  return absl::StrCat(f.agreement->agreement.id(), " v", f.agreement->agreement.version(), " flow ", f.flow->name());
}

}  // namespace

bool CompiledFlow::OptOutApplies(v1::Purpose p) const {
  switch (flow->national_opt_out()) {
    case v1::OPT_OUT_RULE_APPLIES:
      return true;
    case v1::OPT_OUT_RULE_EXEMPT:
      return false;
    default:
      return p != v1::PURPOSE_DIRECT_CARE && p != v1::PURPOSE_SAFEGUARDING;
  }
}

std::string CompiledFlow::OptOutRule(v1::Purpose p) const {
  switch (flow->national_opt_out()) {
    case v1::OPT_OUT_RULE_APPLIES:
      return absl::StrCat("applies: the agreement says so (", flow->opt_out_basis(), ")");
    case v1::OPT_OUT_RULE_EXEMPT: {
      const v1::OptOutExemption x = flow->exemption();
      const std::string& why = x == v1::OPT_OUT_EXEMPTION_REQUIRED_BY_LAW ? flow->legal_basis().statutory()
                               : x == v1::OPT_OUT_EXEMPTION_PUBLIC_INTEREST ? flow->opt_out_basis()
                                                                            : std::string();
      return absl::StrCat("does not apply: exempt, ", EnumShortName(v1::OptOutExemption_descriptor(), x),
                          why.empty() ? "" : absl::StrCat(" (", why, ")"));
    }
    default:
      return OptOutApplies(p) ? "applies (to every purpose beyond direct care and safeguarding unless the agreement "
                                "states an exemption)"
                              : "does not apply (never to direct care or safeguarding)";
  }
}

absl::StatusOr<std::shared_ptr<const PolicySet>> PolicySet::Load(const std::string& dir) {
  auto set = LoadAgreements(dir);
  if (!set.ok()) return set.status();
  return Build(*std::move(set));
}

std::shared_ptr<const PolicySet> PolicySet::Build(AgreementSet agreements) {
  std::shared_ptr<PolicySet> ps(new PolicySet);
  ps->set_ = std::move(agreements);
  for (const auto& a : ps->set_.agreements) {
    for (const auto& f : a.agreement.flows()) {
      auto m = Minimiser::Compile(f.fields(), f.transforms());  // validated when loaded
      CompiledFlow cf{&a, &f, m.ok() ? *std::move(m) : Minimiser{}, static_cast<int>(ps->flows_.size())};
      ps->flows_.push_back(std::move(cf));
    }
  }
  for (const auto& cf : ps->flows_) {
    for (const auto& s : PartyKeys(cf.flow->senders())) {
      for (const auto& r : PartyKeys(cf.flow->recipients())) {
        for (const auto& w : cf.flow->workflows()) {
          for (int p : cf.flow->purposes()) {
            auto& v = ps->index_[IndexKey(s, r, w, p)];
            if (v.empty() || v.back() != cf.order) v.push_back(cf.order);
          }
        }
      }
    }
  }
  return ps;
}

Decision PolicySet::Decide(const DecisionInput& in) const {
  Decision d;
  std::vector<int> candidates;
  const std::string senders[] = {PartyKey(in.sender.ods.str()), PartyKey(in.sender.kind)};
  const std::string recipients[] = {PartyKey(in.recipient.ods.str()), PartyKey(in.recipient.kind)};
  for (const auto& s : senders) {
    for (const auto& r : recipients) {
      auto it = index_.find(IndexKey(s, r, in.workflow, in.purpose));
      if (it != index_.end()) candidates.insert(candidates.end(), it->second.begin(), it->second.end());
    }
  }
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  if (candidates.empty()) {
    d.reasons.push_back(reason::kNoAgreement);
    d.trace.push_back("no flow names this sender, recipient, workflow and purpose");
    return d;
  }

  const CompiledFlow* consent_denial = nullptr;
  std::vector<std::string> consent_reasons;
  // Without a consent denial, the most telling other reason wins:
  // payload kind over expired over not yet valid.
  const CompiledFlow* other = nullptr;
  const char* other_reason = nullptr;
  int other_rank = -1;
  auto note_other = [&](const CompiledFlow& f, const char* reason, int rank) {
    if (rank > other_rank) {
      other = &f;
      other_reason = reason;
      other_rank = rank;
    }
  };
  for (int i : candidates) {
    const CompiledFlow& f = flows_[i];
    const std::string name = FlowName(f);
    if (in.now < f.agreement->valid_from) {
      d.trace.push_back(absl::StrCat(name, ": not yet in force"));
      note_other(f, reason::kAgreementNotYetValid, 0);
      continue;
    }
    if (in.now >= f.agreement->valid_until) {
      d.trace.push_back(absl::StrCat(name, ": expired"));
      note_other(f, reason::kAgreementExpired, 1);
      continue;
    }
    const v1::PayloadKind sent = in.opaque     ? v1::PAYLOAD_KIND_OPAQUE
                                 : in.document ? v1::PAYLOAD_KIND_DOCUMENT
                                               : v1::PAYLOAD_KIND_CARE_RECORD;
    const v1::PayloadKind carried =
        f.flow->payload() == v1::PAYLOAD_KIND_UNSPECIFIED ? v1::PAYLOAD_KIND_CARE_RECORD : f.flow->payload();
    if (carried != sent) {
      d.trace.push_back(absl::StrCat(name, carried == v1::PAYLOAD_KIND_OPAQUE     ? ": carries opaque payloads only"
                                           : carried == v1::PAYLOAD_KIND_DOCUMENT ? ": carries documents only"
                                                                                  : ": carries care records only"));
      note_other(f, reason::kPayloadKindNotAllowed, 2);
      continue;
    }
    const bool opt_out = f.OptOutApplies(in.purpose);
    absl::string_view verdict = ConsentVerdict(f.flow->consent(), opt_out, in.purpose, in.recipient.ods,
                                               in.recipient.kind, in.consent);
    if (verdict.empty()) {
      d.allowed = true;
      d.flow = &f;
      d.opt_out_applies = opt_out;
      d.trace.push_back(absl::StrCat(name, ": allows"));
      return d;
    }
    const bool overridable = verdict == reason::kConsentDissent || verdict == reason::kConsentRequired;
    if (overridable && in.purpose == v1::PURPOSE_SAFEGUARDING && f.flow->safeguarding_override()) {
      if (HasText(in.justification)) {
        d.allowed = true;
        d.flow = &f;
        d.overridden = true;
        d.opt_out_applies = opt_out;
        d.reasons.push_back(reason::kSafeguardingOverride);
        d.trace.push_back(absl::StrCat(name, ": allows, overriding ", verdict, " with a justification"));
        return d;
      }
      d.trace.push_back(absl::StrCat(name, ": ", verdict, "; an override needs a justification"));
      if (consent_denial == nullptr) {
        consent_denial = &f;
        consent_reasons = {reason::kOverrideJustificationMissing, std::string(verdict)};
      }
      continue;
    }
    d.trace.push_back(absl::StrCat(name, ": ", verdict));
    if (consent_denial == nullptr) {
      consent_denial = &f;
      consent_reasons = {std::string(verdict)};
    }
  }
  if (consent_denial != nullptr) {
    d.flow = consent_denial;
    d.opt_out_applies = consent_denial->OptOutApplies(in.purpose);
    d.reasons = std::move(consent_reasons);
  } else {
    d.flow = other;
    d.reasons.push_back(other_reason);
  }
  return d;
}

}  // namespace carebroker::policy
