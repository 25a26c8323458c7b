#include "policy/agreements.h"

#include <algorithm>
#include <filesystem>

#include "core/vocabulary.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "core/sha256.h"
#include "core/shapes.h"
#include "core/clock.h"
#include "core/files.h"
#include "core/status.h"
#include "core/yaml/yaml_proto.h"
#include "core/reasons.h"
#include "policy/minimise.h"

namespace carebroker::policy {
namespace {

namespace fs = std::filesystem;
using google::protobuf::FieldDescriptor;

bool IsAgreementId(absl::string_view s) {
  if (s.empty() || s.size() > 64 || !absl::ascii_isupper(s[0]) || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return absl::ascii_isupper(c) || absl::ascii_isdigit(c) || c == '-'; });
}

bool ParseDay(absl::string_view s, absl::CivilDay* day) {
  return s.size() == 10 && absl::ParseCivilTime(s, day) && absl::FormatCivilTime(*day) == s;
}

bool IsDateMessage(const FieldDescriptor* f) {
  return f->message_type() != nullptr && (f->message_type()->full_name() == "carebroker.v1.Date" ||
                                          f->message_type()->full_name() == "google.protobuf.Timestamp");
}

// True when `path` is `prefix` or lies beneath it.
bool Covers(absl::string_view prefix, absl::string_view path) {
  return path == prefix || (absl::StartsWith(path, prefix) && path[prefix.size()] == '.');
}

class Checker {
 public:
  Checker(absl::string_view file, const YamlLines& lines, std::vector<std::string>* errors)
      : file_(file), lines_(lines), errors_(errors) {}

  void Fail(absl::string_view path, absl::string_view reason) {
    errors_->push_back(std::string(YamlError(file_, lines_, path, reason).message()));
  }

  void CheckParties(const v1::Parties& p, const std::string& at) {
    if (p.ods().empty() && p.kinds().empty()) Fail(at, "required: name at least one ODS code or organisation kind");
    for (int i = 0; i < p.ods_size(); ++i) {
      if (!IsOdsCodeShape(p.ods(i))) {
        Fail(absl::StrCat(at, ".ods[", i, "]"), "an ODS code is 3 to 10 upper-case letters or digits");
      }
    }
  }

  // The national data opt-out: stated, with its basis or exemption, for a
  // flow of person-level data beyond direct care and safeguarding.
  void CheckOptOut(const v1::Flow& f, const std::string& at, bool must_state, bool for_care) {
    switch (f.national_opt_out()) {
      case v1::OPT_OUT_RULE_UNSPECIFIED:
        if (must_state) {
          Fail(at + ".national_opt_out",
               "required for a purpose beyond direct care and safeguarding: applies (with opt_out_basis) or exempt "
               "(with an exemption)");
        }
        break;
      case v1::OPT_OUT_RULE_APPLIES:
        if (f.opt_out_basis().empty() && !for_care) {  // for care, refused below
          Fail(at + ".opt_out_basis", "required when the opt-out applies: the basis the disclosure rests on, e.g. "
                                      "s251 support with its CAG reference");
        }
        break;
      case v1::OPT_OUT_RULE_EXEMPT:
        if (f.exemption() == v1::OPT_OUT_EXEMPTION_UNSPECIFIED) {
          Fail(at + ".exemption", "required when the opt-out is exempt: required-by-law, consent, public-interest or "
                                  "anonymised");
        }
        break;
      default: break;
    }
    if (f.exemption() != v1::OPT_OUT_EXEMPTION_UNSPECIFIED && f.national_opt_out() != v1::OPT_OUT_RULE_EXEMPT) {
      Fail(at + ".exemption", "only with national_opt_out: exempt");
      return;
    }
    if (f.exemption() == v1::OPT_OUT_EXEMPTION_CONSENT && f.consent() != v1::CONSENT_MODEL_EXPLICIT) {
      Fail(at + ".exemption", "consent exempts a disclosure only under explicit consent");
    }
    if (f.exemption() == v1::OPT_OUT_EXEMPTION_PUBLIC_INTEREST && f.opt_out_basis().empty()) {
      Fail(at + ".opt_out_basis", "required for a public-interest exemption: the interest that overrides");
    }
    if (f.exemption() == v1::OPT_OUT_EXEMPTION_ANONYMISED) {
      const bool pseudonymised = std::any_of(f.transforms().begin(), f.transforms().end(), [](const auto& t) {
        return t.pseudonymise() && t.field() == "person.nhs_number";
      });
      for (int i = 0; i < f.fields_size(); ++i) {
        const std::string& p = f.fields(i);
        const bool clear_nhs = !pseudonymised && (Covers(p, "person.nhs_number") || Covers("person.nhs_number", p));
        if (p == "person" || clear_nhs || Covers("person.names", p) || Covers("person.local_identifiers", p) ||
            p == "person.address" || Covers("person.address.lines", p)) {
          Fail(absl::StrCat(at, ".fields[", i, "]"),
               "an anonymised flow releases no NHS number in the clear, names, local identifiers or address lines");
        }
      }
    }
  }

