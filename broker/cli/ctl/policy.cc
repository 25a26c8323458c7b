#include <CLI/CLI.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "broker/cli/ctl/commands.h"
#include "carebroker/v1/policy.grpc.pb.h"
#include "carebroker/v1/record.pb.h"
#include "core/enum_names.h"
#include "core/files.h"
#include "core/shapes.h"
#include "core/status.h"
#include "core/yaml/yaml_proto.h"
#include "google/protobuf/util/json_util.h"
#include "policy/agreements.h"
#include "policy/cases.h"

namespace carebroker::ctl {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// policy lint DIR: every error as FILE:LINE: key: reason; exit 1 if any.
int DoLint(const std::string& dir, std::ostream& out, std::ostream& err) {
  auto set = policy::LoadAgreements(dir);
  if (!set.ok()) {
    err << set.status().message() << "\n";
    return 1;
  }
  size_t flows = 0;
  for (const auto& a : set->agreements) flows += a.agreement.flows_size();
  out << dir << ": " << set->agreements.size() << " agreements, " << flows << " flows, valid\n";
  return 0;
}

// Loads the agreements folder for an offline command; prints the errors.
std::shared_ptr<const policy::PolicySet> LoadForOffline(const std::string& dir, std::ostream& err) {
  auto set = policy::PolicySet::Load(dir);
  if (!set.ok()) {
    err << set.status().message() << "\n";
    return nullptr;
  }
  return *set;
}

std::string DecisionText(const policy::Decision& d) {
  std::string s = d.allowed ? "allow" : absl::StrCat("deny (", absl::StrJoin(d.reasons, ", "), ")");
  if (d.flow != nullptr) {
    absl::StrAppend(&s, d.allowed ? " under " : " by ", d.flow->agreement->agreement.id(), " v",
                    d.flow->agreement->agreement.version(), " flow ", d.flow->flow->name());
  }
  if (d.overridden) absl::StrAppend(&s, ", overriding dissent (safeguarding)");
  return s;
}

// policy test DIR CASES: each case's decision against its expectation.
// Exit 0 when every case passes, 1 when any fails, 2 on bad input.
int DoPolicyTest(const Global& g, const std::string& dir, const std::string& cases_file, std::ostream& out,
                 std::ostream& err) {
  auto set = LoadForOffline(dir, err);
  if (!set) return 2;
  auto cases = policy::LoadPolicyCases(cases_file);
  if (!cases.ok()) {
    err << cases.status().message() << "\n";
    return 2;
  }
  const std::string base = fs::path(cases_file).parent_path().string();
  int failed = 0;
  json results = json::array();
  for (const auto& c : cases->cases()) {
    auto got = policy::EvaluateCase(*set, c, base, absl::Now());
    if (!got.ok()) {
      err << cases_file << ": case '" << c.name() << "': " << got.status().message() << "\n";
      return 2;
    }
    const std::vector<std::string> diffs = policy::CheckExpectation(c.expect(), *got);
    if (!diffs.empty()) ++failed;
    if (g.json()) {
      results.push_back({{"name", c.name()},
                         {"passed", diffs.empty()},
                         {"decision", DecisionText(got->decision)},
                         {"withheld", got->withheld},
                         {"failures", diffs}});
      continue;
    }
    out << (diffs.empty() ? "PASS " : "FAIL ") << c.name() << "\n";
    for (const auto& d : diffs) out << "    " << d << "\n";
  }
  if (g.json()) {
    out << json{{"passed", cases->cases_size() - failed}, {"failed", failed}, {"cases", results}}.dump(2) << "\n";
  } else {
    out << cases->cases_size() - failed << " passed, " << failed << " failed\n";
  }
  return failed == 0 ? 0 : 1;
}

struct ExplainArgs {
  std::string dir, sender, sender_kind, recipient, recipient_kind, workflow, purpose, justification, date, record;
  std::vector<std::string> dissent, consent;
  bool opaque = false, opt_out = false;
};

// "PURPOSE" or "PURPOSE@SCOPE" (an ODS code or an organisation kind).
absl::StatusOr<v1::Directive> ParseDirective(absl::string_view text, v1::DirectiveKind kind) {
  v1::Directive d;
  d.set_kind(kind);
  const size_t at = text.find('@');
  const absl::string_view purpose = text.substr(0, at);
  d.set_purpose(policy::PurposeFromWire(purpose));
  if (d.purpose() == v1::PURPOSE_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat("unknown purpose '", purpose, "'"));
  }
  if (at == absl::string_view::npos) return d;
  const absl::string_view scope = text.substr(at + 1);
  if (const auto* k = FindEnumValue(v1::OrganisationKind_descriptor(), scope); k != nullptr && k->number() != 0) {
    d.mutable_scope()->set_kind(static_cast<v1::OrganisationKind>(k->number()));
  } else if (IsOdsCodeShape(scope)) {
    d.mutable_scope()->set_ods(std::string(scope));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("'", scope, "' is neither an ODS code nor an organisation kind"));
  }
  return d;
}

