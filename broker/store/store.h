// Store: the durable home of every message, mailbox, idempotency key and
// tracking record. One interface, several implementations (SQLite embedded;
// PostgreSQL shared by several broker replicas), one conformance suite
// (tests/conformance) that every implementation must pass.
//
// Threading and completion. Every operation is asynchronous: it is queued
// and its callback runs exactly once, on a thread owned by the store, after
// the operation's effects are durable (for writes) or known (for reads).
// Callbacks must not block; they may start further store operations.
// Concurrent operations share commits (group commit): many Appends submitted
// together cost one transaction and one fsync. All methods are thread-safe.
//
// Errors. A status passed to a callback is one of:
//   OK                   done (per-item outcomes are in the result);
//   UNAVAILABLE          the store could not commit (I/O, full disk, lost
//                        connection); nothing of the operation took effect;
//   FAILED_PRECONDITION  the store is closed;
//   INVALID_ARGUMENT     the request broke a documented precondition.
// Per-item errors inside a result (e.g. an idempotency key reused for a
// different payload) use ALREADY_EXISTS and NOT_FOUND.
//
// Ownership. Results are owned by the callback. Nothing returned borrows
// from the store.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/sha256.h"
#include "core/types.h"
#include "carebroker/v1/audit.pb.h"
#include "carebroker/v1/consent.pb.h"
#include "carebroker/v1/exchange.pb.h"

