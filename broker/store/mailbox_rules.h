// The mailbox rules both stores follow, written once: what a stored state
// code means, what a repeated idempotency key answers, what an ack of a
// message in each state does, which lifecycle events the audit log gets,
// and what a sweep does with an expired message. The SQLite and PostgreSQL
// stores keep only their SQL, transactions and threads; the conformance
// suite (tests/conformance) checks that both behave as these rules say.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "broker/store/store.h"
#include "carebroker/v1/exchange.pb.h"

namespace carebroker::mailbox {

// A message's state as stored in the messages table's `state` column.
// PERSISTENT FORMAT: these numbers are on disk in every store (and in the
// partial indexes' "state < 3" and "state = 3"); never renumber one.
enum State : int {
  kAccepted = 1,      // waiting in the recipient's mailbox
  kDelivered = 2,     // claimed by a Receive stream, not yet acknowledged
  kAcknowledged = 3,  // acknowledged; the body is purged after retention
  kExpired = 4,       // not acknowledged before expiry; the body is deleted
  kWithheld = 5,      // withheld at delivery (consent changed); the body is deleted
  kUploading = 6,     // a chunked message whose chunks are still arriving (invisible)
  kHeld = 7,          // not to be delivered again (rejected, or max attempts); body kept until expiry
  kCancelled = 8,     // a held message an operator cancelled; the body is deleted
};

// The state code a status filter (MessageQuery::status) selects; 0 for
// UNSPECIFIED (any).
int StateOf(v1::MessageStatus s);

// The state a message is stored in: kDelivered when it is stored already
// claimed by a Receive stream (direct delivery), else kAccepted.
// kUploading for the first chunk of a chunked message.
inline State InitialState(const NewMessage& m) {
  return m.chunks > 1 ? kUploading : m.claim_token != 0 ? kDelivered : kAccepted;
}

// A chunked message's first chunk is stored with its SEND_ACCEPTED entry
// held back (in the message row) until the last chunk arrives, when the
// entry gets the digest of the whole payload and is written. These pack
// and unpack the held entry.
std::string PackPendingAudit(const AuditRecord& r);

// The messages table's subject column: the NHS number, then the local
// identifiers' consent keys on the lines after it ("" for neither). The
// NHS number alone is what audit entries and redirects are decided by.
std::string PackSubject(absl::string_view nhs_number, absl::string_view consent_keys);
std::string SubjectOf(absl::string_view packed);      // the NHS number
std::string ConsentKeysOf(absl::string_view packed);  // the lines after it
// The entry to write at completion, `digest` (32 bytes) put in its
// payload_digest, or else `patch` (a serialized v1::AuditEntry, a CLD
// submission's: ChunkUpload::audit_patch) merged into it; INTERNAL
// STORE_CORRUPT when `packed` or `patch` is not one.
absl::StatusOr<AuditRecord> CompletedAudit(absl::string_view packed, absl::string_view digest, absl::Time now,
                                           absl::string_view patch = "");

// Chunk `n` of a CLD submission (one with progress) continues the progress
// it was minimised from: FAILED_PRECONDITION CHUNK_SUPERSEDED for a chunk
// already taken (it is not replaced) or one minimised after `after` chunks
// while `received` are now stored; INVALID_ARGUMENT CHUNK_RANGE_INVALID for
// progress where the message keeps none, or none where it keeps it.
absl::Status CheckSubmissionChunk(bool stored_progress, bool chunk_progress, int64_t received, int64_t after, int n);

// A stored idempotency key of a message accepted at `first_accepted_at`
// no longer holds for a send whose key_since is later (the window passed).
inline bool KeyForgotten(absl::Time first_accepted_at, absl::Time key_since) {
  return first_accepted_at < key_since;
}

// NOT_FOUND MESSAGE_NOT_FOUND for Track by an idempotency key its caller
// never sent with.
absl::Status NoMessageWithKey();

// A chunk is stored as rows of at most kPieceBytes (`chunks.part` 0, 1, ...),
// so neither store ever copies a whole 100 MB chunk into one record or
// result: the largest extra buffer per chunk is one piece.
inline constexpr size_t kPieceBytes = 4 << 20;
// The most chunks one message may have (MESH's mex-chunk-range, SendLarge).
inline constexpr uint32_t kMaxChunks = 10000;
inline size_t PieceCount(size_t bytes) { return bytes == 0 ? 1 : (bytes + kPieceBytes - 1) / kPieceBytes; }
inline absl::string_view Piece(absl::string_view data, size_t part) {
  return data.substr(std::min(data.size(), part * kPieceBytes), kPieceBytes);
}

// A chunk upload against the stored message: OK when chunk `n` of `total`
// may be stored now, given the message's `state`, its `chunks` and the
// highest chunk stored (`received`). Re-sending a stored chunk is allowed
// (clients retry chunk posts). FAILED_PRECONDITION CHUNKS_COMPLETE once the
// message is complete; INVALID_ARGUMENT CHUNK_RANGE_INVALID otherwise.
absl::Status CheckChunk(int64_t state, int64_t chunks, int64_t received, int n, int total);

// Track's status for a stored state code; INTERNAL STORE_CORRUPT for a code
// no release wrote.
absl::StatusOr<v1::MessageStatus> StatusOf(int64_t state);

// A status as a word for messages: "acknowledged", "uploading", ...
inline std::string StatusWord(v1::MessageStatus s) {
  absl::string_view name = v1::MessageStatus_Name(s);
  absl::ConsumePrefix(&name, "MESSAGE_STATUS_");
  return absl::AsciiStrToLower(name);
}

// A send whose (sender, idempotency key) is already stored: the first
// message's receipt (duplicate) when the payload digests match, else
// ALREADY_EXISTS IDEMPOTENCY_KEY_REUSED.
absl::StatusOr<AppendReceipt> RepeatedKey(const MessageId& first_id, absl::Time first_accepted_at,
                                          absl::string_view first_digest, const NewMessage& retry);

// What a fetch by id finds (Store::Fetch): ACCEPTED or DELIVERED while the
// message can be delivered; EXPIRED once past `expires_at` even before a
// sweep marks it so; ACKNOWLEDGED or WITHHELD after those.
v1::MessageStatus FetchStatus(int64_t state, absl::Time expires_at, absl::Time now);
inline bool Fetchable(v1::MessageStatus s) {
  return s == v1::MESSAGE_STATUS_ACCEPTED || s == v1::MESSAGE_STATUS_DELIVERED;
}

// What an ack of a message in `state` does.
enum class AckOutcome {
  kExpired,       // too late: reported as expired
  kNotFound,      // withheld, so never delivered: nothing to acknowledge
  kAlreadyAcked,  // acknowledged before: reported as acknowledged, no change
  kAcknowledge,   // the store acknowledges it now (and records the event)
};
// kNotFound for an upload still in progress. A held message may still be
// acknowledged: its recipient took it after all.
AckOutcome ClassifyAck(int64_t state);
// Adds `id` to the list of `result` that `outcome` reports it in.
void Report(AckOutcome outcome, const MessageId& id, AckResult& result);

// Lifecycle events go to the audit log for data messages only: reports are
// never reported on.
inline bool Audited(v1::MessageKind kind) { return kind == v1::MESSAGE_KIND_DATA; }

// The DELIVERED event of a message stored already claimed (direct
// delivery), or nullopt when there is none to record.
std::optional<MessageEvent> StoredClaimedEvent(const NewMessage& m);
// The DELIVERED event of a claimed message (nullopt for reports).
std::optional<MessageEvent> DeliveredEvent(const StoredDelivery& d, const OrgCode& recipient, absl::Time now);

// A message row as the lifecycle rules need it (ack, withhold, expiry).
struct Row {
  MessageId id;
  OrgCode sender;
  OrgCode recipient;
  std::string workflow;
  std::string purpose;
  std::string subject;  // the NHS number, "" when about no person
  v1::MessageKind kind = v1::MESSAGE_KIND_DATA;
  std::string local_reference;
  absl::Time accepted_at;
  std::string consent_keys;  // the person's local identifiers' keys (PackSubject)
};

// The ACKNOWLEDGED event of an ack (nullopt for reports).
std::optional<MessageEvent> AcknowledgedEvent(const Row& r, absl::Time now);
// The WITHHELD event (every kind: a withheld message is never delivered).
MessageEvent WithheldEvent(const Row& r, absl::string_view reason, absl::Time now);

// The non-delivery report for a withheld message, to its sender (nullopt
// for a report or a message with no sender), living as long as the
// message would have (`lifetime`: its expiry less its acceptance).
std::optional<NewMessage> WithheldReport(const Row& withheld, absl::string_view reason, absl::Time now,
                                         absl::Duration lifetime);

// Holding a message: why (REJECTED_BY_RECIPIENT or MAX_ATTEMPTS_REACHED)
// and, for a rejection, the recipient's code and text.
struct Hold {
  std::string reason;
  std::string code;
  std::string text;
};
Hold HoldFor(const Rejection& r);
Hold MaxAttemptsHold();

inline constexpr size_t kMaxRejectionCode = 32;
inline constexpr size_t kMaxRejectionText = 256;
// INVALID_ARGUMENT REJECTION_INVALID unless `code` is 1 to 32 of [A-Za-z0-9_.-]
// and `text` at most 256 bytes on one line (gRPC has checked it is UTF-8:
// a proto3 string).
absl::Status CheckRejection(absl::string_view code, absl::string_view text);

// What a reject of a message in `state` does: holds one that can still be
// delivered; leaves any other as it is (answering its status); an upload
// in progress is not in the recipient's mailbox yet.
enum class RejectOutcome { kHold, kUnchanged, kNotFound };
RejectOutcome ClassifyReject(int64_t state, absl::Time expires_at, absl::Time now);

// A message delivered `deliveries` times is held rather than delivered
// again once that reaches `max_attempts` (0: no limit).
inline bool Spent(uint32_t deliveries, uint32_t max_attempts) {
  return max_attempts > 0 && deliveries >= max_attempts;
}
// A fetch of a message that a Receive stream holds claimed now (a Download
// after its claim) is part of that delivery, not another one: it is not
// counted again.
inline bool CountsAsDelivery(bool claimed, absl::Time visible_at, absl::Time now) {
  return !claimed || visible_at <= now;
}

// The HELD event (every kind) and the non-delivery report to the sender
// (nullopt for a report or a message with no sender), living as long as
// the message would have.
MessageEvent HeldEvent(const Row& r, const Hold& h, absl::Time now);
std::optional<NewMessage> HeldReport(const Row& held, const Hold& h, absl::Time now, absl::Duration lifetime);

// An operator's release or cancel of a message in `state` (`purged`: its
// body is gone): OK for a held message whose body is kept and whose expiry
// is still ahead, else FAILED_PRECONDITION MESSAGE_NOT_HELD. The state it
// leaves it in.
absl::Status CheckOperatorAction(int64_t state, bool purged, absl::Time expires_at, absl::Time now);
State AfterAction(OperatorAction::Kind kind);
// An operator's redirect or resend of a message in `state`: OK for a held or
// expired message from an agency whose body is kept (a replaced one's is
// deleted: `replaced_by` names its replacement), else FAILED_PRECONDITION
// MESSAGE_NOT_RESENDABLE saying which.
absl::Status CheckReplaceable(int64_t state, bool purged, absl::string_view replaced_by, absl::string_view sender);
// A message an operator acts on, as each store reads it by id (`refusal`:
// NOT_FOUND MESSAGE_NOT_FOUND when there is none).
struct Original {
  absl::Status refusal;
  int64_t seq = 0;
  Row row;
  int64_t state = 0;
  bool purged = false;
  absl::Time expires_at;
  std::string replaced_by;
  int64_t chunks = 1;
  std::string content_type;
  std::string meta;
  // `refusal`, or else CheckOperatorAction (a release or cancel at `now`).
  absl::Status Actionable(absl::Time now) const;
  // `refusal`, or else CheckReplaceable.
  absl::Status Replaceable() const;
  // What a new send of it needs, with its stored body (the first chunk of
  // a chunked one).
  Undelivered ToUndelivered(std::string payload) const;
};
Original NoOriginal();

// The OPERATOR_ACTION entry of `a` on the message `r`; a redirect's or
// resend's names the `replacement` in its detail.
MessageEvent ActionEvent(const Row& r, const OperatorAction& a, const NewMessage* replacement = nullptr);
// INVALID_ARGUMENT QUERY_INVALID for a page size out of 1..1000.
absl::Status CheckQuery(const MessageQuery& q);

// A Receive stream's workflow filter as claims take it (ClaimRequest::
// workflows): ",A,B," ("" for none), which the stores' SQL searches for
// ",<workflow>,". INVALID_ARGUMENT WORKFLOW_INVALID for more than 50, or
// one that is not a workflow.
inline constexpr int kMaxWorkflowFilter = 50;
absl::StatusOr<std::string> WorkflowList(const google::protobuf::RepeatedPtrField<std::string>& workflows);

// A claimed or fetched message as the lifecycle rules need it.
Row RowOf(const StoredDelivery& d, const OrgCode& recipient);

// What a sweep does with one expired message: its EXPIRED event and the
// non-delivery report to its sender, each when there is one. A report needs
// a data message (reports are never reported on) and a sender to go to.
struct ExpiryPlan {
  std::optional<MessageEvent> event;
  std::optional<NewMessage> report;
};
ExpiryPlan PlanExpiry(const Row& expired, const SweepRequest& req);

// Sweeps are bounded: each query selects up to max_items + 1 rows; this
// many are processed, and `more` is set when there were more.
inline int SweepBatch(int rows_selected, int max_items, bool& more) {
  if (rows_selected > max_items) more = true;
  return rows_selected < max_items ? rows_selected : max_items;
}

}  // namespace carebroker::mailbox
