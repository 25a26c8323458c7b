#include "broker/exchange/intake.h"

#include <algorithm>

#include "broker/exchange/submission.h"

#include "adapters/fhir/fhir.h"

#include "core/vocabulary.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "adapters/cld/cld.h"
#include "adapters/documents.h"
#include "adapters/formats.h"
#include "audit/log.h"
#include "core/time.h"
#include "core/files.h"
#include "policy/agreements.h"
#include "policy/minimise.h"
#include "core/ids.h"
#include "core/nhs_number.h"
#include "core/status.h"
#include "core/reasons.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker {
namespace {

bool Printable(absl::string_view s, size_t max) {
  if (s.size() > max) return false;
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// The organisation a request goes to: the one it names, or the one its
// route resolves to from the record and the routing tables.
absl::StatusOr<OrgCode> RecipientOf(const Config& config, const v1::SendRequest& req, const v1::CareRecord* record) {
  if (req.route().empty()) {
    if (req.recipient().empty() || !IsOdsCodeShape(req.recipient())) {
      return InvalidArgument(reason::kRecipientInvalid,
                             "recipient must be an ODS code (3-10 upper-case letters or digits), or give a route");
    }
    return OrgCode(req.recipient());
  }
  if (!req.recipient().empty()) return InvalidArgument(reason::kRouteConflict, "give a recipient or a route, not both");
  if (req.route() != kRouteCouncilOfResidence && req.route() != kRouteRegisteredGp) {
    return InvalidArgument(reason::kRouteUnknown, absl::StrCat("route must be ", kRouteCouncilOfResidence, " or ",
                                                         kRouteRegisteredGp));
  }
  if (record == nullptr) {
    return InvalidArgument(reason::kRouteNeedsRecord,
                           "a route is resolved from the care record; an opaque payload must name its recipient");
  }
  const v1::Person& p = record->person();
  auto unroutable = [&](absl::string_view why) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kUnroutable, absl::StrCat("route ", req.route(), ": ", why));
  };
  if (req.route() == kRouteRegisteredGp) {
    if (p.gp_practice().empty()) return unroutable("the record names no registered GP practice");
    if (config.FindOrganisation(OrgCode(p.gp_practice())) == nullptr) {
      return unroutable("the person's GP practice is not a registered organisation");
    }
    return OrgCode(p.gp_practice());
  }
  const auto& routing = config.routing();
  if (const std::string district = policy::PostcodeDistrict(p.address().postcode()); !district.empty()) {
    if (auto it = routing.postcode_districts().find(district); it != routing.postcode_districts().end()) {
      return OrgCode(it->second);
    }
  }
  if (auto it = routing.gp_practice_councils().find(p.gp_practice());
      !p.gp_practice().empty() && it != routing.gp_practice_councils().end()) {
    return OrgCode(it->second);
  }
  return unroutable("neither the person's postcode district nor their GP practice is in the routing tables");
}

// The local identifiers' keys among `keys` (those after the NHS number),
// one a line, for the store's delivery re-check.
std::string LocalKeys(const std::vector<std::string>& keys, const std::string& nhs) {
  const size_t first = nhs.empty() ? 0 : 1;
  return keys.size() <= first ? "" : absl::StrJoin(keys.begin() + first, keys.end(), "\n");
}

}  // namespace