namespace carebroker {

template <typename T>
using StoreCallback = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;

// An audit entry ready for the store: the deterministic serialisation of
// a carebroker.v1.AuditEntry without its index (the store prepends the
// index it assigns at commit, so the bytes stay canonical), and the
// entry's subject and time for searches.
struct AuditRecord {
  std::string entry;
  std::string subject;  // the entry's keyed hash of the NHS number, "" none
  absl::Time at;
  bool empty() const { return entry.empty(); }
};

// An operator's action on one undelivered message, audited as
// OPERATOR_ACTION with the operator and the justification: a release or a
// cancel (Store::ActOn) of a held message, or a redirect or resend
// (NewMessage::replaces) of a held or expired one.
struct OperatorAction {
  enum Kind { kRelease, kCancel, kRedirect, kResend };
  Kind kind = kRelease;
  MessageId id;
  OrgCode actor;  // the operator's organisation, from the certificate
  std::string justification;
  absl::Time now;
};

// A message ready to be stored; the broker has checked and minimised it.
struct NewMessage {
  // The SEND_ACCEPTED entry, written in the same commit as the message
  // (empty for broker-generated reports).
  AuditRecord audit;
  MessageId id;
  OrgCode sender;  // empty for broker-generated reports
  OrgCode recipient;
  std::string workflow;
  std::string purpose;
  std::string idempotency_key;  // empty: no idempotency
  // The key of a message accepted before this is forgotten
  // (delivery.idempotency_window): this one is then a new message.
  absl::Time key_since = absl::InfinitePast();
  std::string content_type;
  std::string local_reference;
  v1::MessageKind kind = v1::MESSAGE_KIND_DATA;
  std::string payload;
  std::string digest;  // SHA-256 of the payload as sent, before minimisation (32 bytes)
  absl::Time accepted_at;
  absl::Time expires_at;
  // Non-zero: the message is stored already delivered to this claim (a
  // Receive stream waiting for it), hidden from other claims until
  // `visible_until`, exactly as if Claim had returned it.
  uint64_t claim_token = 0;
  absl::Time visible_until;
  // For the consent re-check at delivery: the NHS number the message is
  // about ("" for none) and the policy's encoded check (policy/consent.h).
  // Cleared once the message is acknowledged, expired or withheld.
  std::string subject;
  uint32_t consent_check = 0;
  // For the same re-check, the keys of the person's local identifiers
  // (policy::PersonKeys after the NHS number), one a line; "" none.
  std::string consent_keys;
  // Transport metadata carried to the recipient unchanged (the MESH front
  // door's pass-through mex-* headers, as a JSON object); "" for none.
  std::string meta;
  // More than 1: `payload` is the first of this many chunks (MESH). The
  // message is stored UPLOADING, invisible and undeliverable, until
  // AppendChunk stores the last; its `audit` entry is written then, with
  // the digest of the whole payload. Never stored already claimed.
  uint32_t chunks = 1;
  // A CLD submission in chunks: what its first chunk leaves for the next
  // (a serialized v1::SubmissionProgress, broker/exchange/submission.h),
  // kept until the last; "" for any other message.
  std::string progress;
  // A CLD submission's ROW_RELEASED and ROW_WITHHELD entries for the rows
  // `payload` carries, written in the same commit after `audit` (also for
  // a first chunk, whose `audit` waits for the last).
  std::vector<AuditRecord> row_audit;
  // An operator's redirect or resend of an undelivered message (kind
  // kRedirect or kResend, id the original): this message is stored only if
  // the original is still replaceable (mailbox::CheckReplaceable), and in
  // the same commit the original's body is deleted, each is linked to the
  // other, and the OPERATOR_ACTION entry is written. Otherwise this one
  // answers FAILED_PRECONDITION MESSAGE_NOT_RESENDABLE. A chunked one
  // (`chunks` the original's, `payload` its first chunk) gets the original's
  // other chunks copied and is complete (claimable, its SEND_ACCEPTED entry
  // written with the whole payload's digest) in that commit.
  std::optional<OperatorAction> replaces;
};

// A message lifecycle event the store itself records (deliveries, acks,
// expiry, withholding), inside the transaction that makes it happen.
struct MessageEvent {
  v1::AuditEvent event = v1::AUDIT_EVENT_UNSPECIFIED;
  MessageId id;
  OrgCode sender;
  OrgCode recipient;
  std::string workflow;
  std::string purpose;
  std::string nhs_number;  // "" when the message is about no person
  uint32_t delivery_count = 0;
  std::string reason;  // withholding, holding
  std::string code;    // holding on a recipient's rejection: its code
  absl::Time at;
  // An operator's action: the operator's organisation and justification
  // (`reason` names the action).
  std::string actor;
  std::string justification;
  std::string detail;  // a redirect's or resend's new message (AuditEntry.detail)
};

// Turns lifecycle events into entries. Called on the store's writer thread
// inside a transaction: must be fast and must not call the store.
class AuditRecorder {
 public:
  virtual ~AuditRecorder() = default;
  virtual AuditRecord Record(const MessageEvent& event) const = 0;
};

// An entry as stored.
struct AuditRow {
  uint64_t index = 0;
  std::string entry;      // the bytes the leaf hash covers
  std::string leaf_hash;  // as computed at append (32 bytes)
};

struct AuditRead {
  uint64_t from = 0;     // first index
  int max = 1000;        // 1..100000
  std::string subject;   // only entries with this subject; "" all
  bool hashes_only = false;  // leave `entry` empty (rebuilding the tree)
};

// The answer to one appended message.
struct AppendReceipt {
  MessageId id;             // the first id stored under this idempotency key
  absl::Time accepted_at;   // when that first message was accepted
  bool duplicate = false;   // true: nothing new was stored
  int64_t seq = 0;          // the new message's place in the store (0 for a duplicate)
};

// Identifies one Receive stream's claims. Unique across replicas.
using ClaimToken = uint64_t;

struct ClaimRequest {
  OrgCode recipient;
  int max = 1;                // 1..10000
  absl::Time now;
  absl::Time visible_until;   // claimed messages are hidden until then
  ClaimToken token = 0;
  // Chunked messages too (handed over without their payload); otherwise
  // only messages sent whole.
  bool chunked = false;
  // More than 0: a message already delivered this many times is held
  // (MAX_ATTEMPTS_REACHED) instead of claimed (delivery.max_attempts).
  uint32_t max_attempts = 0;
  // Only these workflows, as mailbox::WorkflowList writes them (",A,B,");
  // "" for every workflow.
  std::string workflows;
};

// A message handed to a recipient.
struct StoredDelivery {
  MessageId id;
  OrgCode sender;
  std::string workflow;
  std::string purpose;
  std::string content_type;
  std::string local_reference;
  v1::MessageKind kind = v1::MESSAGE_KIND_DATA;
  std::string payload;
  absl::Time accepted_at;
  uint32_t delivery_count = 0;  // including this one
  std::string subject;          // as stored (NewMessage)
  uint32_t consent_check = 0;
  std::string consent_keys;     // as stored (NewMessage)
  // The message's place in the store: claims return first deliveries in
  // (accepted_at, seq) order.
  int64_t seq = 0;
  std::string meta;     // as stored (NewMessage)
  uint32_t chunks = 1;  // a chunked message's chunk count; `payload` is the one fetched
};

// A page of a recipient's inbox (the MESH front door's list): messages
// waiting or delivered and not yet acknowledged, expired or withheld, in
// seq order.
struct InboxQuery {
  OrgCode recipient;
  int64_t after_seq = 0;  // the last seq of the page before; 0 from the start
  int max = 500;          // 1..10000
  absl::Time now;         // messages past their expiry are left out
};

struct InboxEntry {
  MessageId id;
  std::string workflow;
  int64_t seq = 0;
  std::string meta;     // as stored (NewMessage)
  uint32_t chunks = 1;  // a chunked message's chunk count; `payload` is the one fetched
};

struct InboxPage {
  std::vector<InboxEntry> entries;
  uint64_t total = 0;  // every such message in the inbox, not only this page
};

// One message of a recipient's, by id (the MESH front door's download).
struct FetchRequest {
  OrgCode recipient;
  MessageId id;
  absl::Time now;
  // Count and audit a delivery (a download's first chunk); read
  // `chunk`'s payload (1-based; a message sent whole has one). HEAD:
  // neither.
  bool deliver = true;
  bool body = true;
  uint32_t chunk = 1;
  // 0 or more: only this piece of `chunk` (mailbox::kPieceBytes each; a
  // message sent whole is one piece, its whole body), and Fetched::more
  // says whether another follows. -1: the whole chunk.
  int piece = -1;
  // As ClaimRequest's: a delivery that would be the one after this many is
  // refused and the message held instead (Fetched::status HELD).
  uint32_t max_attempts = 0;
};

// One more chunk of a chunked message, from its sender.
struct ChunkUpload {
  OrgCode sender;
  MessageId id;
  uint32_t n = 0;      // 2..total
  uint32_t total = 0;  // as the first chunk announced
  std::string data;
  absl::Time now;
  // A CLD submission's chunk, minimised from what the sender sent: taken
  // only while `after` chunks are stored (the count `progress` was read at,
  // ReadChunkProgress), so two uploads of one chunk cannot both advance it;
  // `progress` replaces the stored one. The last chunk's `audit_patch` (a
  // serialized v1::AuditEntry) is merged into the held SEND_ACCEPTED entry,
  // its payload digest the one as sent. Empty for any other message.
  std::string progress;
  uint32_t after = 0;
  std::string audit_patch;
  // The entries of the rows this chunk carries, written in its commit (as
  // NewMessage::row_audit).
  std::vector<AuditRecord> row_audit;
};

// What a chunked message's next chunk continues from.
struct ChunkProgress {
  uint32_t received = 0;  // chunks stored
  std::string progress;   // NewMessage::progress as last stored; "" for a message carried whole
};

struct ChunkStored {
  bool complete = false;  // the last chunk: the message is now in its recipient's inbox
};

struct Fetched {
  // ACCEPTED or DELIVERED: `delivery` holds the message (its payload empty
  // unless delivered); otherwise the message is gone (ACKNOWLEDGED,
  // EXPIRED, including one past its expiry not yet swept, WITHHELD or
  // HELD) and only `delivery`'s metadata is filled in.
  v1::MessageStatus status = v1::MESSAGE_STATUS_UNSPECIFIED;
  StoredDelivery delivery;
  bool more = false;  // a piece was asked for and `chunk` has another after it
};

// One mailbox's backlog: messages accepted and not yet acknowledged,
// expired or withheld (waiting, or delivered and unacknowledged).
struct MailboxStat {
  OrgCode recipient;
  uint64_t depth = 0;
  absl::Time oldest_accepted_at;  // of that backlog; InfinitePast when depth is 0
  uint64_t held = 0;              // held messages whose bodies are kept (an operator may release them)
};

// An operator's search of every mailbox (metadata only). Empty fields and
// UNSPECIFIED match anything.
struct MessageQuery {
  OrgCode sender;
  OrgCode recipient;
  std::string workflow;
  v1::MessageStatus status = v1::MESSAGE_STATUS_UNSPECIFIED;
  absl::Time from = absl::InfinitePast();    // accepted at or after
  absl::Time until = absl::InfiniteFuture();  // accepted before
  std::string local_reference;
  int max = 100;          // 1..1000
  int64_t after_seq = 0;  // the last seq of the page before
};

// One message as an operator sees it: never its content.
struct MessageSummary {
  int64_t seq = 0;
  MessageId id;
  OrgCode sender;
  OrgCode recipient;
  std::string workflow;
  std::string local_reference;
  v1::MessageStatus status = v1::MESSAGE_STATUS_UNSPECIFIED;
  absl::Time accepted_at;
  absl::Time expires_at;
  uint32_t delivery_count = 0;
  std::string reason;          // why withheld or held
  std::string rejection_code;  // a recipient's rejection
  uint64_t bytes = 0;          // the stored body (0 once purged)
  MessageId replaced_by;       // an operator's redirect or resend of it ("" none)
};

struct StoreGauges {
  int connections = 0;     // database connections held (the embedded store: its writer)
  int connections_up = 0;  // of those, usable now (PostgreSQL: not lost and awaiting a reconnect)
  int64_t queued = 0;      // operations waiting for a connection
};

struct AckResult {
  std::vector<MessageId> acknowledged;  // now or earlier
  std::vector<MessageId> not_found;     // not in this recipient's mailbox
  std::vector<MessageId> expired;       // expired before the ack arrived
};

struct TrackInfo {
  MessageId id;
  OrgCode sender;
  OrgCode recipient;
  std::string workflow;
  std::string local_reference;
  v1::MessageStatus status = v1::MESSAGE_STATUS_UNSPECIFIED;
  absl::Time accepted_at;
  std::optional<absl::Time> first_delivered_at;
  std::optional<absl::Time> acknowledged_at;
  std::optional<absl::Time> expired_at;
  absl::Time expires_at;
  uint32_t delivery_count = 0;
  bool body_purged = false;
  std::optional<absl::Time> withheld_at;
  std::string withheld_reason;
  std::optional<absl::Time> held_at;
  std::string held_reason;  // REJECTED_BY_RECIPIENT or MAX_ATTEMPTS_REACHED
  std::string rejection_code;
  std::string rejection_text;
  // An operator's redirect or resend: the message this one replaces, and
  // the one that replaced it ("" for none).
  MessageId replaces;
  MessageId replaced_by;
};

// An undelivered message an operator may redirect or resend, as stored
// (Store::ReadUndelivered): what a new send of it needs.
struct Undelivered {
  MessageId id;
  OrgCode sender;
  OrgCode recipient;
  std::string workflow;
  std::string purpose;
  std::string content_type;
  std::string local_reference;
  std::string subject;  // the person it was decided for ("" none)
  std::string meta;
  std::string payload;  // a chunked message's first chunk
  uint32_t chunks = 1;  // more than 1: the rest are copied by the store (NewMessage::replaces)
  v1::MessageStatus status = v1::MESSAGE_STATUS_UNSPECIFIED;  // HELD or EXPIRED
  std::string consent_keys;  // the person's local identifiers' keys it was decided under (NewMessage)
};

// A recipient's refusal of one message for good (Store::Reject).
struct Rejection {
  OrgCode recipient;
  MessageId id;
  std::string code;  // mailbox::CheckRejection
  std::string text;
  absl::Time now;
};

struct SweepRequest {
  absl::Time now;
  // Bodies are purged of messages acknowledged or expired at or before
  // this, and of held ones whose expiry was at or before it (now less the
  // retention period).
  absl::Time purge_before;
  // Lifetime of the non-delivery reports this sweep creates.
  absl::Duration report_expiry;
  int max_items = 10000;  // bound on work per sweep; call again if `more`
};

struct SweepResult {
  int expired = 0;
  std::map<std::string, int> expired_by_workflow;  // the same, by workflow (the metrics' label)
  int reports = 0;   // non-delivery reports created (one per expired data message)
  int purged = 0;
  int forgotten = 0;  // single-use credentials past their time (UseOnce)
  int abandoned = 0;  // chunked uploads never completed before expiry (deleted)
  bool more = false;  // the bound was hit; more work is due
};

class Store {
 public:
  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Stores `msgs` in one atomic, durable commit and answers one result per
  // message, in order. A message whose (sender, idempotency_key) is already
  // stored with the same digest answers the first receipt with
  // duplicate=true and stores nothing; with another digest it answers
  // ALREADY_EXISTS. A key first stored before the message's key_since is
  // forgotten (taken off the first message) and the message stored anew. Messages become claimable by their recipient at once.
  virtual void Append(std::vector<NewMessage> msgs,
                      StoreCallback<std::vector<absl::StatusOr<AppendReceipt>>> done) = 0;

