#include "broker/store/mailbox_rules.h"

#include "absl/strings/str_cat.h"
#include "core/canonical.h"
#include "core/reasons.h"
#include "core/shapes.h"
#include "core/status.h"

namespace carebroker::mailbox {

absl::StatusOr<v1::MessageStatus> StatusOf(int64_t state) {
  switch (state) {
    case kAccepted: return v1::MESSAGE_STATUS_ACCEPTED;
    case kDelivered: return v1::MESSAGE_STATUS_DELIVERED;
    case kAcknowledged: return v1::MESSAGE_STATUS_ACKNOWLEDGED;
    case kExpired: return v1::MESSAGE_STATUS_EXPIRED;
    case kWithheld: return v1::MESSAGE_STATUS_WITHHELD;
    case kUploading: return v1::MESSAGE_STATUS_UPLOADING;
    case kHeld: return v1::MESSAGE_STATUS_HELD;
    case kCancelled: return v1::MESSAGE_STATUS_CANCELLED;
    default: return Error(absl::StatusCode::kInternal, reason::kStoreCorrupt, "unknown message state");
  }
}

absl::StatusOr<AppendReceipt> RepeatedKey(const MessageId& first_id, absl::Time first_accepted_at,
                                          absl::string_view first_digest, const NewMessage& retry) {
  if (first_digest != retry.digest) {
    return Error(absl::StatusCode::kAlreadyExists, reason::kIdempotencyKeyReused,
                 "this idempotency key was already used for a different message");
  }
  return AppendReceipt{first_id, first_accepted_at, true};
}

v1::MessageStatus FetchStatus(int64_t state, absl::Time expires_at, absl::Time now) {
  switch (state) {
    case kAccepted:
    case kDelivered:
      if (expires_at <= now) return v1::MESSAGE_STATUS_EXPIRED;
      return state == kAccepted ? v1::MESSAGE_STATUS_ACCEPTED : v1::MESSAGE_STATUS_DELIVERED;
    case kAcknowledged: return v1::MESSAGE_STATUS_ACKNOWLEDGED;
    case kExpired: return v1::MESSAGE_STATUS_EXPIRED;
    case kUploading: return v1::MESSAGE_STATUS_UPLOADING;
    case kHeld: return v1::MESSAGE_STATUS_HELD;
    case kCancelled: return v1::MESSAGE_STATUS_CANCELLED;
    default: return v1::MESSAGE_STATUS_WITHHELD;
  }
}

std::string PackSubject(absl::string_view nhs_number, absl::string_view consent_keys) {
  return consent_keys.empty() ? std::string(nhs_number) : absl::StrCat(nhs_number, "\n", consent_keys);
}

std::string SubjectOf(absl::string_view packed) { return std::string(packed.substr(0, packed.find('\n'))); }

std::string ConsentKeysOf(absl::string_view packed) {
  const size_t nl = packed.find('\n');
  return nl == absl::string_view::npos ? "" : std::string(packed.substr(nl + 1));
}

std::string PackPendingAudit(const AuditRecord& r) { return absl::StrCat(r.subject, "\n", r.entry); }

absl::StatusOr<AuditRecord> CompletedAudit(absl::string_view packed, absl::string_view digest, absl::Time now,
                                           absl::string_view patch) {
  const size_t nl = packed.find('\n');
  v1::AuditEntry e;
  if (nl == absl::string_view::npos || !e.ParseFromArray(packed.data() + nl + 1, static_cast<int>(packed.size() - nl - 1))) {
    return Error(absl::StatusCode::kInternal, reason::kStoreCorrupt, "a chunked message's held audit entry cannot be read");
  }
  if (patch.empty()) {
    e.set_payload_digest(std::string(digest));
  } else if (v1::AuditEntry add; add.ParseFromArray(patch.data(), static_cast<int>(patch.size()))) {
    e.MergeFrom(add);
  } else {
    return Error(absl::StatusCode::kInternal, reason::kStoreCorrupt, "a submission's audit entry cannot be read");
  }
  AuditRecord r;
  r.subject = std::string(packed.substr(0, nl));
  r.at = now;
  r.entry = Canonical(e);
  return r;
}

absl::Status CheckChunk(int64_t state, int64_t chunks, int64_t received, int n, int total) {
  if (state != kUploading) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kChunksComplete,
                 "the message is complete: no more chunks can be uploaded");
  }
  if (total != chunks) {
    return InvalidArgument(reason::kChunkRangeInvalid, "the chunk range's total is not the one the first chunk announced");
  }
  if (n < 2 || n > total) return InvalidArgument(reason::kChunkRangeInvalid, "a chunk number is 2 to the total");
  if (n > received + 1) {
    return InvalidArgument(reason::kChunkRangeInvalid, "chunks are uploaded in order: an earlier chunk is missing");
  }
  return absl::OkStatus();
}