absl::StatusOr<v1::PolicyCase> ExplainCase(const ExplainArgs& a) {
  v1::PolicyCase c;
  c.set_name("explain");
  c.set_sender(a.sender);
  c.set_recipient(a.recipient);
  for (auto [text, set] : {std::pair{&a.sender_kind, &v1::PolicyCase::set_sender_kind},
                           std::pair{&a.recipient_kind, &v1::PolicyCase::set_recipient_kind}}) {
    const auto* k = FindEnumValue(v1::OrganisationKind_descriptor(), *text);
    if (k == nullptr || k->number() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown organisation kind '", *text, "' (e.g. nhs-trust, local-authority, gp-practice)"));
    }
    (c.*set)(static_cast<v1::OrganisationKind>(k->number()));
  }
  c.set_workflow(a.workflow);
  c.set_purpose(a.purpose);
  if (a.opaque) c.set_payload(v1::PAYLOAD_KIND_OPAQUE);
  c.set_justification(a.justification);
  c.set_date(a.date);
  c.set_record(a.record);
  c.mutable_consent()->set_national_opt_out(a.opt_out);
  for (auto [list, kind] : {std::pair{&a.dissent, v1::DIRECTIVE_KIND_DISSENT},
                            std::pair{&a.consent, v1::DIRECTIVE_KIND_CONSENT}}) {
    for (const auto& text : *list) {
      auto d = ParseDirective(text, kind);
      if (!d.ok()) return d.status();
      *c.mutable_consent()->add_directives() = *std::move(d);
    }
  }
  std::vector<std::string> errors;
  policy::CheckCaseRequest(c, &errors);
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return c;
}

template <typename E>
std::string Short(E value) {
  return EnumShortName(google::protobuf::GetEnumDescriptor<E>(), value);
}

// policy explain: one request, every flow considered, the decision and
// the fields that would be released.
int DoExplain(const ExplainArgs& a, std::ostream& out, std::ostream& err) {
  auto c = ExplainCase(a);
  if (!c.ok()) {
    err << "carebrokerctl: " << c.status().message() << "\n";
    return 2;
  }
  auto set = LoadForOffline(a.dir, err);
  if (!set) return 2;
  auto got = policy::EvaluateCase(*set, *c, "", absl::Now());
  if (!got.ok()) {
    err << "carebrokerctl: " << got.status().message() << "\n";
    return 2;
  }
  const policy::Decision& d = got->decision;
  out << "request: " << c->sender() << " (" << a.sender_kind << ") to " << c->recipient() << " ("
      << a.recipient_kind << "), " << c->workflow() << ", " << c->purpose() << ", "
      << (a.opaque ? "opaque payload" : "care record") << "\n";
  out << "considered:\n";
  for (const auto& line : d.trace) out << "  " << line << "\n";
  out << "decision: " << DecisionText(d) << "\n";
  if (d.flow == nullptr) return 0;
  const v1::Flow& f = *d.flow->flow;
  const v1::LegalBasis& lb = f.legal_basis();
  out << "legal basis: article 6 " << Short(lb.article6()) << "; article 9 " << Short(lb.article9())
      << "; common law " << Short(lb.common_law());
  if (!lb.statutory().empty()) out << "; " << lb.statutory();
  out << "\nconsent model: " << Short(f.consent())
      << "; safeguarding override: " << (f.safeguarding_override() ? "allowed" : "not allowed") << "\n";
  out << "national data opt-out: " << d.flow->OptOutRule(policy::PurposeFromWire(c->purpose())) << "\n";
  if (!d.allowed || a.opaque) return 0;
  out << "fields the flow releases:\n";
  for (const auto& p : f.fields()) out << "  " << p << "\n";
  if (!f.transforms().empty()) out << "transforms:\n";
  for (const auto& t : f.transforms()) {
    out << "  " << t.field() << ": "
        << (t.has_generalise() ? "generalised to " + Short(t.generalise())
                               : t.pseudonymise() ? "pseudonymised for the recipient" : "redacted")
        << "\n";
  }
  if (got->has_record) {
    out << "from " << a.record << ", released:\n";
    for (const auto& p : got->released) out << "  " << p << "\n";
    out << "withheld:\n";
    for (const auto& p : got->withheld) out << "  " << p << "\n";
  }
  return 0;
}