  // Claims up to `max` visible, unexpired messages from the recipient's
  // mailbox, oldest first, hiding them until `visible_until` and marking
  // them delivered. An empty result means nothing is visible now. A
  // chunked message (only when `chunked` asks for them) comes without its
  // payload (StoredDelivery::chunks says how many to Fetch).
  virtual void Claim(ClaimRequest req, StoreCallback<std::vector<StoredDelivery>> done) = 0;

  // Acknowledges messages in the recipient's own mailbox. Acknowledging
  // twice is not an error. Another organisation's message is `not_found`.
  virtual void Ack(OrgCode recipient, std::vector<MessageId> ids, absl::Time now,
                   StoreCallback<AckResult> done) = 0;

  // Makes the listed messages, still claimed under `token` and not yet
  // acknowledged, visible again now (a Receive stream ended).
  virtual void Release(OrgCode recipient, ClaimToken token, std::vector<MessageId> ids,
                       absl::Time now, StoreCallback<int> done) = 0;

  // Keeps a claimed, unacknowledged message of the recipient's hidden until
  // at least `until` (its download is still running); answers whether it
  // was claimed. It need not be durable (SQLite commits it without a sync):
  // losing it only lets the message be delivered again, as at-least-once
  // delivery allows.
  virtual void Hide(OrgCode recipient, MessageId id, absl::Time until, StoreCallback<bool> done) = 0;

