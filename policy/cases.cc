#include "policy/cases.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/shapes.h"
#include "core/files.h"
#include "core/yaml/yaml_proto.h"
#include "google/protobuf/util/json_util.h"
#include "policy/agreements.h"

namespace carebroker::policy {
namespace {

// Pseudonyms are computed but never shown; any fixed key gives the same
// withheld and released paths as the recipient's real one.
constexpr char kOfflineKey[] = "carebroker offline evaluation: not a real key";

}  // namespace

void CheckCaseRequest(const v1::PolicyCase& c, std::vector<std::string>* errors) {
  if (c.name().empty()) errors->push_back("name: every case needs a name");
  if (!IsOdsCodeShape(c.sender())) errors->push_back("sender: must be an ODS code");
  if (!IsOdsCodeShape(c.recipient())) errors->push_back("recipient: must be an ODS code");
  if (c.sender_kind() == v1::ORGANISATION_KIND_UNSPECIFIED) errors->push_back("sender_kind: required");
  if (c.recipient_kind() == v1::ORGANISATION_KIND_UNSPECIFIED) errors->push_back("recipient_kind: required");
  if (!IsWorkflowShape(c.workflow())) errors->push_back("workflow: must be upper snake case, e.g. HOSPITAL_DISCHARGE");
  if (PurposeFromWire(c.purpose()) == v1::PURPOSE_UNSPECIFIED) {
    errors->push_back("purpose: must be one of direct-care, safeguarding, planning, research, commissioning, "
                      "public-health");
  }
  if (!c.date().empty() && !ParseUkDate(c.date()).ok()) errors->push_back("date: must be YYYY-MM-DD");
  if ((c.payload() == v1::PAYLOAD_KIND_OPAQUE || c.payload() == v1::PAYLOAD_KIND_DOCUMENT) && !c.record().empty()) {
    errors->push_back("record: an opaque payload or a document has no care record");
  }
  if (c.expect().withheld_size() > 0 && c.record().empty()) {
    errors->push_back("expect.withheld: needs a record to withhold fields from");
  }
}

absl::StatusOr<v1::PolicyCases> LoadPolicyCases(const std::string& path) {
  auto text = ReadFileToString(path, "cases file");
  if (!text.ok()) return text.status();
  v1::PolicyCases cases;
  YamlLines lines;
  if (absl::Status s = YamlToProto(*text, path, &cases, &lines); !s.ok()) return s;
  std::vector<std::string> errors;
  if (cases.cases().empty()) errors.push_back(absl::StrCat(path, ": no cases"));
  for (int i = 0; i < cases.cases_size(); ++i) {
    std::vector<std::string> found;
    CheckCaseRequest(cases.cases(i), &found);
    for (const auto& e : found) {
      const std::string key = e.substr(0, e.find(':'));
      errors.emplace_back(
          YamlError(path, lines, absl::StrCat("cases[", i, "].", key), e.substr(e.find(':') + 2)).message());
    }
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  return cases;
}

absl::StatusOr<CaseOutcome> EvaluateCase(const PolicySet& set, const v1::PolicyCase& c, const std::string& base_dir,
                                         absl::Time today) {
  DecisionInput in;
  in.sender = {OrgCode(c.sender()), c.sender_kind()};
  in.recipient = {OrgCode(c.recipient()), c.recipient_kind()};
  in.workflow = c.workflow();
  in.purpose = PurposeFromWire(c.purpose());
  in.opaque = c.payload() == v1::PAYLOAD_KIND_OPAQUE;
  in.document = c.payload() == v1::PAYLOAD_KIND_DOCUMENT;
  in.justification = c.justification();
  in.now = today;
  if (!c.date().empty()) {
    auto day = ParseUkDate(c.date());
    if (!day.ok()) return day.status();
    in.now = *day + absl::Hours(12);  // midday: clear of both ends of the day
  }
  PersonConsent person;
  person.national_opt_out = c.consent().national_opt_out();
  person.standing.assign(c.consent().directives().begin(), c.consent().directives().end());
  if (person.national_opt_out || !person.standing.empty()) in.consent = &person;

  CaseOutcome out;
  out.decision = set.Decide(in);
  if (c.record().empty()) return out;
  std::filesystem::path file(c.record());
  if (file.is_relative() && !base_dir.empty()) file = std::filesystem::path(base_dir) / file;
  auto json = ReadFileToString(file.string(), "record file");
  if (!json.ok()) return json.status();
  v1::CareRecord record;
  if (auto s = google::protobuf::util::JsonStringToMessage(*json, &record); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.string(), ": not a carebroker.v1.CareRecord in JSON: ", s.message().as_string()));
  }
  out.has_record = true;
  if (out.decision.allowed) {
    out.withheld = out.decision.flow->minimiser.Apply(&record, kOfflineKey);
    out.released = PresentPaths(record);
  }
  return out;
}

std::vector<std::string> CheckExpectation(const v1::CaseExpectation& want, const CaseOutcome& got) {
  std::vector<std::string> diffs;
  const Decision& d = got.decision;
  const std::string got_decision = d.allowed ? "allow" : absl::StrCat("deny (", absl::StrJoin(d.reasons, ", "), ")");
  if (want.decision() == v1::CASE_DECISION_ALLOW && !d.allowed) {
    diffs.push_back(absl::StrCat("decision: expected allow, got ", got_decision));
  }
  if (want.decision() == v1::CASE_DECISION_DENY && d.allowed) {
    diffs.push_back("decision: expected deny, got allow");
  }
  if (!want.reason().empty()) {
    const std::string main = d.allowed || d.reasons.empty() ? "" : d.reasons.front();
    if (main != want.reason()) {
      diffs.push_back(absl::StrCat("reason: expected ", want.reason(), ", got ", main.empty() ? "none" : main));
    }
  }
  const std::string agreement = d.flow ? d.flow->agreement->agreement.id() : "";
  const std::string flow = d.flow ? d.flow->flow->name() : "";
  if (!want.agreement().empty() && want.agreement() != agreement) {
    diffs.push_back(absl::StrCat("agreement: expected ", want.agreement(), ", got ",
                                 agreement.empty() ? "none" : agreement));
  }
  if (!want.flow().empty() && want.flow() != flow) {
    diffs.push_back(absl::StrCat("flow: expected ", want.flow(), ", got ", flow.empty() ? "none" : flow));
  }
  if (want.has_safeguarding_override() && want.safeguarding_override() != d.overridden) {
    diffs.push_back(absl::StrCat("safeguarding_override: expected ", want.safeguarding_override() ? "true" : "false",
                                 ", got ", d.overridden ? "true" : "false"));
  }
  if (got.has_record && d.allowed) {
    std::vector<std::string> expected(want.withheld().begin(), want.withheld().end());
    std::sort(expected.begin(), expected.end());
    if (expected != got.withheld) {
      diffs.push_back(absl::StrCat("withheld: expected [", absl::StrJoin(expected, ", "), "], got [",
                                   absl::StrJoin(got.withheld, ", "), "]"));
    }
  }
  return diffs;
}

}  // namespace carebroker::policy