  void CheckFlow(const v1::Flow& f, const std::string& at) {
    if (!IsPurposeShape(f.name())) Fail(at + ".name", "required: lower-case words joined by '-'");
    CheckParties(f.senders(), at + ".senders");
    CheckParties(f.recipients(), at + ".recipients");
    if (f.workflows().empty()) Fail(at + ".workflows", "required: at least one workflow");
    for (int i = 0; i < f.workflows_size(); ++i) {
      if (!IsWorkflowShape(f.workflows(i)) || f.workflows(i) == kNdrWorkflow) {
        Fail(absl::StrCat(at, ".workflows[", i, "]"), "a workflow is upper snake case, e.g. HOSPITAL_DISCHARGE");
      }
    }
    if (f.purposes().empty()) Fail(at + ".purposes", "required: at least one purpose");
    bool direct_care = false, safeguarding = false, beyond = false;
    for (int p : f.purposes()) {
      direct_care |= p == v1::PURPOSE_DIRECT_CARE;
      safeguarding |= p == v1::PURPOSE_SAFEGUARDING;
      beyond |= p != v1::PURPOSE_DIRECT_CARE && p != v1::PURPOSE_SAFEGUARDING;
    }
    const bool opaque = f.payload() == v1::PAYLOAD_KIND_OPAQUE;
    const auto& lb = f.legal_basis();
    if (lb.article6() == v1::ARTICLE6_UNSPECIFIED) {
      Fail(at + ".legal_basis.article6", "required: the UK GDPR Article 6 lawful basis");
    }
    if (lb.article9() == v1::ARTICLE9_UNSPECIFIED) {
      Fail(at + ".legal_basis.article9", "required: the UK GDPR Article 9(2) condition");
    } else if (lb.article9() == v1::ARTICLE9_NOT_APPLICABLE && !opaque) {
      Fail(at + ".legal_basis.article9", "not-applicable only for opaque payloads: care records are health data");
    }
    if (lb.common_law() == v1::COMMON_LAW_BASIS_UNSPECIFIED) {
      Fail(at + ".legal_basis.common_law", "required: the basis under the common-law duty of confidentiality");
    }
    const bool statute_needed = lb.common_law() == v1::COMMON_LAW_BASIS_STATUTORY_GATEWAY ||
                                f.consent() == v1::CONSENT_MODEL_NOT_APPLICABLE ||
                                f.exemption() == v1::OPT_OUT_EXEMPTION_REQUIRED_BY_LAW;
    if (statute_needed && lb.statutory().empty()) {
      Fail(at + ".legal_basis.statutory",
           "required when consent is not-applicable, the opt-out exemption is required-by-law or the basis is a "
           "statutory gateway");
    }
    CheckOptOut(f, at, beyond && !opaque, direct_care || safeguarding);
    if (f.consent() == v1::CONSENT_MODEL_UNSPECIFIED) {
      Fail(at + ".consent", "required: implied, explicit or not-applicable");
    }
    if (f.national_opt_out() == v1::OPT_OUT_RULE_APPLIES && (direct_care || safeguarding)) {
      Fail(at + ".national_opt_out", "the national data opt-out never applies to direct care or safeguarding");
    }
    if (f.safeguarding_override()) {
      if (!safeguarding) Fail(at + ".safeguarding_override", "only a flow with purpose safeguarding may override");
      if (f.consent() == v1::CONSENT_MODEL_NOT_APPLICABLE) {
        Fail(at + ".safeguarding_override", "pointless when consent is not-applicable");
      }
    }
    if (opaque) {
      if (!f.fields().empty() || !f.transforms().empty()) {
        Fail(at + ".payload", "an opaque flow cannot release fields or transform them");
      }
      if (f.consent() != v1::CONSENT_MODEL_NOT_APPLICABLE) {
        Fail(at + ".consent", "an opaque payload names no person: consent must be not-applicable");
      }
      if (lb.article9() != v1::ARTICLE9_NOT_APPLICABLE) {
        Fail(at + ".legal_basis.article9", "an opaque flow carries no special category data: not-applicable");
      }
      return;
    }
    if (f.payload() == v1::PAYLOAD_KIND_DOCUMENT) {
      if (!f.fields().empty() || !f.transforms().empty()) {
        Fail(at + ".payload", "a document flow carries the document whole: it cannot release fields or transform them");
      }
      return;
    }
    if (f.fields().empty()) Fail(at + ".fields", "required: the field paths this flow releases");
    for (int i = 0; i < f.fields_size(); ++i) {
      if (auto c = ResolveFieldPath(f.fields(i)); !c.ok()) Fail(absl::StrCat(at, ".fields[", i, "]"), c.status().message());
    }
    absl::flat_hash_set<std::string> seen;
    for (int i = 0; i < f.transforms_size(); ++i) {
      const auto& t = f.transforms(i);
      const std::string tat = absl::StrCat(at, ".transforms[", i, "]");
      auto chain = ResolveFieldPath(t.field());
      if (!chain.ok()) {
        Fail(tat + ".field", chain.status().message());
        continue;
      }
      if (!seen.insert(t.field()).second) Fail(tat + ".field", "a second transform of the same field");
      if (std::none_of(f.fields().begin(), f.fields().end(), [&](const std::string& p) { return Covers(p, t.field()); })) {
        Fail(tat + ".field", "not released by this flow's fields, so there is nothing to transform");
      }
      const FieldDescriptor* leaf = chain->back();
      switch (t.action_case()) {
        case v1::FieldTransform::ACTION_NOT_SET:
          Fail(tat, "needs one of redact, generalise, pseudonymise");
          break;
        case v1::FieldTransform::kRedact:
          if (!t.redact()) Fail(tat + ".redact", "redact: false does nothing; remove the transform");
          break;
        case v1::FieldTransform::kGeneralise: {
          const bool date = t.generalise() == v1::GENERALISATION_YEAR || t.generalise() == v1::GENERALISATION_MONTH;
          if (date && !IsDateMessage(leaf)) {
            Fail(tat + ".generalise", "year and month generalise dates and times only");
          } else if (!date && leaf->full_name() != "carebroker.v1.Address.postcode") {
            Fail(tat + ".generalise", "district and sector generalise postcodes only");
          }
          break;
        }
        case v1::FieldTransform::kPseudonymise:
          if (!t.pseudonymise()) Fail(tat + ".pseudonymise", "pseudonymise: false does nothing; remove the transform");
          if (leaf->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
            Fail(tat + ".pseudonymise", "only text fields (identifiers, codes) can be pseudonymised");
          }
          break;
      }
    }
  }