  // Withholds messages in the recipient's mailbox that are not yet
  // acknowledged, expired or withheld (consent changed while they waited):
  // they are never delivered, their bodies are deleted, Track shows
  // WITHHELD with `reason`, and each data message's sender gets a
  // non-delivery report with that reason (living as long as the message
  // would have). Answers how many were withheld.
  virtual void Withhold(OrgCode recipient, std::vector<MessageId> ids, std::string reason, absl::Time now,
                        StoreCallback<int> done) = 0;

  // Holds a message of the recipient's that is waiting or delivered (not
  // yet acknowledged, expired or withheld): it is never claimed or fetched
  // again, its body is kept until it would have expired, Track shows HELD
  // (REJECTED_BY_RECIPIENT with the code and text), its HELD event is
  // recorded and its sender gets a non-delivery report, as a withholding
  // does. Answers the message's status afterwards: HELD, or the one it
  // had, unchanged. NOT_FOUND MESSAGE_NOT_FOUND for an id not in the
  // recipient's mailbox (or still uploading).
  virtual void Reject(Rejection rejection, StoreCallback<v1::MessageStatus> done) = 0;

  // Messages of any mailbox matching `query`, in seq order, a page at a time.
  virtual void FindMessages(MessageQuery query, StoreCallback<std::vector<MessageSummary>> done) = 0;