int DoReload(const Global& g, std::ostream& out, std::ostream& err) {
  auto stub = Connect<v1::Policy>(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::ReloadResponse r;
  grpc::Status s = stub->Reload(&ctx, v1::ReloadRequest(), &r);
  if (!s.ok()) return RpcFailed(err, s);
  out << r.organisations() << " organisations; " << r.agreements() << " agreements, " << r.flows()
      << " flows in force (digest " << r.digest() << ")\n";
  out << "server certificate " << r.server_certificate() << ", until " << r.server_certificate_not_after() << "\n";
  if (!r.crl_next_update().empty()) out << "CRL in force, next due " << r.crl_next_update() << "\n";
  for (const std::string& key : r.restart_pending()) {
    err << "carebrokerctl: " << key << " changed in the config file; it takes effect at the next restart\n";
  }
  return 0;
}

}  // namespace

void AddPolicyCommands(CLI::App& app, Run& run) {
  auto* pol = app.add_subcommand("policy", "data-sharing agreements");
  pol->require_subcommand(1);
  auto lint_dir = std::make_shared<std::string>();
  auto* lint = pol->add_subcommand("lint", "validate a folder of agreements (offline)");
  lint->add_option("DIR", *lint_dir, "agreements folder")->required();
  lint->callback([&run, lint_dir] { run.Offline([&run, lint_dir] { return DoLint(*lint_dir, run.out, run.err); }); });

  // The same reload as SIGHUP, under either name.
  for (CLI::App* parent : {&app, pol}) {
    auto* reload = parent->add_subcommand(
        "reload", "reload the broker's config (organisations, routing, keys, TLS files, CRL) and agreements (operator role)");
    reload->callback([&run] { run.Online([&run] { return DoReload(run.g, run.out, run.err); }); });
  }

  auto test = std::make_shared<std::pair<std::string, std::string>>();
  auto* ptest = pol->add_subcommand("test", "run a table of requests with expected decisions (offline)");
  ptest->add_option("DIR", test->first, "agreements folder")->required();
  ptest->add_option("CASES", test->second, "YAML file of cases (schema carebroker.v1.PolicyCases)")->required();
  ptest->callback([&run, test] {
    run.Offline([&run, test] { return DoPolicyTest(run.g, test->first, test->second, run.out, run.err); });
  });

  auto ea = std::make_shared<ExplainArgs>();
  auto* explain = pol->add_subcommand("explain", "which agreement and flow decide one request, and why (offline)");
  explain->add_option("DIR", ea->dir, "agreements folder")->required();
  explain->add_option("--sender", ea->sender, "sender ODS code")->required();
  explain->add_option("--sender-kind", ea->sender_kind, "e.g. nhs-trust")->required();
  explain->add_option("--recipient", ea->recipient, "recipient ODS code")->required();
  explain->add_option("--recipient-kind", ea->recipient_kind, "e.g. local-authority")->required();
  explain->add_option("--workflow", ea->workflow, "e.g. HOSPITAL_DISCHARGE")->required();
  explain->add_option("--purpose", ea->purpose, "e.g. direct-care")->required();
  explain->add_flag("--opaque", ea->opaque, "the payload is not a care record");
  explain->add_option("--justification", ea->justification, "safeguarding override justification");
  explain->add_option("--date", ea->date, "UK day of the send, YYYY-MM-DD (default today)");
  explain->add_option("--record", ea->record, "a CareRecord in JSON: show what would be released and withheld");
  explain->add_flag("--opt-out", ea->opt_out, "the person has a national data opt-out");
  explain->add_option("--dissent", ea->dissent, "recorded dissent: PURPOSE or PURPOSE@ODS-or-kind (repeatable)");
  explain->add_option("--consent", ea->consent, "recorded consent: PURPOSE or PURPOSE@ODS-or-kind (repeatable)");
  explain->callback([&run, ea] { run.Offline([&run, ea] { return DoExplain(*ea, run.out, run.err); }); });
}

}  // namespace carebroker::ctl