  void CheckAgreement(const v1::Agreement& a, LoadedAgreement* out) {
    if (!IsAgreementId(a.id())) Fail("id", "required: upper-case letters, digits and '-', e.g. DSA-LEEDS-DISCHARGE");
    if (a.title().empty()) Fail("title", "required");
    if (a.version().empty()) Fail("version", "required, e.g. \"1.0\"");
    absl::CivilDay from, until;
    const bool from_ok = ParseDay(a.valid_from(), &from), until_ok = ParseDay(a.valid_until(), &until);
    if (!from_ok) Fail("valid_from", "required: the first day in force, YYYY-MM-DD");
    if (!until_ok) Fail("valid_until", "required: the last day in force, YYYY-MM-DD");
    if (from_ok && until_ok) {
      out->valid_from = absl::FromCivil(from, UkZone());
      out->valid_until = absl::FromCivil(until + 1, UkZone());  // midnight ending the last day
      if (until < from) Fail("valid_until", "is before valid_from");
    }
    for (int i = 0; i < a.controllers_size(); ++i) {
      if (!IsOdsCodeShape(a.controllers(i))) Fail(absl::StrCat("controllers[", i, "]"), "an ODS code is expected");
    }
    if (a.flows().empty()) Fail("flows", "required: at least one flow");
    absl::flat_hash_set<std::string> names;
    for (int i = 0; i < a.flows_size(); ++i) {
      const std::string at = absl::StrCat("flows[", i, "]");
      CheckFlow(a.flows(i), at);
      if (!a.flows(i).name().empty() && !names.insert(a.flows(i).name()).second) {
        Fail(at + ".name", absl::StrCat("'", a.flows(i).name(), "' names two flows"));
      }
    }
  }