  // An operator's release or cancel of a held message whose body is kept,
  // with its OPERATOR_ACTION entry in the same commit: release makes it
  // waiting again (delivered afresh, with delivery.max_attempts counted
  // anew); cancel ends it (CANCELLED, body deleted). Answers its status
  // after. NOT_FOUND MESSAGE_NOT_FOUND for an unknown id; FAILED_PRECONDITION
  // MESSAGE_NOT_HELD for a message not held, held past its expiry, or
  // redirected or resent already.
  virtual void ActOn(OperatorAction action, StoreCallback<v1::MessageStatus> done) = 0;

  // Any organisation's held or expired message with its body, for an
  // operator's redirect or resend (NewMessage::replaces). NOT_FOUND
  // MESSAGE_NOT_FOUND for an unknown id; FAILED_PRECONDITION
  // MESSAGE_NOT_RESENDABLE for one that cannot be replaced
  // (mailbox::CheckReplaceable).
  virtual void ReadUndelivered(MessageId id, StoreCallback<Undelivered> done) = 0;

  // Appends one consent change durably, with its audit entry in the same
  // commit; answers it with its seq assigned.
  virtual void AppendConsent(v1::ConsentChange change, AuditRecord audit, StoreCallback<v1::ConsentChange> done) = 0;

  // ---- The audit log. Entries get consecutive indexes from 0 in commit
  // order. Appends, and every operation above that records an entry,
  // complete only once the entry is durable; if an entry cannot be
  // written, nothing of its operation is stored (UNAVAILABLE).