absl::StatusOr<Admitted> Admit(const Config& config, const policy::PolicySet& policy,
                               const policy::ConsentBook& consent, const audit::EntryMaker& entries,
                               const OrgCode& sender, v1::SendRequest req, absl::Time now, AuditRecord* denial,
                               uint64_t max_bytes, uint32_t chunks, absl::string_view also_keys) {
  const uint64_t limit = max_bytes != 0 ? max_bytes : config.proto().limits().max_message_bytes();
  if (req.payload().size() > limit) {
    return Error(absl::StatusCode::kResourceExhausted, reason::kMessageTooLarge,
                 absl::StrCat("payload is ", req.payload().size(), " bytes; the limit is ", limit));
  }
  if (!IsWorkflowShape(req.workflow()) || req.workflow() == kNdrWorkflow) {
    return InvalidArgument(reason::kWorkflowInvalid,
                           "workflow must be upper snake case, e.g. HOSPITAL_DISCHARGE (1-64 characters)");
  }
  if (!IsPurposeShape(req.purpose())) {
    return InvalidArgument(reason::kPurposeInvalid, "purpose must be lower-case words joined by '-', e.g. direct-care");
  }
  const v1::Purpose purpose = policy::PurposeFromWire(req.purpose());
  if (purpose == v1::PURPOSE_UNSPECIFIED) {
    return InvalidArgument(reason::kPurposeUnknown,
                           "purpose must be one of direct-care, safeguarding, planning, research, commissioning, "
                           "public-health");
  }
  if (!Printable(req.idempotency_key(), kMaxIdempotencyKeyBytes)) {
    return InvalidArgument(reason::kIdempotencyKeyInvalid, "idempotency_key must be at most 128 printable ASCII characters");
  }
  if (req.content_type().empty() || !Printable(req.content_type(), 255)) {
    return InvalidArgument(reason::kContentTypeInvalid, "content_type is required: at most 255 printable ASCII characters");
  }
  if (!Printable(req.local_reference(), 128)) {
    return InvalidArgument(reason::kLocalReferenceInvalid, "local_reference must be at most 128 printable ASCII characters");
  }
  if (req.justification().size() > 4096) {
    return InvalidArgument(reason::kJustificationInvalid, "justification must be at most 4096 bytes");
  }
  if (req.payload().empty()) return InvalidArgument(reason::kPayloadEmpty, "payload is empty");

  // A payload in a format carebroker reads becomes a care record; anything
  // else is opaque. An NHS number failing Modulus 11 is kept for now: only
  // a flow accepting unverified identifiers lets it through (below), and
  // otherwise the adapter's precise error is the answer.
  const auto in_format = adapters::FormatByContentType(req.content_type());
  // A document (adapters/documents.h) is about the person it declares:
  // carried whole, decided by that person's consent (a flow with payload:
  // document).
  auto declared = adapters::ReadDocument(req.content_type(), req.payload());
  const bool document = declared.has_value();
  bool canonical = in_format.ok() && !document;
  bool submission = false;
  if (canonical && *in_format == adapters::Format::kCld) {
    if (chunks > 1) {
      submission = true;
    } else if (auto s = cld::ReadCld(req.payload(), {.keep_invalid_nhs_numbers = true}); s.ok() && s->people.size() > 1) {
      submission = true;
    }
  }
  if (submission) {
    canonical = false;
    if (!req.route().empty()) {
      return InvalidArgument(reason::kRouteNeedsRecord, "a CLD submission is about many people: name its recipient");
    }
  }
  v1::CareRecord record;
  absl::Status nhs_error;
  if (document) {
    if (!declared->ok()) return declared->status();
    record.mutable_person()->set_nhs_number((*declared)->nhs_number);
  }
  if (canonical) {
    auto parsed = adapters::Parse(*in_format, req.payload());
    if (!parsed.ok() && ReasonOf(parsed.status()) == reason::kNhsNumberInvalid) {
      nhs_error = parsed.status();
      parsed = adapters::Parse(*in_format, req.payload(), {.keep_invalid_nhs_numbers = true});
    }
    if (!parsed.ok()) return parsed.status();
    record = *std::move(parsed);
  }
  const std::string& nhs = record.person().nhs_number();
  const bool nhs_valid = nhs.empty() || IsValidNhsNumber(nhs);
  if (!nhs_valid && nhs_error.ok()) {
    nhs_error = InvalidArgument(reason::kNhsNumberInvalid, "person.nhs_number is not a valid NHS number (ten digits, Modulus 11)");
  }

  auto resolved = RecipientOf(config, req, canonical ? &record : nullptr);
  if (!resolved.ok()) return resolved.status();
  const OrgCode recipient = *resolved;
  const v1::Organisation* to = config.FindOrganisation(recipient);
  if (to == nullptr) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kUnknownRecipient,
                 absl::StrCat("recipient ", recipient.str(), " is not a registered organisation"));
  }

  // Registered when the caller was identified, but the agreements in force
  // may come from a reload since (and an operator's resend is from the
  // original sender).
  const v1::Organisation* from = config.FindOrganisation(sender);
  if (from == nullptr) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kUnknownOrganisation,
                 absl::StrCat("sender ", sender.str(), " is no longer a registered organisation"));
  }
  policy::DecisionInput in;
  in.sender = {sender, from->kind()};
  in.recipient = {recipient, to->kind()};
  in.workflow = req.workflow();
  in.purpose = purpose;
  in.opaque = !canonical && !document && !submission;
  in.document = document;
  in.justification = req.justification();
  // The person's wishes under their NHS number and under any local
  // identifier the record gives (for a person not yet traced).
  std::vector<std::string> keys = policy::PersonKeys(nhs, record.person().local_identifiers());
  // A redirect or resend: also the keys the original was decided under.
  for (absl::string_view k : absl::StrSplit(also_keys, '\n', absl::SkipEmpty())) {
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.emplace_back(k);
  }
  std::optional<policy::PersonConsent> person;
  if (!keys.empty()) person = consent.FindAll(keys);
  in.consent = person ? &*person : nullptr;
  in.now = now;
  const policy::Decision d = policy.Decide(in);
  if (!nhs_valid && !(d.allowed && d.flow->flow->accept_unverified_nhs_number())) return nhs_error;
  // The entry common to both outcomes: who, to whom, why, under what.
  v1::AuditEntry entry;
  *entry.mutable_at() = ToTimestamp(now);
  entry.set_actor(sender.str());
  entry.set_actor_role("agency");
  entry.set_sender(sender.str());
  entry.set_recipient(recipient.str());
  entry.set_workflow(req.workflow());
  entry.set_purpose(req.purpose());
  if (d.flow != nullptr) {
    entry.set_agreement_id(d.flow->agreement->agreement.id());
    entry.set_agreement_version(d.flow->agreement->agreement.version());
    entry.set_flow(d.flow->flow->name());
    *entry.mutable_legal_basis() = d.flow->flow->legal_basis();
  }
  for (const auto& r : d.reasons) entry.add_reasons(r);
  entry.set_justification(req.justification());
  const adapters::Format out_format = config.ReceiveFormat(recipient, req.workflow());
  entry.set_detail(submission ? absl::StrCat("CLD submission: decided and minimised row by row; ",
                                             adapters::InfoOf(out_format).name, " out")
                   : canonical ? absl::StrCat("care record: ", adapters::InfoOf(*in_format).name, " in, ",
                                             adapters::InfoOf(out_format).name, " out")
                   : document ? absl::StrCat("document: ", adapters::DocumentFormName((*declared)->form), ", carried whole")
                              : absl::StrCat("opaque payload: ", req.content_type()));
  if (!d.allowed) {
    entry.set_event(v1::AUDIT_EVENT_SEND_DENIED);
    if (denial != nullptr) *denial = entries.Make(std::move(entry), nhs_valid ? nhs : "");
    std::string why = absl::StrJoin(d.reasons, ", ");
    if (d.flow != nullptr) {
      absl::StrAppend(&why, " under ", d.flow->agreement->agreement.id(), " v", d.flow->agreement->agreement.version(),
                      " flow ", d.flow->flow->name());
    } else {
      absl::StrAppend(&why, ": no agreement covers ", sender.str(), " to ", recipient.str(), ", ", req.workflow(),
                      ", ", req.purpose());
    }
    return Error(absl::StatusCode::kPermissionDenied, d.reasons.front(), absl::StrCat("denied: ", why));
  }

  Admitted out;
  NewMessage& m = out.message;
  m.id = NewMessageId(now);
  m.digest = Sha256(req.payload());  // as sent: retries are compared on what the sender sent
  m.content_type = std::move(*req.mutable_content_type());
  if (submission) {
    if (out_format != adapters::Format::kCld) {
      return Error(absl::StatusCode::kFailedPrecondition, reason::kFormatUnsupported,
                   absl::StrCat(recipient.str(), " receives ", adapters::InfoOf(out_format).name, " for ",
                                req.workflow(), "; a CLD submission is delivered as CLD"));
    }
    if (d.flow->minimiser.needs_key() && config.PseudonymKey(recipient) == nullptr) {
      return Error(absl::StatusCode::kFailedPrecondition, reason::kPseudonymKeyMissing,
                   absl::StrCat("no pseudonymisation key for ", recipient.str()));
    }
    v1::SubmissionProgress progress;
    progress.set_workflow(req.workflow());
    progress.set_purpose(req.purpose());
    progress.set_justification(req.justification());
    progress.set_recipient(recipient.str());
    auto rows = MinimiseSubmissionChunk({config, policy, consent, entries, sender, recipient, m.id, now},
                                        req.payload(), 1, chunks <= 1, &progress);
    if (!rows.ok()) return rows.status();
    m.payload = std::move(rows->rows);
    m.row_audit = std::move(rows->row_audit);
    m.content_type = std::string(adapters::InfoOf(adapters::Format::kCld).content_type);
    out.withheld_fields.assign(progress.withheld_fields().begin(), progress.withheld_fields().end());
    if (chunks <= 1) {
      entry.MergeFrom(SubmissionAuditPatch(progress));
    } else {
      m.progress = progress.SerializeAsString();
    }
  } else if (canonical) {
    const std::string* key = nullptr;
    if (d.flow->minimiser.needs_key() && (key = config.PseudonymKey(recipient)) == nullptr) {
      return Error(absl::StatusCode::kFailedPrecondition, reason::kPseudonymKeyMissing,
                   absl::StrCat("no pseudonymisation key for ", recipient.str()));
    }
    out.withheld_fields = d.flow->minimiser.Apply(&record, key != nullptr ? *key : "");
    for (auto& f : policy::PresentPaths(record)) entry.add_released_fields(std::move(f));
    for (const auto& f : out.withheld_fields) entry.add_withheld_fields(f);
    // In the format the recipient takes; a record that format cannot carry is
    // refused here, so nothing is stored that could not be delivered.
    auto rendered = adapters::Render(out_format, record, {m.id.str(), sender.str(), recipient.str(), now});
    if (!rendered.ok()) {
      return Error(absl::StatusCode::kFailedPrecondition, reason::kFormatUnsupported,
                   absl::StrCat(recipient.str(), " receives ", adapters::InfoOf(out_format).name, " for ", req.workflow(),
                                ", which cannot carry this record: ", rendered.status().message()));
    }
    m.payload = *std::move(rendered);
    m.content_type = std::string(adapters::InfoOf(out_format).content_type);
    m.subject = nhs;
    m.consent_keys = LocalKeys(keys, nhs);
    m.consent_check = keys.empty() ? 0 : policy::EncodeConsentCheck(d.flow->flow->consent(), d.opt_out_applies,
                                                                     d.overridden);
  } else {
    m.payload = std::move(*req.mutable_payload());
    if (document) {  // re-checked at delivery as a record is
      m.subject = nhs;
      m.consent_keys = LocalKeys(keys, nhs);
      m.consent_check = policy::EncodeConsentCheck(d.flow->flow->consent(), d.opt_out_applies, d.overridden);
    }
  }
  out.agreement_id = d.flow->agreement->agreement.id();
  out.agreement_version = d.flow->agreement->agreement.version();
  out.flow = d.flow->flow->name();
  out.overridden = d.overridden;

  entry.set_event(v1::AUDIT_EVENT_SEND_ACCEPTED);
  entry.set_message_id(m.id.str());
  entry.set_payload_digest(m.digest);
  entry.set_safeguarding_override(d.overridden);
  // A submission is about many people: no one subject.
  m.audit = entries.Make(std::move(entry), canonical || document ? nhs : "");
  m.sender = sender;
  m.recipient = recipient;
  m.workflow = std::move(*req.mutable_workflow());
  m.purpose = std::move(*req.mutable_purpose());
  m.idempotency_key = std::move(*req.mutable_idempotency_key());
  m.local_reference = std::move(*req.mutable_local_reference());
  m.kind = v1::MESSAGE_KIND_DATA;
  m.accepted_at = now;
  m.expires_at = now + config.expiry();
  m.key_since = now - config.idempotency_window();
  return out;
}

void FillReceipt(const Admitted& a, v1::SendReceipt* out) {
  out->set_recipient(a.message.recipient.str());
  out->set_agreement_id(a.agreement_id);
  out->set_agreement_version(a.agreement_version);
  out->set_flow(a.flow);
  for (const auto& f : a.withheld_fields) out->add_withheld_fields(f);
  out->set_safeguarding_override(a.overridden);
}

}  // namespace carebroker