absl::Status CheckSubmissionChunk(bool stored_progress, bool chunk_progress, int64_t received, int64_t after, int n) {
  if (stored_progress != chunk_progress) {
    return InvalidArgument(reason::kChunkRangeInvalid,
                           stored_progress ? "this message is a CLD submission: its chunks are minimised before storing"
                                           : "this message is carried whole: its chunks are stored as sent");
  }
  if (!stored_progress) return absl::OkStatus();
  if (n <= received) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kChunkSuperseded,
                 absl::StrCat("chunk ", n, " of this CLD submission is already taken: minimised as it arrived, it is "
                              "not replaced; upload the next"));
  }
  if (received != after) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kChunkSuperseded,
                 "the submission moved on while this chunk was minimised: upload its chunks one after another");
  }
  return absl::OkStatus();
}

AckOutcome ClassifyAck(int64_t state) {
  switch (state) {
    case kExpired: return AckOutcome::kExpired;
    case kWithheld:
    case kCancelled:
    case kUploading: return AckOutcome::kNotFound;
    case kAcknowledged: return AckOutcome::kAlreadyAcked;
    default: return AckOutcome::kAcknowledge;  // waiting, delivered or held
  }
}

void Report(AckOutcome outcome, const MessageId& id, AckResult& result) {
  switch (outcome) {
    case AckOutcome::kExpired: result.expired.push_back(id); break;
    case AckOutcome::kNotFound: result.not_found.push_back(id); break;
    case AckOutcome::kAlreadyAcked:
    case AckOutcome::kAcknowledge: result.acknowledged.push_back(id); break;
  }
}

std::optional<MessageEvent> StoredClaimedEvent(const NewMessage& m) {
  if (m.claim_token == 0 || !Audited(m.kind)) return std::nullopt;
  return MessageEvent{v1::AUDIT_EVENT_DELIVERED, m.id, m.sender, m.recipient, m.workflow, m.purpose,
                      m.subject, 1, "", "", m.accepted_at};
}

std::optional<MessageEvent> DeliveredEvent(const StoredDelivery& d, const OrgCode& recipient, absl::Time now) {
  if (!Audited(d.kind)) return std::nullopt;
  return MessageEvent{v1::AUDIT_EVENT_DELIVERED, d.id, d.sender, recipient, d.workflow, d.purpose,
                      d.subject, d.delivery_count, "", "", now};
}

std::optional<MessageEvent> AcknowledgedEvent(const Row& r, absl::Time now) {
  if (!Audited(r.kind)) return std::nullopt;
  return MessageEvent{v1::AUDIT_EVENT_ACKNOWLEDGED, r.id, r.sender, r.recipient, r.workflow, r.purpose,
                      r.subject, 0, "", "", now};
}

absl::Status NoMessageWithKey() {
  return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "you sent no message with that idempotency key");
}

MessageEvent WithheldEvent(const Row& r, absl::string_view reason, absl::Time now) {
  return MessageEvent{v1::AUDIT_EVENT_WITHHELD, r.id, r.sender, r.recipient, r.workflow, r.purpose,
                      r.subject, 0, std::string(reason), "", now};
}