  // Appends entries durably; answers the index of the first.
  virtual void AppendAudit(std::vector<AuditRecord> records, StoreCallback<uint64_t> done) = 0;

  // Durable entries in index order (never one whose commit is not yet on disk).
  virtual void ReadAudit(AuditRead req, StoreCallback<std::vector<AuditRow>> done) = 0;

  // Signed tree heads, kept for ever; read oldest first.
  virtual void AppendTreeHead(v1::SignedTreeHead head, StoreCallback<bool> done) = 0;
  virtual void ReadTreeHeads(StoreCallback<std::vector<v1::SignedTreeHead>> done) = 0;

  // Records message lifecycle events with `recorder` (not owned; must
  // outlive the store). Set once, before any other call. Without one, no
  // lifecycle entries are written (store tests).
  virtual void SetAuditRecorder(const AuditRecorder* recorder) = 0;

  // Called on a store thread, in index order, with each run of entries
  // once durable (before the operations that wrote them complete). Set
  // once, before any other call. Must not block or call the store.
  using AuditListener = std::function<void(uint64_t first_index, const std::vector<std::string>& leaf_hashes)>;
  virtual void SetAuditListener(AuditListener listener) = 0;

  // Consent changes in the order stored: one person's, or everyone's when
  // `nhs_number` is empty (to rebuild the in-memory book at start).
  virtual void ReadConsent(std::string nhs_number, StoreCallback<std::vector<v1::ConsentChange>> done) = 0;

  // Tracking for a message the caller sent or received; NOT_FOUND for any
  // other (so ids of other organisations' messages reveal nothing).
  virtual void Track(OrgCode caller, MessageId id, StoreCallback<TrackInfo> done) = 0;
  // The same for the message `sender` sent with idempotency key `key` at
  // or after `since` (the idempotency window); NOT_FOUND for a key it
  // never sent with, or only before.
  virtual void TrackByKey(OrgCode sender, std::string key, absl::Time since, StoreCallback<TrackInfo> done) = 0;

  // The recipient's inbox, a page at a time (InboxQuery).
  virtual void Inbox(InboxQuery query, StoreCallback<InboxPage> done) = 0;

  // One message of the recipient's by id; NOT_FOUND (MESSAGE_NOT_FOUND) for
  // an id that is not in its mailbox. With `deliver`, a message that can be
  // delivered is marked delivered (as a claim does, without hiding it) and
  // its DELIVERED event recorded.
  virtual void Fetch(FetchRequest req, StoreCallback<Fetched> done) = 0;

  // Stores chunk `n` of the sender's chunked message (mailbox::CheckChunk
  // says which may come); the last makes the message accepted and
  // claimable, with its SEND_ACCEPTED entry. NOT_FOUND MESSAGE_NOT_FOUND
  // for an id that is not the sender's.
  virtual void AppendChunk(ChunkUpload chunk, StoreCallback<ChunkStored> done) = 0;

