#include "broker/server/policy_services.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "audit/log.h"
#include "broker/config/config.h"
#include "core/time.h"
#include "core/files.h"
#include "core/ids.h"
#include "core/nhs_number.h"
#include "core/status.h"
#include "core/yaml/yaml_proto.h"
#include "core/log.h"
#include "core/reasons.h"
#include "broker/server/grpc_status.h"
#include "policy/agreements.h"

namespace carebroker {
namespace {

absl::Status CheckNhsNumber(const std::string& nhs) {
  if (!IsValidNhsNumber(nhs)) {
    return InvalidArgument(reason::kNhsNumberInvalid, "nhs_number is not a valid NHS number (ten digits, Modulus 11)");
  }
  return absl::OkStatus();
}

absl::Status CheckText(const std::string& s, absl::string_view field, bool required) {
  if (required && s.empty()) return InvalidArgument(reason::kFieldRequired, absl::StrCat(field, " is required"));
  if (s.size() > 256) return InvalidArgument(reason::kFieldTooLong, absl::StrCat(field, " must be at most 256 bytes"));
  return absl::OkStatus();
}

// The caller's identity if its role may write (or read) consent.
absl::StatusOr<Identity> ConsentCaller(grpc::CallbackServerContext* ctx, const ServiceDeps& d, bool write) {
  auto id = Identify(ctx, d);
  if (!id.ok()) return id.status();
  const std::shared_ptr<const Config> config = d.policy.config();
  if (write ? !config->MayWriteConsent(id->role) : !config->MayReadConsent(id->role)) {
    return RoleNotAllowed(d, *id, write ? "recording consent" : "reading consent");
  }
  return id;
}

absl::StatusOr<ConsentPerson> PersonOf(const std::string& nhs, const v1::LocalIdentifier& local) {
  const bool by_local = !local.value().empty() || !local.assigner().empty();
  if (!by_local) {
    if (auto s = CheckNhsNumber(nhs); !s.ok()) return s;
    return ConsentPerson{nhs, {}};
  }
  if (!nhs.empty()) {
    return InvalidArgument(reason::kLocalIdentifierInvalid,
                           "name the person by nhs_number or by local_identifier, not both");
  }
  if (!IsLocalIdentifierShape(local)) {
    return InvalidArgument(reason::kLocalIdentifierInvalid,
                           "local_identifier needs a value (1 to 64 characters) and its assigner (an ODS code or "
                           "system code, 1 to 40): letters, digits and . _ - / :");
  }
  v1::LocalIdentifier l;
  l.set_value(local.value());
  l.set_assigner(local.assigner());
  return ConsentPerson{"", std::move(l)};
}

v1::ConsentChange NewChange(const ConsentPerson& who, const Identity& by, const std::string& recorded_by,
                            const std::string& source, absl::Time now) {
  v1::ConsentChange c;
  c.set_nhs_number(who.nhs_number);
  if (!who.local.value().empty()) *c.mutable_local_identifier() = who.local;
  *c.mutable_at() = ToTimestamp(now);
  c.set_by_org(by.org.str());
  c.set_recorded_by(recorded_by);
  c.set_source(source);
  return c;
}

}  // namespace

void ConsentService::Commit(v1::ConsentChange change,
                            absl::AnyInvocable<void(absl::StatusOr<v1::ConsentChange>) &&> done) {
  v1::AuditEntry e;
  *e.mutable_at() = change.at();
  e.set_actor(change.by_org());
  switch (change.change_case()) {
    case v1::ConsentChange::kRecorded: {
      const v1::Directive& d = change.recorded();
      e.set_event(v1::AUDIT_EVENT_CONSENT_RECORDED);
      e.set_purpose(policy::PurposeToWire(d.purpose()));
      std::string scope = "every recipient";
      if (d.scope().has_ods()) scope = d.scope().ods();
      if (d.scope().has_kind()) scope = EnumShortName(v1::OrganisationKind_descriptor(), d.scope().kind());
      e.set_detail(absl::StrCat(EnumShortName(v1::DirectiveKind_descriptor(), d.kind()), " for ", scope,
                                "; directive ", d.id(),
                                change.has_local_identifier()
                                    ? absl::StrCat("; the person named by a local identifier of ",
                                                   change.local_identifier().assigner())
                                    : ""));
      break;
    }
    case v1::ConsentChange::kWithdrawn:
      e.set_event(v1::AUDIT_EVENT_CONSENT_WITHDRAWN);
      e.set_detail(absl::StrCat("directive ", change.withdrawn()));
      break;
    default:
      e.set_event(v1::AUDIT_EVENT_OPT_OUT_CHANGED);
      e.set_detail(change.national_opt_out() ? "national data opt-out set" : "national data opt-out cleared");
      break;
  }
  AuditRecord record = d_.audit.entries().Make(std::move(e), change.nhs_number());
  // The store's consent listener applies the change to the book before
  // this completes (broker.cc), in the order stored across replicas.
  d_.store.AppendConsent(std::move(change), std::move(record), std::move(done));
}

grpc::ServerUnaryReactor* ConsentService::Record(grpc::CallbackServerContext* ctx, const v1::RecordRequest* req,
                                                 v1::Directive* resp) {
  auto id = ConsentCaller(ctx, d_, true);
  if (!id.ok()) return FinishNow(ctx, id.status());
  auto who = PersonOf(req->nhs_number(), req->local_identifier());
  if (!who.ok()) return FinishNow(ctx, who.status());
  if (req->kind() == v1::DIRECTIVE_KIND_UNSPECIFIED) {
    return FinishNow(ctx, InvalidArgument(reason::kDirectiveKindRequired, "kind must be consent or dissent"));
  }
  const v1::Purpose purpose = policy::PurposeFromWire(req->purpose());
  if (purpose == v1::PURPOSE_UNSPECIFIED) {
    return FinishNow(ctx, InvalidArgument(reason::kPurposeUnknown, "purpose must be one of direct-care, safeguarding, planning, "
                                                        "research, commissioning, public-health"));
  }
  if (req->scope().has_ods() && !IsOdsCodeShape(req->scope().ods())) {
    return FinishNow(ctx, InvalidArgument(reason::kScopeInvalid, "scope.ods must be an ODS code"));
  }
  if (req->scope().has_kind() && req->scope().kind() == v1::ORGANISATION_KIND_UNSPECIFIED) {
    return FinishNow(ctx, InvalidArgument(reason::kScopeInvalid, "scope.kind must name an organisation kind"));
  }
  if (auto s = CheckText(req->source(), "source", true); !s.ok()) return FinishNow(ctx, s);
  if (auto s = CheckText(req->recorded_by(), "recorded_by", true); !s.ok()) return FinishNow(ctx, s);

  const absl::Time now = d_.clock.Now();
  v1::ConsentChange c = NewChange(*who, *id, req->recorded_by(), req->source(), now);
  v1::Directive* dir = c.mutable_recorded();
  dir->set_id(NewMessageId(now).str());
  dir->set_nhs_number(who->nhs_number);
  if (c.has_local_identifier()) *dir->mutable_local_identifier() = c.local_identifier();
  dir->set_kind(req->kind());
  dir->set_purpose(purpose);
  if (req->has_scope()) *dir->mutable_scope() = req->scope();
  dir->set_source(req->source());
  dir->set_recorded_by(req->recorded_by());
  dir->set_recorded_by_org(id->org.str());
  *dir->mutable_recorded_at() = c.at();
  auto* reactor = ctx->DefaultReactor();
  Commit(std::move(c), [reactor, resp](absl::StatusOr<v1::ConsentChange> r) {
    if (r.ok()) *resp = r->recorded();
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ConsentService::Withdraw(grpc::CallbackServerContext* ctx, const v1::WithdrawRequest* req,
                                                   v1::Directive* resp) {
  auto id = ConsentCaller(ctx, d_, true);
  if (!id.ok()) return FinishNow(ctx, id.status());
  auto who = PersonOf(req->nhs_number(), req->local_identifier());
  if (!who.ok()) return FinishNow(ctx, who.status());
  if (auto s = CheckText(req->source(), "source", true); !s.ok()) return FinishNow(ctx, s);
  if (auto s = CheckText(req->recorded_by(), "recorded_by", true); !s.ok()) return FinishNow(ctx, s);
  auto standing = d_.policy.consent().FindDirective(who->key(), req->directive_id());
  {
    absl::MutexLock l(&mu_);
    if (!standing || !withdrawing_.insert(req->directive_id()).second) {
      return FinishNow(ctx, Error(absl::StatusCode::kNotFound, reason::kDirectiveNotFound,
                             "no standing directive with that id for this person"));
    }
  }
  const absl::Time now = d_.clock.Now();
  v1::ConsentChange c = NewChange(*who, *id, req->recorded_by(), req->source(), now);
  c.set_withdrawn(req->directive_id());
  v1::Directive out = *standing;
  *out.mutable_withdrawn_at() = c.at();
  out.set_withdrawn_by(req->recorded_by());
  auto* reactor = ctx->DefaultReactor();
  Commit(std::move(c), [this, reactor, resp, out = std::move(out)](absl::StatusOr<v1::ConsentChange> r) mutable {
    {
      absl::MutexLock l(&mu_);
      withdrawing_.erase(out.id());
    }
    if (r.ok()) *resp = std::move(out);
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ConsentService::SetNationalOptOut(grpc::CallbackServerContext* ctx,
                                                            const v1::SetNationalOptOutRequest* req,
                                                            v1::ConsentState* resp) {
  auto id = ConsentCaller(ctx, d_, true);
  if (!id.ok()) return FinishNow(ctx, id.status());
  if (auto s = CheckNhsNumber(req->nhs_number()); !s.ok()) return FinishNow(ctx, s);  // by NHS number only
  if (auto s = CheckText(req->source(), "source", true); !s.ok()) return FinishNow(ctx, s);
  if (auto s = CheckText(req->recorded_by(), "recorded_by", true); !s.ok()) return FinishNow(ctx, s);
  v1::ConsentChange c = NewChange(ConsentPerson{req->nhs_number(), {}}, *id, req->recorded_by(), req->source(), d_.clock.Now());
  c.set_national_opt_out(req->opted_out());
  auto* reactor = ctx->DefaultReactor();
  Commit(std::move(c), [this, reactor, resp, nhs = req->nhs_number()](absl::StatusOr<v1::ConsentChange> r) {
    if (!r.ok()) {
      reactor->Finish(ToGrpcStatus(r.status()));
      return;
    }
    ReadState(ConsentPerson{nhs, {}}, resp, reactor);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ConsentService::Get(grpc::CallbackServerContext* ctx, const v1::GetConsentRequest* req,
                                              v1::ConsentState* resp) {
  auto id = ConsentCaller(ctx, d_, false);
  if (!id.ok()) return FinishNow(ctx, id.status());
  auto who = PersonOf(req->nhs_number(), req->local_identifier());
  if (!who.ok()) return FinishNow(ctx, who.status());
  auto* reactor = ctx->DefaultReactor();
  ReadState(*who, resp, reactor);
  return reactor;
}

void ConsentService::ReadState(const ConsentPerson& who, v1::ConsentState* out, grpc::ServerUnaryReactor* reactor) {
  const std::string key = who.key();
  out->set_nhs_number(who.nhs_number);
  if (!who.local.value().empty()) *out->mutable_local_identifier() = who.local;
  if (auto p = d_.policy.consent().Find(key)) {
    out->set_national_opt_out(p->national_opt_out);
    for (auto& d : p->standing) *out->add_standing() = std::move(d);
  }
  d_.store.ReadConsent(key, [out, reactor](absl::StatusOr<std::vector<v1::ConsentChange>> r) {
    if (r.ok()) {
      for (auto& c : *r) *out->add_history() = std::move(c);
    }
    reactor->Finish(ToGrpcStatus(r.status()));
  });
}

AuditRecord PolicyLoadRecord(const ServiceDeps& d, const absl::Status& outcome, const std::string& actor) {
  v1::AuditEntry e;
  *e.mutable_at() = ToTimestamp(d.clock.Now());
  e.set_actor(actor);
  if (outcome.ok()) {
    const auto r = DescribePolicy(*d.policy.current());
    e.set_event(v1::AUDIT_EVENT_AGREEMENTS_LOADED);
    e.set_detail(absl::StrCat(r.agreements(), " agreements, ", r.flows(), " flows, digest ", r.digest()));
  } else {
    const size_t errors = std::count(outcome.message().begin(), outcome.message().end(), '\n') + 1;
    e.set_event(v1::AUDIT_EVENT_AGREEMENTS_REJECTED);
    e.set_detail(absl::StrCat(errors, " errors; the previous set stays in force. First: ",
                              outcome.message().substr(0, outcome.message().find('\n'))));
  }
  return d.audit.entries().Make(std::move(e));
}

v1::ReloadResponse DescribePolicy(const policy::PolicySet& set) {
  v1::ReloadResponse r;
  r.set_agreements(static_cast<int>(set.agreements().agreements.size()));
  r.set_flows(static_cast<int>(set.flows().size()));
  r.set_digest(set.agreements().digest);
  return r;
}

grpc::ServerUnaryReactor* PolicyService::Reload(grpc::CallbackServerContext* ctx, const v1::ReloadRequest*,
                                                v1::ReloadResponse* resp) {
  auto id = Authorize(ctx, d_, Role::kOperator);
  if (!id.ok()) return FinishNow(ctx, id.status());
  // Reading the config file, a few PEM files and a folder of small files:
  // quick enough for a callback thread. The reload audits itself.
  auto r = d_.reload(id->org.str());
  if (r.ok()) *resp = *std::move(r);
  return FinishNow(ctx, r.status());
}

}  // namespace carebroker