namespace {
TrackInfo Reported(const Row& r) {
  TrackInfo info;
  info.id = r.id;
  info.sender = r.sender;
  info.recipient = r.recipient;
  info.workflow = r.workflow;
  info.local_reference = r.local_reference;
  info.accepted_at = r.accepted_at;
  return info;
}
}  // namespace

std::optional<NewMessage> WithheldReport(const Row& withheld, absl::string_view reason, absl::Time now,
                                         absl::Duration lifetime) {
  if (!Audited(withheld.kind) || withheld.sender.empty()) return std::nullopt;
  return MakeNonDeliveryReport(Reported(withheld), now, lifetime, reason);
}

absl::Status CheckRejection(absl::string_view code, absl::string_view text) {
  if (code.empty() || code.size() > kMaxRejectionCode) {
    return InvalidArgument(reason::kRejectionInvalid, "a rejection's code is 1 to 32 characters");
  }
  for (char c : code) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '-' && c != '.') {
      return InvalidArgument(reason::kRejectionInvalid, "a rejection's code is letters, digits, '_', '-' and '.'");
    }
  }
  if (text.size() > kMaxRejectionText) {
    return InvalidArgument(reason::kRejectionInvalid, "a rejection's text is at most 256 bytes");
  }
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      return InvalidArgument(reason::kRejectionInvalid, "a rejection's text is one line without control characters");
    }
  }
  return absl::OkStatus();
}

RejectOutcome ClassifyReject(int64_t state, absl::Time expires_at, absl::Time now) {
  if (state == kUploading) return RejectOutcome::kNotFound;
  return Fetchable(FetchStatus(state, expires_at, now)) ? RejectOutcome::kHold : RejectOutcome::kUnchanged;
}

Hold HoldFor(const Rejection& r) { return Hold{reason::kRejectedByRecipient, r.code, r.text}; }
Hold MaxAttemptsHold() { return Hold{reason::kMaxAttemptsReached, "", ""}; }

MessageEvent HeldEvent(const Row& r, const Hold& h, absl::Time now) {
  return MessageEvent{v1::AUDIT_EVENT_HELD, r.id, r.sender, r.recipient, r.workflow, r.purpose,
                      r.subject, 0, h.reason, h.code, now};
}

std::optional<NewMessage> HeldReport(const Row& held, const Hold& h, absl::Time now, absl::Duration lifetime) {
  if (!Audited(held.kind) || held.sender.empty()) return std::nullopt;
  TrackInfo info = Reported(held);
  info.rejection_code = h.code;
  info.rejection_text = h.text;
  return MakeNonDeliveryReport(info, now, lifetime, h.reason);
}

int StateOf(v1::MessageStatus s) {
  switch (s) {
    case v1::MESSAGE_STATUS_ACCEPTED: return kAccepted;
    case v1::MESSAGE_STATUS_DELIVERED: return kDelivered;
    case v1::MESSAGE_STATUS_ACKNOWLEDGED: return kAcknowledged;
    case v1::MESSAGE_STATUS_EXPIRED: return kExpired;
    case v1::MESSAGE_STATUS_WITHHELD: return kWithheld;
    case v1::MESSAGE_STATUS_UPLOADING: return kUploading;
    case v1::MESSAGE_STATUS_HELD: return kHeld;
    case v1::MESSAGE_STATUS_CANCELLED: return kCancelled;
    default: return 0;
  }
}

absl::Status CheckOperatorAction(int64_t state, bool purged, absl::Time expires_at, absl::Time now) {
  if (state != kHeld) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kMessageNotHeld,
                 "only a held message can be released or cancelled");
  }
  if (purged) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kMessageNotHeld,
                 "the message's body is gone (redirected or resent, or purged after retention)");
  }
  if (expires_at <= now) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kMessageNotHeld,
                 "the message was held past its expiry: it can be resent (decided again), not released");
  }
  return absl::OkStatus();
}

State AfterAction(OperatorAction::Kind kind) { return kind == OperatorAction::kRelease ? kAccepted : kCancelled; }