  // How far the sender's chunked message has come (before its next chunk
  // is minimised); NOT_FOUND MESSAGE_NOT_FOUND as AppendChunk.
  virtual void ReadChunkProgress(OrgCode sender, MessageId id, StoreCallback<ChunkProgress> done) = 0;

  // Records a single-use credential (the hash of a MESH token) until
  // `forget_at`: true when it was not recorded before, false when it was
  // (replicas sharing a store see each other's). Sweep forgets expired ones.
  virtual void UseOnce(std::string key, absl::Time forget_at, StoreCallback<bool> done) = 0;

  // Expires unacknowledged messages whose time is up (creating one
  // non-delivery report in the sender's mailbox for each, in the same
  // commit; their bodies are kept for an operator's resend) and purges the
  // bodies of acknowledged, expired and held messages past retention.
  virtual void Sweep(SweepRequest req, StoreCallback<SweepResult> done) = 0;

  // Called (on a store thread) with a recipient each time messages become
  // claimable in its mailbox, after they are durable and before the appends
  // that made them are answered. Set once, before any
  // other call. Must not block.
  using ArrivalListener = std::function<void(const OrgCode& recipient)>;
  virtual void SetArrivalListener(ArrivalListener listener) = 0;

  // Called (on a store thread) with each consent change once durable, in
  // seq order: this process's own before their AppendConsent completes,
  // and, on a store shared by several replicas, the others' as they are
  // heard of. A change may be announced again (after ReadConsent returned
  // it, or at a reconnect): seq tells. Set once, before any other call.
  // Must not block or call the store.
  using ConsentListener = std::function<void(const v1::ConsentChange& change)>;
  virtual void SetConsentListener(ConsentListener listener) = 0;

  // Called (on a store thread) with how long each commit that had to reach
  // disk took to get there: the embedded store's sync of its write-ahead
  // log, PostgreSQL's COMMIT (the server's WAL flush and the round trip).
  // Set once, before any other call. Must not block.
  using CommitObserver = std::function<void(absl::Duration)>;
  virtual void SetCommitObserver(CommitObserver observer) = 0;

  // The store's connections and queue, for metrics. Cheap; any thread.
  virtual StoreGauges Gauges() const = 0;

  // Stops accepting operations, finishes queued ones, and waits for them.
  // Later calls answer FAILED_PRECONDITION. Idempotent; also run by the
  // destructor.
  virtual void Close() = 0;

  // Whether the store can take writes now, for readiness: the embedded
  // store's folder takes new data; PostgreSQL answers and is not a
  // read-only standby. UNAVAILABLE STORE_UNAVAILABLE naming why not.
  // The embedded store answers at once, off its write queue; PostgreSQL's
  // check is a query on a pooled connection (callers bound the wait).
  virtual void CheckWritable(StoreCallback<bool> done) = 0;

  // Every mailbox with a backlog (for metrics), in recipient order.
  virtual void MailboxStats(StoreCallback<std::vector<MailboxStat>> done) = 0;

 protected:
  Store() = default;
};

// The non-delivery report stored for an expired message (shared by every
// implementation so reports are identical whatever the store).
// `reason`: NOT_ACKNOWLEDGED_BEFORE_EXPIRY, or why a delivery was withheld.
NewMessage MakeNonDeliveryReport(const TrackInfo& expired, absl::Time now, absl::Duration expiry,
                                 absl::string_view reason = "NOT_ACKNOWLEDGED_BEFORE_EXPIRY");

// The bytes an audit entry is stored and hashed as: `entry` (a serialised
// AuditEntry without its index) with `index` put first as field 1, where
// the deterministic serialisation puts it (index 0 is omitted, as proto3 does).
std::string IndexedAuditEntry(uint64_t index, absl::string_view entry);

// A stored tree head's bytes as a SignedTreeHead, empty when they do not
// parse (so offline verification names it). Shared by every implementation's
// offline reader.
v1::SignedTreeHead ParseStoredHead(absl::string_view serialized);

}  // namespace carebroker