 private:
  std::string file_;
  const YamlLines& lines_;
  std::vector<std::string>* errors_;
};

}  // namespace

absl::StatusOr<absl::Time> ParseUkDate(absl::string_view date) {
  absl::CivilDay day;
  if (!ParseDay(date, &day)) return InvalidArgument(reason::kDateInvalid, "expected a date YYYY-MM-DD");
  return absl::FromCivil(day, UkZone());
}

v1::Purpose PurposeFromWire(absl::string_view s) {
  // The wire form is the lower-case one only, so "DIRECT_CARE" is refused.
  const auto* v = IsPurposeShape(s) ? FindEnumValue(v1::Purpose_descriptor(), s) : nullptr;
  return v != nullptr ? static_cast<v1::Purpose>(v->number()) : v1::PURPOSE_UNSPECIFIED;
}

std::string PurposeToWire(v1::Purpose p) {
  std::string name = v1::Purpose_Name(p);
  if (!absl::StartsWith(name, "PURPOSE_")) return "";
  return absl::AsciiStrToLower(absl::StrReplaceAll(name.substr(8), {{"_", "-"}}));
}

void ParseAgreement(absl::string_view text, absl::string_view file, std::vector<LoadedAgreement>* out,
                    std::vector<std::string>* errors) {
  LoadedAgreement loaded;
  loaded.file = std::string(file);
  YamlLines lines;
  if (auto s = YamlToProto(text, file, &loaded.agreement, &lines); !s.ok()) {
    errors->push_back(std::string(s.message()));
    return;
  }
  const size_t before = errors->size();
  Checker(file, lines, errors).CheckAgreement(loaded.agreement, &loaded);
  if (errors->size() == before) out->push_back(std::move(loaded));
}

absl::StatusOr<AgreementSet> LoadAgreements(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto ext = it->path().extension();
    if (it->is_regular_file() && (ext == ".yaml" || ext == ".yml")) files.push_back(it->path());
  }
  if (ec) return InvalidArgument(reason::kAgreementsInvalid, absl::StrCat(dir, ": cannot read the agreements folder"));
  if (files.empty()) {
    return InvalidArgument(reason::kAgreementsInvalid, absl::StrCat(dir, ": no agreement files (*.yaml)"));
  }
  std::sort(files.begin(), files.end());
  AgreementSet set;
  std::vector<std::string> errors;
  std::string hashed;
  for (const auto& p : files) {
    auto text = ReadFileToString(p.string(), "agreement");
    if (!text.ok()) {
      errors.push_back(std::string(text.status().message()));
      continue;
    }
    absl::StrAppend(&hashed, p.filename().string(), "\n", text->size(), "\n", *text);
    const size_t before = set.agreements.size();
    ParseAgreement(*text, p.string(), &set.agreements, &errors);
    if (set.agreements.size() > before) {
      for (size_t i = 0; i < before; ++i) {
        if (set.agreements[i].agreement.id() == set.agreements.back().agreement.id()) {
          errors.push_back(absl::StrCat(p.string(), ":1: id: '", set.agreements.back().agreement.id(),
                                        "' is also the id in ", set.agreements[i].file));
        }
      }
    }
  }
  if (!errors.empty()) return InvalidArgument(reason::kAgreementsInvalid, absl::StrJoin(errors, "\n"));
  std::sort(set.agreements.begin(), set.agreements.end(),
            [](const auto& a, const auto& b) { return a.agreement.id() < b.agreement.id(); });
  set.digest = absl::BytesToHexString(Sha256(hashed));
  return set;
}

}  // namespace carebroker::policy