absl::Status CheckReplaceable(int64_t state, bool purged, absl::string_view replaced_by, absl::string_view sender) {
  auto refuse = [](absl::string_view why) {
    return Error(absl::StatusCode::kFailedPrecondition, reason::kMessageNotResendable, why);
  };
  if (state != kHeld && state != kExpired) return refuse("only a held or expired message can be redirected or resent");
  if (!replaced_by.empty()) {
    return refuse(absl::StrCat("the message was redirected or resent already, as message ", replaced_by));
  }
  if (purged) return refuse("the message's body is no longer kept (purged after retention, or never completed)");
  if (sender.empty()) return refuse("a broker report is not redirected or resent");
  return absl::OkStatus();
}

absl::Status Original::Actionable(absl::Time now) const {
  return refusal.ok() ? CheckOperatorAction(state, purged, expires_at, now) : refusal;
}

absl::Status Original::Replaceable() const {
  return refusal.ok() ? CheckReplaceable(state, purged, replaced_by, row.sender.str()) : refusal;
}

Undelivered Original::ToUndelivered(std::string payload) const {
  Undelivered u{row.id,      row.sender, row.recipient, row.workflow, row.purpose, content_type, row.local_reference,
                row.subject, meta,       std::move(payload)};
  u.status = *StatusOf(state);
  u.chunks = static_cast<uint32_t>(chunks);
  u.consent_keys = row.consent_keys;
  return u;
}

Original NoOriginal() {
  Original o;
  o.refusal = Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no message has this id");
  return o;
}

MessageEvent ActionEvent(const Row& r, const OperatorAction& a, const NewMessage* replacement) {
  static constexpr const char* kNames[] = {"RELEASE", "CANCEL", "REDIRECT", "RESEND"};
  MessageEvent e{v1::AUDIT_EVENT_OPERATOR_ACTION, r.id, r.sender, r.recipient, r.workflow, r.purpose,
                 r.subject, 0, kNames[a.kind], "", a.now};
  e.actor = a.actor.str();
  e.justification = a.justification;
  if (replacement != nullptr) {
    e.detail = absl::StrCat("as message ", replacement->id.str(), " to ", replacement->recipient.str());
  }
  return e;
}

absl::Status CheckQuery(const MessageQuery& q) {
  if (q.max < 1 || q.max > 1000) return InvalidArgument(reason::kQueryInvalid, "a page is 1 to 1000 messages");
  return absl::OkStatus();
}

absl::StatusOr<std::string> WorkflowList(const google::protobuf::RepeatedPtrField<std::string>& workflows) {
  if (workflows.size() > kMaxWorkflowFilter) {
    return InvalidArgument(reason::kWorkflowInvalid, "a Receive stream filters on at most 50 workflows");
  }
  std::string out;
  for (const std::string& w : workflows) {
    if (!IsWorkflowShape(w)) {
      return InvalidArgument(reason::kWorkflowInvalid, "a workflow filter names workflows in upper snake case");
    }
    absl::StrAppend(&out, out.empty() ? "," : "", w, ",");
  }
  return out;
}

Row RowOf(const StoredDelivery& d, const OrgCode& recipient) {
  return Row{.id = d.id,
             .sender = d.sender,
             .recipient = recipient,
             .workflow = d.workflow,
             .purpose = d.purpose,
             .subject = d.subject,
             .kind = d.kind,
             .local_reference = d.local_reference,
             .accepted_at = d.accepted_at};
}

ExpiryPlan PlanExpiry(const Row& expired, const SweepRequest& req) {
  ExpiryPlan plan;
  if (!Audited(expired.kind)) return plan;
  plan.event = MessageEvent{v1::AUDIT_EVENT_EXPIRED, expired.id, expired.sender, expired.recipient, expired.workflow,
                            expired.purpose, expired.subject, 0, "", "", req.now};
  if (!expired.sender.empty()) plan.report = MakeNonDeliveryReport(Reported(expired), req.now, req.report_expiry);
  return plan;
}

}  // namespace carebroker::mailbox
