#include <CLI/CLI.hpp>

#include "broker/cli/ctl/commands.h"
#include "carebroker/v1/consent.grpc.pb.h"
#include "core/enum_names.h"
#include "core/nhs_number.h"
#include "core/status.h"

namespace carebroker::ctl {
namespace {

struct ConsentArgs {
  std::string nhs, local_id, assigner, purpose, scope_ods, scope_kind, source, recorded_by, directive;
  bool dissent = false, consent = false, on = false, off = false;
};

// The person: --nhs-number, or --local-id with --assigner.
template <typename Req>
bool SetPerson(const ConsentArgs& a, Req& req, std::ostream& err) {
  if (a.nhs.empty() == a.local_id.empty() || a.local_id.empty() != a.assigner.empty()) {
    err << "carebrokerctl: name the person by --nhs-number, or by --local-id with --assigner (for a person whose NHS "
           "number is not yet traced)\n";
    return false;
  }
  req.set_nhs_number(a.nhs);
  if (!a.local_id.empty()) {
    req.mutable_local_identifier()->set_value(a.local_id);
    req.mutable_local_identifier()->set_assigner(a.assigner);
  }
  return true;
}

int DoConsent(const Global& g, const std::string& cmd, const ConsentArgs& a, std::ostream& out, std::ostream& err) {
  auto stub = Connect<v1::Consent>(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  grpc::Status s;
  if (cmd == "record") {
    if (a.dissent == a.consent) {
      err << "carebrokerctl: give exactly one of --consent or --dissent\n";
      return 2;
    }
    v1::RecordRequest req;
    if (!SetPerson(a, req, err)) return 2;
    req.set_kind(a.dissent ? v1::DIRECTIVE_KIND_DISSENT : v1::DIRECTIVE_KIND_CONSENT);
    req.set_purpose(a.purpose);
    if (!a.scope_ods.empty()) req.mutable_scope()->set_ods(a.scope_ods);
    if (!a.scope_kind.empty()) {
      const auto* kind = FindEnumValue(v1::OrganisationKind_descriptor(), a.scope_kind);
      if (kind == nullptr || kind->number() == 0) {
        err << "carebrokerctl: unknown organisation kind " << a.scope_kind << "\n";
        return 2;
      }
      req.mutable_scope()->set_kind(static_cast<v1::OrganisationKind>(kind->number()));
    }
    req.set_source(a.source);
    req.set_recorded_by(a.recorded_by);
    v1::Directive d;
    s = stub->Record(&ctx, req, &d);
    if (s.ok()) return PrintJson(d, out);
  } else if (cmd == "withdraw") {
    v1::WithdrawRequest req;
    if (!SetPerson(a, req, err)) return 2;
    req.set_directive_id(a.directive);
    req.set_source(a.source);
    req.set_recorded_by(a.recorded_by);
    v1::Directive d;
    s = stub->Withdraw(&ctx, req, &d);
    if (s.ok()) return PrintJson(d, out);
  } else if (cmd == "opt-out") {
    if (a.on == a.off) {
      err << "carebrokerctl: give exactly one of --set or --clear\n";
      return 2;
    }
    v1::SetNationalOptOutRequest req;
    req.set_nhs_number(a.nhs);
    req.set_opted_out(a.on);
    req.set_source(a.source);
    req.set_recorded_by(a.recorded_by);
    v1::ConsentState st;
    s = stub->SetNationalOptOut(&ctx, req, &st);
    if (s.ok()) return PrintJson(st, out);
  } else {
    v1::GetConsentRequest req;
    if (!SetPerson(a, req, err)) return 2;
    v1::ConsentState st;
    s = stub->Get(&ctx, req, &st);
    if (s.ok()) return PrintJson(st, out);
  }
  return RpcFailed(err, s);
}

}  // namespace

void AddConsentCommands(CLI::App& app, Run& run) {
  auto ca = std::make_shared<ConsentArgs>();
  auto* con = app.add_subcommand("consent", "a person's consent, dissent and national data opt-out");
  con->require_subcommand(1);
  auto* rec = con->add_subcommand("record", "record consent or dissent");
  auto* wd = con->add_subcommand("withdraw", "withdraw a standing directive");
  auto* oo = con->add_subcommand("opt-out", "set or clear the national data opt-out");
  auto* show = con->add_subcommand("show", "standing wishes and history");
  oo->add_option("--nhs-number", ca->nhs, "NHS number (10 digits)")->required();
  for (auto* c : {rec, wd, show}) {
    c->add_option("--nhs-number", ca->nhs, "NHS number (10 digits)");
    c->add_option("--local-id", ca->local_id, "instead: the person's identifier at an organisation (not yet traced)");
    c->add_option("--assigner", ca->assigner, "with --local-id: who assigned it (an ODS code or system code)");
  }
  for (auto* c : {rec, wd, oo}) {
    c->add_option("--source", ca->source, "where the wish was expressed")->required();
    c->add_option("--recorded-by", ca->recorded_by, "who recorded it")->required();
  }
  rec->add_flag("--consent", ca->consent, "record consent");
  rec->add_flag("--dissent", ca->dissent, "record dissent");
  rec->add_option("--purpose", ca->purpose, "purpose, e.g. direct-care")->required();
  rec->add_option("--scope-ods", ca->scope_ods, "only for this recipient organisation");
  rec->add_option("--scope-kind", ca->scope_kind, "only for this kind of organisation, e.g. local-authority");
  wd->add_option("--directive", ca->directive, "directive id")->required();
  oo->add_flag("--set", ca->on, "the person has opted out");
  oo->add_flag("--clear", ca->off, "the person's opt-out is withdrawn");
  for (auto* c : {rec, wd, oo, show}) {
    c->callback([&run, ca, name = c->get_name()] {
      run.Online([&run, ca, name] { return DoConsent(run.g, name, *ca, run.out, run.err); });
    });
  }
}

}  // namespace carebroker::ctl
