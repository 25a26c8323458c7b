#include "broker/store/pg_store.h"

#include <algorithm>
#include <deque>
#include <random>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "audit/merkle.h"
#include "core/ids.h"
#include "core/time.h"
#include "core/status.h"
#include "core/log.h"
#include "core/reasons.h"
#include "broker/store/mailbox_rules.h"
#include "broker/store/op_queue.h"
#include "broker/store/pg_schema.h"

namespace carebroker {
namespace {

using pg::Param;

constexpr size_t kMaxOpsPerCommit = 1024;
constexpr size_t kAuditRowsPerInsert = 1000;
constexpr size_t kPreparedAuditRows = 16;
constexpr int kCatchUpRows = 10000;
// Consent changes take this advisory lock before their insert, so their seq
// is in commit order ("cbconsnt").
constexpr int64_t kConsentLock = 0x6362636f6e736e74;
constexpr char kChannel[] = "carebroker";
constexpr size_t kMaxNotifyPayload = 7000;  // PostgreSQL's limit is 8000 bytes

Param Time(absl::Time t) { return Param::Int(Micros(t)); }
Param TextOrNull(absl::string_view v) { return v.empty() ? Param::Null() : Param::Text(v); }

// Columns 1 to 7 of row `i` of kWithhold, kRejectSelect and kActionSelect:
// sender, workflow, purpose, subject, kind, local_ref, accepted_at.
mailbox::Row RowColumns(const pg::Result& r, int i, const MessageId& id, const OrgCode& recipient) {
  return mailbox::Row{.id = id,
                      .sender = OrgCode(r.Str(i, 1)),
                      .recipient = recipient,
                      .workflow = r.Str(i, 2),
                      .purpose = r.Str(i, 3),
                      .subject = mailbox::SubjectOf(r.Str(i, 4)),
                      .kind = static_cast<v1::MessageKind>(r.Int(i, 5)),
                      .local_reference = r.Str(i, 6),
                      .accepted_at = FromMicros(r.Int(i, 7)),
                      .consent_keys = mailbox::ConsentKeysOf(r.Str(i, 4))};
}

// Every failed statement fails its transaction: the store answers
// UNAVAILABLE, as the embedded store does for a failed commit.
absl::Status Unavailable(const absl::Status& s) {
  return Error(absl::StatusCode::kUnavailable, reason::kStoreUnavailable, absl::StrCat("store: ", s.message()));
}

absl::Status StoreClosed() { return StoreClosedError(); }

std::vector<std::string> Strings(const std::vector<MessageId>& ids) {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (const MessageId& id : ids) out.push_back(id.str());
  return out;
}

std::string Int64Array(const std::vector<int64_t>& v) {
  std::string out = "{";
  for (size_t i = 0; i < v.size(); ++i) absl::StrAppend(&out, i > 0 ? "," : "", v[i]);
  out.push_back('}');
  return out;
}

// One transaction's state, built while its operations run.
struct Txn {
  pg::Connection& conn;
  std::vector<AuditRecord> audit;  // written last, under the audit_next lock
  bool needs_audit_base = false;   // an AppendAudit asks for its first index
  absl::flat_hash_set<OrgCode> arrivals;
  bool consent_locked = false;
  bool consent = false;  // consent changes were stored
};

// The outcome of one transaction.
struct Outcome {
  absl::Status status;
  uint64_t audit_base = 0;          // index of the transaction's first entry
  std::vector<std::string> leaves;  // leaf hashes of its entries
  absl::flat_hash_set<OrgCode> arrivals;
  bool consent = false;
};

class Op {
 public:
  virtual ~Op() = default;
  // Runs inside the open transaction; a non-OK status fails it. May run
  // again (alone) when another operation failed the shared transaction.
  virtual absl::Status Run(Txn& t) = 0;
  virtual void Finish(const absl::Status& batch, uint64_t audit_base) = 0;
  // Consent changes run first in a transaction: their lock is then taken
  // before any row lock, and row locks before the audit lock, so
  // transactions never wait on each other in a circle.
  virtual bool consent() const = 0;
};

template <typename T>
class OpImpl final : public Op {
 public:
  using Fix = absl::AnyInvocable<void(T&, uint64_t audit_base)>;
  OpImpl(absl::AnyInvocable<absl::StatusOr<T>(Txn&)> run, StoreCallback<T> done, Fix fix, bool consent)
      : run_(std::move(run)), result_(std::move(done)), fix_(std::move(fix)), consent_(consent) {}
  absl::Status Run(Txn& t) override { return result_.Keep(run_(t)); }
  void Finish(const absl::Status& batch, uint64_t audit_base) override {
    if (T* value = result_.value(); batch.ok() && fix_ && value != nullptr) fix_(*value, audit_base);
    result_.Finish(batch);
  }
  bool consent() const override { return consent_; }

 private:
  absl::AnyInvocable<absl::StatusOr<T>(Txn&)> run_;
  OpResult<T> result_;
  Fix fix_;
  bool consent_;
};

// ---- Statements (prepared once per connection).

constexpr const char* kInsertMessage = R"sql(
WITH m AS (
  INSERT INTO messages (id, sender, recipient, workflow, purpose, idem_key, content_type, local_ref, kind, digest,
                        state, accepted_at, expires_at, visible_at, claim_token, deliveries, first_delivered_at,
                        subject, consent_check, meta, chunks, pending_audit, progress)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $21, $22, $23, $24)
  ON CONFLICT (sender, idem_key) WHERE idem_key IS NOT NULL DO NOTHING
  RETURNING seq),
whole AS (INSERT INTO bodies (seq, body) SELECT seq, $20::bytea FROM m WHERE $22 = 1)
SELECT seq FROM m)sql";

constexpr const char* kFindIdem = "SELECT id, accepted_at, digest FROM messages WHERE sender = $1 AND idem_key = $2";
constexpr const char* kForgetKey = "UPDATE messages SET idem_key = NULL WHERE sender = $1 AND idem_key = $2";

// A message already delivered max_attempts ($7, 0 for no limit) times is
// held ($8 its reason) instead of claimed; it comes back with `held` set.
constexpr const char* kClaim = R"sql(
WITH pick AS (
  SELECT seq, visible_at AS was, ($7 > 0 AND deliveries - attempt_base >= $7) AS spent FROM messages
  WHERE recipient = $1 AND state < 3 AND visible_at <= $2 AND expires_at > $2 AND (chunks = 1 OR $6)
    AND ($9 = '' OR position(',' || workflow || ',' in $9) > 0)
  ORDER BY visible_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED),
upd AS (
  UPDATE messages m SET state = 2, visible_at = $4, claim_token = $5, deliveries = m.deliveries + 1,
                        first_delivered_at = coalesce(m.first_delivered_at, $2)
  FROM pick WHERE m.seq = pick.seq AND NOT pick.spent
  RETURNING m.seq, pick.was, m.id, m.sender, m.workflow, m.purpose, m.content_type, m.local_ref, m.kind,
            m.accepted_at, m.deliveries, m.subject, m.consent_check, m.chunks, m.expires_at),
held AS (
  UPDATE messages m SET state = 7, held_at = $2, held_reason = $8, claim_token = NULL
  FROM pick WHERE m.seq = pick.seq AND pick.spent
  RETURNING m.seq, pick.was, m.id, m.sender, m.workflow, m.purpose, m.content_type, m.local_ref, m.kind,
            m.accepted_at, m.deliveries, m.subject, m.consent_check, m.chunks, m.expires_at)
SELECT upd.*, b.body, false FROM upd LEFT JOIN bodies b ON b.seq = upd.seq
UNION ALL SELECT held.*, NULL::bytea, true FROM held
ORDER BY 2, 1)sql";

constexpr const char* kAck = R"sql(
WITH old AS (
  SELECT seq, id, state, sender, workflow, purpose, subject, kind FROM messages
  WHERE id = ANY($1::text[]) AND recipient = $2 FOR UPDATE),
upd AS (
  UPDATE messages m SET state = 3, acked_at = $3, claim_token = NULL, subject = NULL
  FROM old WHERE m.seq = old.seq AND (old.state < 3 OR old.state = 7))
SELECT id, state, sender, workflow, purpose, subject, kind FROM old)sql";

constexpr const char* kRelease =
    "UPDATE messages SET visible_at = $4, claim_token = NULL "
    "WHERE id = ANY($1::text[]) AND recipient = $2 AND claim_token = $3 AND state < 3";

constexpr const char* kHide =
    "UPDATE messages SET visible_at = GREATEST(visible_at, $3) "
    "WHERE id = $1 AND recipient = $2 AND claim_token IS NOT NULL AND state < 3";

constexpr const char* kWithhold = R"sql(
WITH old AS (
  SELECT seq, id, sender, workflow, purpose, subject, kind, local_ref, accepted_at, expires_at FROM messages
  WHERE id = ANY($1::text[]) AND recipient = $2 AND state < 3 FOR UPDATE),
upd AS (
  UPDATE messages m SET state = 5, withheld_at = $3, withheld_reason = $4, claim_token = NULL, purged = true,
                        subject = NULL
  FROM old WHERE m.seq = old.seq),
gone AS (DELETE FROM bodies b USING old WHERE b.seq = old.seq),
gone_chunks AS (DELETE FROM chunks c USING old WHERE c.seq = old.seq)
SELECT id, sender, workflow, purpose, subject, kind, local_ref, accepted_at, expires_at FROM old)sql";

constexpr const char* kTrack =
    "SELECT id, sender, recipient, workflow, local_ref, state, accepted_at, first_delivered_at, acked_at, "
    "expired_at, expires_at, deliveries, purged, withheld_at, withheld_reason, held_at, held_reason, reject_code, "
    "reject_text, replaces, replaced_by FROM messages "
    "WHERE id = $1 AND (sender = $2 OR recipient = $2)";

constexpr const char* kInboxPage =
    "SELECT seq, id, workflow, meta FROM messages WHERE recipient = $1 AND state < 3 AND expires_at > $2 AND seq > $3 "
    "ORDER BY seq LIMIT $4";
constexpr const char* kInboxCount =
    "SELECT count(*) FROM messages WHERE recipient = $1 AND state < 3 AND expires_at > $2";
constexpr const char* kFetch = R"sql(
SELECT seq, id, sender, workflow, purpose, content_type, local_ref, kind, accepted_at, deliveries, subject,
       consent_check, state, expires_at, meta, chunks, claim_token IS NOT NULL, visible_at,
       deliveries - attempt_base FROM messages
WHERE id = $1 AND recipient = $2)sql";
constexpr const char* kMailboxStats = R"sql(
SELECT recipient, sum(depth), min(oldest), sum(held) FROM (
  SELECT recipient, count(*) AS depth, min(accepted_at) AS oldest, 0 AS held FROM messages WHERE state < 3
  GROUP BY recipient
  UNION ALL
  SELECT recipient, 0, NULL, count(*) FROM messages WHERE state = 7 AND NOT purged GROUP BY recipient) s
GROUP BY recipient ORDER BY recipient)sql";
constexpr const char* kFindMessages = R"sql(
SELECT seq, id, sender, recipient, workflow, local_ref, state, accepted_at, expires_at, deliveries,
       coalesce(held_reason, withheld_reason), reject_code,
       coalesce((SELECT length(body) FROM bodies b WHERE b.seq = m.seq),
                (SELECT sum(length(body)) FROM chunks c WHERE c.seq = m.seq), 0), replaced_by
FROM messages m
WHERE seq > $1 AND ($2 = '' OR sender = $2) AND ($3 = '' OR recipient = $3) AND ($4 = '' OR workflow = $4)
  AND ($5 = 0 OR state = $5) AND accepted_at >= $6 AND accepted_at < $7 AND ($8 = '' OR local_ref = $8)
ORDER BY seq LIMIT $9)sql";
constexpr const char* kActionSelect =
    "SELECT seq, sender, workflow, purpose, subject, kind, local_ref, accepted_at, recipient, state, purged, "
    "expires_at, replaced_by, chunks, content_type, meta FROM messages WHERE id = $1 FOR UPDATE";
constexpr const char* kReplacedUpdate =
    "WITH upd AS (UPDATE messages SET replaced_by = $2, purged = true, subject = NULL, claim_token = NULL "
    "WHERE seq = $1), b AS (DELETE FROM bodies WHERE seq = $1) DELETE FROM chunks WHERE seq = $1";
constexpr const char* kReplacesUpdate = "UPDATE messages SET replaces = $2 WHERE seq = $1";
constexpr const char* kCopyChunks =
    "INSERT INTO chunks (seq, n, part, body) SELECT $1, n, part, body FROM chunks WHERE seq = $2 AND n >= 2";
constexpr const char* kReleaseHeld =
    "UPDATE messages SET state = 1, visible_at = $2, claim_token = NULL, attempt_base = deliveries, held_at = NULL, "
    "held_reason = NULL, reject_code = NULL, reject_text = NULL WHERE seq = $1";
constexpr const char* kCancelHeld =
    "WITH upd AS (UPDATE messages SET state = 8, purged = true, subject = NULL WHERE seq = $1), "
    "b AS (DELETE FROM bodies WHERE seq = $1) DELETE FROM chunks WHERE seq = $1";
constexpr const char* kFetchDeliver =
    "UPDATE messages SET state = 2, deliveries = deliveries + $3, first_delivered_at = coalesce(first_delivered_at, $2) "
    "WHERE seq = $1 AND state < 3 RETURNING deliveries";
constexpr const char* kRejectSelect =
    "SELECT seq, sender, workflow, purpose, subject, kind, local_ref, accepted_at, expires_at, state FROM messages "
    "WHERE id = $1 AND recipient = $2 FOR UPDATE";
constexpr const char* kHold =
    "UPDATE messages SET state = 7, held_at = $2, held_reason = $3, reject_code = $4, reject_text = $5, "
    "claim_token = NULL WHERE seq = $1 AND state < 3";
constexpr const char* kBodyRead = "SELECT body FROM bodies WHERE seq = $1";
constexpr const char* kUseOnce =
    "INSERT INTO used_once (key, forget_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
constexpr const char* kForgetUsed =
    "DELETE FROM used_once WHERE key IN (SELECT key FROM used_once WHERE forget_at <= $1 LIMIT $2)";

constexpr const char* kExpireSelect =
    "SELECT seq, id, sender, recipient, workflow, local_ref, accepted_at, kind, purpose, subject FROM messages "
    "WHERE state < 3 AND expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED";
constexpr const char* kExpireUpdate =
    "UPDATE messages SET state = 4, expired_at = $2, claim_token = NULL WHERE seq = ANY($1::bigint[])";
constexpr const char* kPurgeSelect =
    "SELECT seq FROM messages WHERE state = 3 AND NOT purged AND acked_at <= $1 ORDER BY acked_at LIMIT $2 "
    "FOR UPDATE SKIP LOCKED";
constexpr const char* kPurgeHeldSelect =
    "SELECT seq FROM messages WHERE state = 7 AND NOT purged AND expires_at <= $1 ORDER BY expires_at LIMIT $2 "
    "FOR UPDATE SKIP LOCKED";
constexpr const char* kPurgeExpiredSelect =
    "SELECT seq FROM messages WHERE state = 4 AND NOT purged AND expired_at <= $1 ORDER BY expired_at LIMIT $2 "
    "FOR UPDATE SKIP LOCKED";
constexpr const char* kPurgeUpdate =
    "WITH upd AS (UPDATE messages SET purged = true, subject = NULL WHERE seq = ANY($1::bigint[])), "
    "b AS (DELETE FROM bodies WHERE seq = ANY($1::bigint[])) DELETE FROM chunks WHERE seq = ANY($1::bigint[])";
constexpr const char* kAbandon =
    "WITH gone AS (UPDATE messages SET state = 4, expired_at = $1, purged = true, pending_audit = NULL, progress = NULL "
    "WHERE seq IN (SELECT seq FROM messages WHERE state = 6 AND expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED) "
    "RETURNING seq), c AS (DELETE FROM chunks WHERE seq IN (SELECT seq FROM gone)) SELECT count(*) FROM gone";
constexpr const char* kChunkState =
    "SELECT seq, state, chunks, pending_audit, recipient, progress FROM messages WHERE id = $1 AND sender = $2 "
    "FOR UPDATE";
constexpr const char* kChunkProgress =
    "SELECT (SELECT coalesce(max(n), 0) FROM chunks c WHERE c.seq = m.seq), progress FROM messages m "
    "WHERE id = $1 AND sender = $2";
constexpr const char* kProgressUpdate = "UPDATE messages SET progress = $2 WHERE seq = $1";
constexpr const char* kChunkReceived = "SELECT coalesce(max(n), 0) FROM chunks WHERE seq = $1";
constexpr const char* kChunkDelete = "DELETE FROM chunks WHERE seq = $1 AND n = $2";
constexpr const char* kChunkInsert = "INSERT INTO chunks (seq, n, part, body) VALUES ($1, $2, $3, $4)";
// A piece at a time: libpq holds a whole result in memory.
constexpr const char* kChunkRead = "SELECT body FROM chunks WHERE seq = $1 AND n = $2 AND part = $3";
constexpr const char* kPieceRead =
    "SELECT body, EXISTS (SELECT 1 FROM chunks WHERE seq = $1 AND n = $2 AND part = $3 + 1) FROM chunks "
    "WHERE seq = $1 AND n = $2 AND part = $3";
constexpr const char* kChunkSize = "SELECT coalesce(sum(length(body)), 0) FROM chunks WHERE seq = $1 AND n = $2";
constexpr const char* kChunkComplete =
    "UPDATE messages SET state = 1, visible_at = $2, pending_audit = NULL, progress = NULL WHERE seq = $1";

constexpr const char* kAuditLock = "SELECT idx FROM audit_next FOR UPDATE";
constexpr const char* kAuditAdvance =
    "WITH u AS (UPDATE audit_next SET idx = $1 RETURNING idx) SELECT pg_notify('carebroker', $2) FROM u";

class PgStore final : public Store {
 public:
  ~PgStore() override { Close(); }

  absl::Status Open(const PgStoreOptions& o) {
    if (o.pool_size < 1 || o.pool_size > 64) {
      return InvalidArgument(reason::kStorePoolInvalid, "store pool size must be 1..64");
    }
    std::random_device rd;
    instance_ = absl::StrFormat("%08x%08x", rd(), rd());
    for (int i = 0; i < o.pool_size; ++i) {
      auto c = pg::Connection::Open(o.conninfo, o.options);
      if (!c.ok()) return c.status();
      if (i == 0) {
        if (auto m = pg::Migrate(**c); !m.ok()) return m.status();
        auto next = (*c)->Exec("SELECT (SELECT idx FROM audit_next), (SELECT coalesce(max(seq), 0) FROM consent)");
        if (!next.ok()) return Unavailable(next.status());
        absl::MutexLock audit(&audit_mu_), consent(&consent_mu_);
        audit_cursor_ = static_cast<uint64_t>(next->Int(0, 0));
        consent_cursor_ = next->Int(0, 1);
      }
      conns_.push_back(*std::move(c));
    }
    auto listen = pg::Connection::Open(o.conninfo, o.options);
    if (!listen.ok()) return listen.status();
    listen_ = *std::move(listen);
    if (auto s = listen_->ExecScript(absl::StrCat("LISTEN ", kChannel)); !s.ok()) return Unavailable(s);
    for (auto& c : conns_) {
      workers_.emplace_back([this, conn = c.get()] {
        pthread_setname_np(pthread_self(), "cb-pg");
        WorkerLoop(*conn);
      });
    }
    listener_thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "cb-pg-listen");
      ListenLoop();
    });
    return absl::OkStatus();
  }

  void Append(std::vector<NewMessage> msgs,
              StoreCallback<std::vector<absl::StatusOr<AppendReceipt>>> done) override {
    Enqueue<std::vector<absl::StatusOr<AppendReceipt>>>(
        [this, msgs = std::move(msgs)](Txn& t) { return DoAppend(t, msgs); }, std::move(done));
  }

  void Claim(ClaimRequest req, StoreCallback<std::vector<StoredDelivery>> done) override {
    if (req.max < 1 || req.max > 10000) {
      std::move(done)(InvalidArgument(reason::kClaimInvalid, "claim max must be 1..10000"));
      return;
    }
    Enqueue<std::vector<StoredDelivery>>([this, req = std::move(req)](Txn& t) { return DoClaim(t, req); },
                                         std::move(done));
  }

  void Ack(OrgCode recipient, std::vector<MessageId> ids, absl::Time now, StoreCallback<AckResult> done) override {
    Enqueue<AckResult>([this, r = std::move(recipient), ids = std::move(ids), now](Txn& t) { return DoAck(t, r, ids, now); },
                       std::move(done));
  }

  void Release(OrgCode recipient, ClaimToken token, std::vector<MessageId> ids, absl::Time now,
               StoreCallback<int> done) override {
    Enqueue<int>(
        [r = std::move(recipient), token, ids = Strings(ids), now](Txn& t) -> absl::StatusOr<int> {
          auto res = t.conn.ExecPrepared(kRelease, {Param::Text(pg::TextArray(ids)), Param::Text(r.str()),
                                                    Param::Int(static_cast<int64_t>(token)), Time(now)});
          if (!res.ok()) return Unavailable(res.status());
          const int n = static_cast<int>(res->affected());
          if (n > 0) t.arrivals.insert(r);
          return n;
        },
        std::move(done));
  }

  void Hide(OrgCode recipient, MessageId id, absl::Time until, StoreCallback<bool> done) override {
    Enqueue<bool>(
        [r = std::move(recipient), id = std::move(id), until](Txn& t) -> absl::StatusOr<bool> {
          auto res = t.conn.ExecPrepared(kHide, {Param::Text(id.str()), Param::Text(r.str()), Time(until)});
          if (!res.ok()) return Unavailable(res.status());
          return res->affected() > 0;
        },
        std::move(done));
  }

  void Withhold(OrgCode recipient, std::vector<MessageId> ids, std::string reason, absl::Time now,
                StoreCallback<int> done) override {
    Enqueue<int>([this, r = std::move(recipient), ids = std::move(ids), reason = std::move(reason), now](
                     Txn& t) { return DoWithhold(t, r, ids, reason, now); },
                 std::move(done));
  }

  void Reject(Rejection rejection, StoreCallback<v1::MessageStatus> done) override {
    Enqueue<v1::MessageStatus>([this, r = std::move(rejection)](Txn& t) { return DoReject(t, r); }, std::move(done));
  }

  void AppendConsent(v1::ConsentChange change, AuditRecord audit, StoreCallback<v1::ConsentChange> done) override {
    Enqueue<v1::ConsentChange>(
        [c = std::move(change), a = std::move(audit)](Txn& t) -> absl::StatusOr<v1::ConsentChange> {
          if (!t.consent_locked) {
            if (auto r = t.conn.ExecPrepared("SELECT pg_advisory_xact_lock($1)", {Param::Int(kConsentLock)});
                !r.ok()) {
              return Unavailable(r.status());
            }
            t.consent_locked = true;
          }
          v1::ConsentChange stored = c;
          stored.clear_seq();
          auto r = t.conn.ExecPrepared("INSERT INTO consent (nhs_number, change) VALUES ($1, $2) RETURNING seq",
                                       {Param::Text(PersonKey(stored.nhs_number(), stored.local_identifier())),
                                        Param::Bytes(stored.SerializeAsString())});
          if (!r.ok()) return Unavailable(r.status());
          stored.set_seq(r->Int(0, 0));
          if (!a.empty()) t.audit.push_back(a);
          t.consent = true;
          return stored;
        },
        std::move(done), nullptr, /*consent=*/true);
  }

  void AppendAudit(std::vector<AuditRecord> records, StoreCallback<uint64_t> done) override {
    Enqueue<uint64_t>(
        [rs = std::move(records)](Txn& t) -> absl::StatusOr<uint64_t> {
          const uint64_t offset = t.audit.size();
          for (const AuditRecord& r : rs) {
            if (!r.empty()) t.audit.push_back(r);
          }
          t.needs_audit_base = true;
          return offset;
        },
        std::move(done), [](uint64_t& offset, uint64_t base) { offset += base; });
  }

  void ReadAudit(AuditRead req, StoreCallback<std::vector<AuditRow>> done) override {
    if (req.max < 1 || req.max > 100000) {
      std::move(done)(InvalidArgument(reason::kAuditReadInvalid, "audit read max must be 1..100000"));
      return;
    }
    Enqueue<std::vector<AuditRow>>(
        [req = std::move(req)](Txn& t) -> absl::StatusOr<std::vector<AuditRow>> {
          const Param from = Param::Int(static_cast<int64_t>(req.from)), max = Param::Int(req.max);
          auto r = req.hashes_only ? t.conn.ExecPrepared(
                                         "SELECT idx, NULL, leaf FROM audit WHERE idx >= $1 ORDER BY idx LIMIT $2",
                                         {from, max})
                   : req.subject.empty()
                       ? t.conn.ExecPrepared(
                             "SELECT idx, entry, leaf FROM audit WHERE idx >= $1 ORDER BY idx LIMIT $2", {from, max})
                       : t.conn.ExecPrepared("SELECT idx, entry, leaf FROM audit WHERE subject = $3 AND idx >= $1 "
                                             "ORDER BY idx LIMIT $2",
                                             {from, max, Param::Text(req.subject)});
          if (!r.ok()) return Unavailable(r.status());
          std::vector<AuditRow> out(static_cast<size_t>(r->rows()));
          for (int i = 0; i < r->rows(); ++i) {
            out[i].index = static_cast<uint64_t>(r->Int(i, 0));
            if (!req.hashes_only) out[i].entry = r->Bytes(i, 1);
            out[i].leaf_hash = r->Bytes(i, 2);
          }
          return out;
        },
        std::move(done));
  }

  void AppendTreeHead(v1::SignedTreeHead head, StoreCallback<bool> done) override {
    Enqueue<bool>(
        [h = std::move(head)](Txn& t) -> absl::StatusOr<bool> {
          auto r = t.conn.ExecPrepared(
              "INSERT INTO tree_heads (tree_size, head) VALUES ($1, $2) ON CONFLICT (tree_size) DO NOTHING",
              {Param::Int(static_cast<int64_t>(h.tree_size())), Param::Bytes(h.SerializeAsString())});
          if (!r.ok()) return Unavailable(r.status());
          return r->affected() == 1;
        },
        std::move(done));
  }

  void ReadTreeHeads(StoreCallback<std::vector<v1::SignedTreeHead>> done) override {
    Enqueue<std::vector<v1::SignedTreeHead>>(
        [](Txn& t) -> absl::StatusOr<std::vector<v1::SignedTreeHead>> {
          auto r = t.conn.ExecPrepared("SELECT head FROM tree_heads ORDER BY tree_size");
          if (!r.ok()) return Unavailable(r.status());
          std::vector<v1::SignedTreeHead> out(static_cast<size_t>(r->rows()));
          for (int i = 0; i < r->rows(); ++i) {
            if (!out[i].ParseFromString(r->Bytes(i, 0))) {
              return Error(absl::StatusCode::kDataLoss, reason::kStoreCorrupt, "a stored tree head cannot be read");
            }
          }
          return out;
        },
        std::move(done));
  }

  void SetAuditRecorder(const AuditRecorder* recorder) override { recorder_ = recorder; }

  void SetAuditListener(AuditListener listener) override {
    absl::MutexLock l(&audit_mu_);
    audit_listener_ = std::move(listener);
  }

  void ReadConsent(std::string nhs_number, StoreCallback<std::vector<v1::ConsentChange>> done) override {
    Enqueue<std::vector<v1::ConsentChange>>(
        [n = std::move(nhs_number)](Txn& t) -> absl::StatusOr<std::vector<v1::ConsentChange>> {
          auto r = n.empty() ? t.conn.ExecPrepared("SELECT seq, change FROM consent ORDER BY seq")
                             : t.conn.ExecPrepared(
                                   "SELECT seq, change FROM consent WHERE nhs_number = $1 ORDER BY seq",
                                   {Param::Text(n)});
          if (!r.ok()) return Unavailable(r.status());
          return ConsentRows(*r);
        },
        std::move(done));
  }

  void MailboxStats(StoreCallback<std::vector<MailboxStat>> done) override {
    Enqueue<std::vector<MailboxStat>>(
        [](Txn& t) -> absl::StatusOr<std::vector<MailboxStat>> {
          auto r = t.conn.ExecPrepared(kMailboxStats);
          if (!r.ok()) return Unavailable(r.status());
          std::vector<MailboxStat> out;
          for (int i = 0; i < r->rows(); ++i) {
            out.push_back(MailboxStat{OrgCode(r->Str(i, 0)), static_cast<uint64_t>(r->Int(i, 1)),
                                      r->IsNull(i, 2) ? absl::InfinitePast() : FromMicros(r->Int(i, 2)),
                                      static_cast<uint64_t>(r->Int(i, 3))});
          }
          return out;
        },
        std::move(done));
  }

  void FindMessages(MessageQuery query, StoreCallback<std::vector<MessageSummary>> done) override {
    if (auto s = mailbox::CheckQuery(query); !s.ok()) {
      std::move(done)(s);
      return;
    }
    Enqueue<std::vector<MessageSummary>>(
        [q = std::move(query)](Txn& t) -> absl::StatusOr<std::vector<MessageSummary>> {
          auto r = t.conn.ExecPrepared(
              kFindMessages,
              {Param::Int(q.after_seq), Param::Text(q.sender.str()), Param::Text(q.recipient.str()),
               Param::Text(q.workflow), Param::Int(mailbox::StateOf(q.status)),
               Param::Int(q.from == absl::InfinitePast() ? INT64_MIN : Micros(q.from)),
               Param::Int(q.until == absl::InfiniteFuture() ? INT64_MAX : Micros(q.until)),
               Param::Text(q.local_reference), Param::Int(q.max)});
          if (!r.ok()) return Unavailable(r.status());
          std::vector<MessageSummary> out(static_cast<size_t>(r->rows()));
          for (int i = 0; i < r->rows(); ++i) {
            MessageSummary& m = out[i];
            auto status = mailbox::StatusOf(r->Int(i, 6));
            if (!status.ok()) return status.status();
            m.seq = r->Int(i, 0);
            m.id = MessageId(r->Str(i, 1));
            m.sender = OrgCode(r->Str(i, 2));
            m.recipient = OrgCode(r->Str(i, 3));
            m.workflow = r->Str(i, 4);
            m.local_reference = r->Str(i, 5);
            m.status = *status;
            m.accepted_at = FromMicros(r->Int(i, 7));
            m.expires_at = FromMicros(r->Int(i, 8));
            m.delivery_count = static_cast<uint32_t>(r->Int(i, 9));
            if (!r->IsNull(i, 10)) m.reason = r->Str(i, 10);
            if (!r->IsNull(i, 11)) m.rejection_code = r->Str(i, 11);
            m.bytes = static_cast<uint64_t>(r->Int(i, 12));
            if (!r->IsNull(i, 13)) m.replaced_by = MessageId(r->Str(i, 13));
          }
          return out;
        },
        std::move(done));
  }

  void ActOn(OperatorAction action, StoreCallback<v1::MessageStatus> done) override {
    Enqueue<v1::MessageStatus>(
        [this, a = std::move(action)](Txn& t) -> absl::StatusOr<v1::MessageStatus> {
          auto o = SelectOriginal(t, a.id);
          if (!o.ok()) return o.status();
          if (auto s = o->Actionable(a.now); !s.ok()) return s;
          RecordEvent(t, mailbox::ActionEvent(o->row, a));
          auto u = a.kind == OperatorAction::kRelease
                       ? t.conn.ExecPrepared(kReleaseHeld, {Param::Int(o->seq), Time(a.now)})
                       : t.conn.ExecPrepared(kCancelHeld, {Param::Int(o->seq)});
          if (!u.ok()) return Unavailable(u.status());
          if (a.kind == OperatorAction::kRelease) t.arrivals.insert(o->row.recipient);
          return *mailbox::StatusOf(mailbox::AfterAction(a.kind));
        },
        std::move(done));
  }

  void ReadUndelivered(MessageId id, StoreCallback<Undelivered> done) override {
    Enqueue<Undelivered>(
        [id = std::move(id)](Txn& t) -> absl::StatusOr<Undelivered> {
          auto o = SelectOriginal(t, id);
          if (!o.ok()) return o.status();
          if (auto s = o->Replaceable(); !s.ok()) return s;
          if (o->chunks > 1) {
            std::string first;
            auto read = ReadChunk(t, o->seq, 1, [&first](absl::string_view p) { first.append(p.data(), p.size()); });
            if (!read.ok()) return read;
            return o->ToUndelivered(std::move(first));
          }
          auto b = t.conn.ExecPrepared(kBodyRead, {Param::Int(o->seq)});
          if (!b.ok()) return Unavailable(b.status());
          return o->ToUndelivered(b->rows() > 0 ? b->Bytes(0, 0) : "");
        },
        std::move(done));
  }

  void Track(OrgCode caller, MessageId id, StoreCallback<TrackInfo> done) override {
    Enqueue<TrackInfo>([c = std::move(caller), id = std::move(id)](Txn& t) { return DoTrack(t, c, id); },
                       std::move(done));
  }

  void TrackByKey(OrgCode sender, std::string key, absl::Time since, StoreCallback<TrackInfo> done) override {
    Enqueue<TrackInfo>(
        [s = std::move(sender), key = std::move(key), since](Txn& t) -> absl::StatusOr<TrackInfo> {
          auto r = t.conn.ExecPrepared(kFindIdem, {Param::Text(s.str()), Param::Text(key)});
          if (!r.ok()) return Unavailable(r.status());
          if (r->rows() == 0 || mailbox::KeyForgotten(FromMicros(r->Int(0, 1)), since)) {
            return mailbox::NoMessageWithKey();
          }
          return DoTrack(t, s, MessageId(r->Str(0, 0)));
        },
        std::move(done));
  }

  void Inbox(InboxQuery query, StoreCallback<InboxPage> done) override {
    if (query.max < 1 || query.max > 10000) {
      std::move(done)(InvalidArgument(reason::kClaimInvalid, "inbox page size must be 1..10000"));
      return;
    }
    Enqueue<InboxPage>(
        [q = std::move(query)](Txn& t) -> absl::StatusOr<InboxPage> {
          auto r = t.conn.ExecPrepared(kInboxPage, {Param::Text(q.recipient.str()), Time(q.now),
                                                    Param::Int(q.after_seq), Param::Int(q.max)});
          if (!r.ok()) return Unavailable(r.status());
          InboxPage page;
          for (int i = 0; i < r->rows(); ++i) {
            page.entries.push_back(InboxEntry{MessageId(r->Str(i, 1)), r->Str(i, 2), r->Int(i, 0),
                                              r->IsNull(i, 3) ? std::string() : r->Bytes(i, 3)});
          }
          auto n = t.conn.ExecPrepared(kInboxCount, {Param::Text(q.recipient.str()), Time(q.now)});
          if (!n.ok()) return Unavailable(n.status());
          page.total = static_cast<uint64_t>(n->Int(0, 0));
          return page;
        },
        std::move(done));
  }

  void Fetch(FetchRequest req, StoreCallback<Fetched> done) override {
    Enqueue<Fetched>([this, req = std::move(req)](Txn& t) { return DoFetch(t, req); }, std::move(done));
  }

  void AppendChunk(ChunkUpload chunk, StoreCallback<ChunkStored> done) override {
    Enqueue<ChunkStored>([this, c = std::move(chunk)](Txn& t) { return DoAppendChunk(t, c); }, std::move(done));
  }

  void ReadChunkProgress(OrgCode sender, MessageId id, StoreCallback<ChunkProgress> done) override {
    Enqueue<ChunkProgress>(
        [s = std::move(sender), id = std::move(id)](Txn& t) -> absl::StatusOr<ChunkProgress> {
          auto r = t.conn.ExecPrepared(kChunkProgress, {Param::Text(id.str()), Param::Text(s.str())});
          if (!r.ok()) return Unavailable(r.status());
          if (r->rows() == 0) {
            return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no message you sent has this id");
          }
          ChunkProgress out;
          out.received = static_cast<uint32_t>(r->Int(0, 0));
          if (!r->IsNull(0, 1)) out.progress = r->Bytes(0, 1);
          return out;
        },
        std::move(done));
  }

  void UseOnce(std::string key, absl::Time forget_at, StoreCallback<bool> done) override {
    Enqueue<bool>(
        [k = std::move(key), forget_at](Txn& t) -> absl::StatusOr<bool> {
          auto r = t.conn.ExecPrepared(kUseOnce, {Param::Bytes(k), Time(forget_at)});
          if (!r.ok()) return Unavailable(r.status());
          return r->affected() == 1;
        },
        std::move(done));
  }

  void Sweep(SweepRequest req, StoreCallback<SweepResult> done) override {
    Enqueue<SweepResult>([this, req](Txn& t) { return DoSweep(t, req); }, std::move(done));
  }

  void SetArrivalListener(ArrivalListener listener) override {
    absl::MutexLock l(&arrival_mu_);
    arrival_listener_ = std::move(listener);
  }

  void SetConsentListener(ConsentListener listener) override {
    absl::MutexLock l(&consent_mu_);
    consent_listener_ = std::move(listener);
  }

  void SetCommitObserver(CommitObserver observer) override { commit_observer_ = std::move(observer); }

  StoreGauges Gauges() const override {
    const int n = static_cast<int>(conns_.size());
    absl::MutexLock l(&mu_);
    return {n, n - connections_down_.load(std::memory_order_relaxed), static_cast<int64_t>(queue_.size())};
  }

  void CheckWritable(StoreCallback<bool> done) override {
    Enqueue<bool>(
        [](Txn& t) -> absl::StatusOr<bool> {
          auto r = t.conn.Exec("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')");
          if (!r.ok()) return Unavailable(r.status());
          if (r->Str(0, 0) == "t") {
            return Error(absl::StatusCode::kUnavailable, reason::kStoreUnavailable,
                         "store: the PostgreSQL server is a read-only standby");
          }
          if (r->Str(0, 1) == "on") {
            return Error(absl::StatusCode::kUnavailable, reason::kStoreUnavailable,
                         "store: the PostgreSQL database is read-only (default_transaction_read_only)");
          }
          return true;
        },
        std::move(done));
  }

  void Close() override {
    {
      absl::MutexLock l(&mu_);
      if (closed_) return;
      closed_ = true;
    }
    for (auto& w : workers_) {
      if (w.joinable()) w.join();
    }
    stopping_.store(true);
    if (listener_thread_.joinable()) listener_thread_.join();
  }

 private:
  template <typename T>
  void Enqueue(absl::AnyInvocable<absl::StatusOr<T>(Txn&)> run, StoreCallback<T> done,
               typename OpImpl<T>::Fix fix = nullptr, bool consent = false) {
    {
      absl::MutexLock l(&mu_);
      if (!closed_) {
        queue_.push_back(std::make_unique<OpImpl<T>>(std::move(run), std::move(done), std::move(fix), consent));
        return;
      }
    }
    std::move(done)(StoreClosed());
  }

  void WorkerLoop(pg::Connection& conn) {
    std::vector<std::unique_ptr<Op>> batch;
    bool up = true;  // as counted in connections_down_
    auto count = [&] {
      if (conn.ok() != up) {
        up = !up;
        connections_down_.fetch_add(up ? -1 : 1, std::memory_order_relaxed);
      }
    };
    while (true) {
      count();
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(
            +[](PgStore* s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s->closed_ || !s->queue_.empty(); }, this));
        if (queue_.empty()) return;  // closed and drained
        while (!queue_.empty() && batch.size() < kMaxOpsPerCommit) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      std::stable_partition(batch.begin(), batch.end(), [](const auto& op) { return op->consent(); });
      if (!conn.ok()) {
        if (auto s = conn.Reset(); !s.ok()) {
          for (auto& op : batch) op->Finish(Unavailable(s), 0);
          batch.clear();
          continue;
        }
      }
      Outcome out = Commit(conn, batch);
      if (!out.status.ok() && batch.size() > 1 && conn.ok()) {
        // One operation's statement failed, and took the shared
        // transaction with it (or two transactions deadlocked): run each
        // alone, so only an operation that fails by itself fails.
        for (auto& op : batch) {
          std::vector<std::unique_ptr<Op>> one;
          one.push_back(std::move(op));
          Outcome alone = Commit(conn, one);
          Complete(conn, one, alone);
        }
      } else {
        Complete(conn, batch, out);
      }
      batch.clear();
    }
  }

  Outcome Commit(pg::Connection& conn, std::vector<std::unique_ptr<Op>>& ops) {
    Outcome out;
    Txn t{conn};
    out.status = conn.ExecScript("BEGIN");
    for (size_t i = 0; out.status.ok() && i < ops.size(); ++i) out.status = ops[i]->Run(t);
    if (out.status.ok() && (!t.audit.empty() || t.needs_audit_base)) out.status = FlushAudit(t, out);
    if (out.status.ok() && !t.arrivals.empty()) out.status = NotifyArrivals(t);
    if (out.status.ok() && t.consent) {
      auto r = conn.ExecPrepared("SELECT pg_notify('carebroker', $1)", {Param::Text(instance_ + " consent")});
      if (!r.ok()) out.status = r.status();
    }
    if (out.status.ok()) {
      const absl::Time start = absl::Now();
      out.status = conn.ExecScript("COMMIT");
      if (out.status.ok() && commit_observer_) commit_observer_(absl::Now() - start);
    }
    if (!out.status.ok()) {
      out.status = Unavailable(out.status);
      if (conn.ok()) (void)conn.ExecScript("ROLLBACK");
      out.leaves.clear();
      return out;
    }
    out.arrivals = std::move(t.arrivals);
    out.consent = t.consent;
    return out;
  }

  // Announces a committed transaction's entries, consent changes and
  // arrivals, then completes its operations.
  void Complete(pg::Connection& conn, std::vector<std::unique_ptr<Op>>& ops, const Outcome& out) {
    if (out.status.ok()) {
      if (!out.leaves.empty()) DeliverAudit(conn, out.audit_base, out.leaves);
      if (out.consent) CatchUpConsent(conn);
      absl::MutexLock l(&arrival_mu_);
      if (arrival_listener_) {
        for (const OrgCode& r : out.arrivals) arrival_listener_(r);
      }
    }
    for (auto& op : ops) op->Finish(out.status, out.audit_base);
  }

  // Writes the transaction's entries at the next indexes, holding the
  // audit_next row's lock until commit.
  absl::Status FlushAudit(Txn& t, Outcome& out) {
    auto lock = t.conn.ExecPrepared(kAuditLock);
    if (!lock.ok()) return lock.status();
    if (lock->rows() != 1) return absl::DataLossError("the audit_next row is missing");
    const uint64_t base = static_cast<uint64_t>(lock->Int(0, 0));
    out.audit_base = base;
    if (t.audit.empty()) return absl::OkStatus();
    out.leaves.reserve(t.audit.size());
    for (size_t first = 0; first < t.audit.size(); first += kAuditRowsPerInsert) {
      const size_t n = std::min(kAuditRowsPerInsert, t.audit.size() - first);
      std::string sql = "INSERT INTO audit (idx, at, subject, entry, leaf) VALUES ";
      std::vector<Param> params;
      params.reserve(n * 5);
      for (size_t i = 0; i < n; ++i) {
        const AuditRecord& r = t.audit[first + i];
        const uint64_t index = base + first + i;
        std::string entry = IndexedAuditEntry(index, r.entry);
        std::string leaf(audit::AsBytes(audit::LeafHash(entry)));
        const size_t p = params.size();
        absl::StrAppend(&sql, i > 0 ? "," : "", "($", p + 1, ",$", p + 2, ",$", p + 3, ",$", p + 4, ",$", p + 5, ")");
        params.push_back(Param::Int(static_cast<int64_t>(index)));
        params.push_back(Time(r.at));
        params.push_back(TextOrNull(r.subject));
        params.push_back(Param::Bytes(entry));
        params.push_back(Param::Bytes(leaf));
        out.leaves.push_back(std::move(leaf));
      }
      // The few-row forms (a quiet broker's) are prepared once; a long
      // one is planned as it comes, so the cache stays small.
      auto r = n <= kPreparedAuditRows ? t.conn.ExecPrepared(sql, params) : t.conn.Exec(sql, params);
      if (!r.ok()) return r.status();
    }
    auto advance = t.conn.ExecPrepared(
        kAuditAdvance, {Param::Int(static_cast<int64_t>(base + t.audit.size())), Param::Text(instance_ + " audit")});
    return advance.ok() ? absl::OkStatus() : advance.status();
  }

  // Other replicas' streams for these recipients are woken at commit.
  absl::Status NotifyArrivals(Txn& t) {
    std::string payload = instance_ + " arrival";
    auto send = [&]() -> absl::Status {
      auto r = t.conn.ExecPrepared("SELECT pg_notify('carebroker', $1)", {Param::Text(payload)});
      payload = instance_ + " arrival";
      return r.ok() ? absl::OkStatus() : r.status();
    };
    for (const OrgCode& org : t.arrivals) {
      if (payload.size() + org.str().size() + 1 > kMaxNotifyPayload) {
        if (auto s = send(); !s.ok()) return s;
      }
      absl::StrAppend(&payload, " ", org.str());
    }
    return send();
  }

  // Hands the audit listener this transaction's entries, after any that
  // other transactions committed before them and the listener has not had.
  void DeliverAudit(pg::Connection& conn, uint64_t base, const std::vector<std::string>& leaves) {
    absl::MutexLock l(&audit_mu_);
    if (!audit_listener_) return;
    if (audit_cursor_ < base && !CatchUpAuditLocked(conn, base)) return;  // the listen loop will
    if (audit_cursor_ >= base + leaves.size()) return;
    const size_t skip = static_cast<size_t>(audit_cursor_ - base);
    audit_listener_(audit_cursor_, skip == 0 ? leaves : std::vector<std::string>(leaves.begin() + skip, leaves.end()));
    audit_cursor_ = base + leaves.size();
  }

  // Reads committed entries from the cursor (up to `end`, 0: all) and hands
  // them on. False when they cannot be read now.
  bool CatchUpAuditLocked(pg::Connection& conn, uint64_t end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(audit_mu_) {
    while (end == 0 || audit_cursor_ < end) {
      auto r = conn.ExecPrepared(
          "SELECT idx, leaf FROM audit WHERE idx >= $1 AND idx < $2 ORDER BY idx LIMIT $3",
          {Param::Int(static_cast<int64_t>(audit_cursor_)),
           Param::Int(end == 0 ? INT64_MAX : static_cast<int64_t>(end)), Param::Int(kCatchUpRows)});
      if (!r.ok()) {
        Log(LogLevel::kWarning, "store.follow_failed").Str("table", "audit").Msg(r.status().message());
        return false;
      }
      std::vector<std::string> leaves;
      for (int i = 0; i < r->rows() && static_cast<uint64_t>(r->Int(i, 0)) == audit_cursor_ + leaves.size(); ++i) {
        leaves.push_back(r->Bytes(i, 1));
      }
      if (leaves.empty()) return end == 0;
      audit_listener_(audit_cursor_, leaves);
      audit_cursor_ += leaves.size();
      if (r->rows() < kCatchUpRows && end == 0) return true;
    }
    return true;
  }

  void CatchUpAudit(pg::Connection& conn) {
    absl::MutexLock l(&audit_mu_);
    if (audit_listener_) CatchUpAuditLocked(conn, 0);
  }

  void CatchUpConsent(pg::Connection& conn) {
    absl::MutexLock l(&consent_mu_);
    if (!consent_listener_) return;
    while (true) {
      auto r = conn.ExecPrepared("SELECT seq, change FROM consent WHERE seq > $1 ORDER BY seq LIMIT $2",
                                 {Param::Int(consent_cursor_), Param::Int(kCatchUpRows)});
      if (!r.ok()) {
        Log(LogLevel::kWarning, "store.follow_failed").Str("table", "consent").Msg(r.status().message());
        return;
      }
      auto changes = ConsentRows(*r);
      if (!changes.ok()) {
        Log(LogLevel::kError, "store.follow_failed").Str("table", "consent").Msg(changes.status().message());
        return;
      }
      for (const v1::ConsentChange& c : *changes) {
        consent_listener_(c);
        consent_cursor_ = c.seq();
      }
      if (r->rows() < kCatchUpRows) return;
    }
  }

  // Hears other replicas: arrivals wake streams here; audit entries and
  // consent changes are read and handed on in order. Reads once a second
  // too, so a notification lost with a connection costs a second at most.
  void ListenLoop() {
    absl::Time next_read = absl::InfinitePast();
    while (!stopping_.load()) {
      auto heard = listen_->AwaitNotifications(absl::Milliseconds(200));
      if (!heard.ok()) {
        absl::SleepFor(absl::Milliseconds(500));
        if (listen_->Reset().ok() && listen_->ExecScript(absl::StrCat("LISTEN ", kChannel)).ok()) {
          next_read = absl::InfinitePast();
        }
        continue;
      }
      bool audit = false, consent = false;
      for (const pg::Notification& n : *heard) {
        std::vector<absl::string_view> words = absl::StrSplit(n.payload, ' ', absl::SkipEmpty());
        if (words.size() < 2 || words[0] == instance_) continue;
        if (words[1] == "audit") audit = true;
        if (words[1] == "consent") consent = true;
        if (words[1] == "arrival") {
          absl::MutexLock l(&arrival_mu_);
          for (size_t i = 2; arrival_listener_ && i < words.size(); ++i) arrival_listener_(OrgCode(std::string(words[i])));
        }
      }
      const absl::Time now = absl::Now();
      if (now >= next_read) {
        audit = consent = true;
        next_read = now + absl::Seconds(1);
      }
      if (audit) CatchUpAudit(*listen_);
      if (consent) CatchUpConsent(*listen_);
    }
  }

  static absl::StatusOr<std::vector<v1::ConsentChange>> ConsentRows(const pg::Result& r) {
    std::vector<v1::ConsentChange> out(static_cast<size_t>(r.rows()));
    for (int i = 0; i < r.rows(); ++i) {
      if (!out[i].ParseFromString(r.Bytes(i, 1))) {
        return Error(absl::StatusCode::kInternal, reason::kStoreCorrupt, "a stored consent change cannot be read");
      }
      out[i].set_seq(r.Int(i, 0));
    }
    return out;
  }

  // A message an operator acts on, its row locked (kActionSelect).
  static absl::StatusOr<mailbox::Original> SelectOriginal(Txn& t, const MessageId& id) {
    auto r = t.conn.ExecPrepared(kActionSelect, {Param::Text(id.str())});
    if (!r.ok()) return Unavailable(r.status());
    if (r->rows() == 0) return mailbox::NoOriginal();
    mailbox::Original o;
    o.seq = r->Int(0, 0);
    o.row = RowColumns(*r, 0, id, OrgCode(r->Str(0, 8)));
    o.state = r->Int(0, 9);
    o.purged = r->Str(0, 10) == "t";
    o.expires_at = FromMicros(r->Int(0, 11));
    if (!r->IsNull(0, 12)) o.replaced_by = r->Str(0, 12);
    o.chunks = r->Int(0, 13);
    o.content_type = r->Str(0, 14);
    if (!r->IsNull(0, 15)) o.meta = r->Bytes(0, 15);
    return o;
  }

  void RecordEvent(Txn& t, const MessageEvent& e) const {
    if (recorder_ != nullptr) t.audit.push_back(recorder_->Record(e));
  }

  // Inserts one message: its seq, or 0 when its idempotency key is already taken.
  absl::StatusOr<int64_t> Insert(Txn& t, const NewMessage& m) const {
    const bool claimed = m.claim_token != 0;
    if (m.chunks > 1 && claimed) {
      return InvalidArgument(reason::kChunkRangeInvalid, "a chunked message cannot be stored already claimed");
    }
    auto r = t.conn.ExecPrepared(
        kInsertMessage,
        {Param::Text(m.id.str()), Param::Text(m.sender.str()), Param::Text(m.recipient.str()), Param::Text(m.workflow),
         Param::Text(m.purpose), TextOrNull(m.idempotency_key), Param::Text(m.content_type),
         Param::Text(m.local_reference), Param::Int(m.kind), Param::Bytes(m.digest),
         Param::Int(mailbox::InitialState(m)), Time(m.accepted_at), Time(m.expires_at),
         Time(claimed ? m.visible_until : m.accepted_at),
         claimed ? Param::Int(static_cast<int64_t>(m.claim_token)) : Param::Null(), Param::Int(claimed ? 1 : 0),
         claimed ? Time(m.accepted_at) : Param::Null(), TextOrNull(mailbox::PackSubject(m.subject, m.consent_keys)), Param::Int(m.consent_check),
         Param::Bytes(m.chunks > 1 ? absl::string_view() : absl::string_view(m.payload)),
         m.meta.empty() ? Param::Null() : Param::Bytes(m.meta), Param::Int(m.chunks),
         m.chunks > 1 ? Param::Bytes(mailbox::PackPendingAudit(m.audit)) : Param::Null(),
         m.chunks > 1 && !m.progress.empty() ? Param::Bytes(m.progress) : Param::Null()});
    if (!r.ok()) return Unavailable(r.status());
    if (r->rows() == 0) return 0;
    if (m.chunks > 1) {  // the first chunk; its entry waits for the last
      if (auto w = WriteChunk(t, r->Int(0, 0), 1, m.payload); !w.ok()) return w;
      t.audit.insert(t.audit.end(), m.row_audit.begin(), m.row_audit.end());
      return r->Int(0, 0);
    }
    if (!m.audit.empty()) t.audit.push_back(m.audit);
    t.audit.insert(t.audit.end(), m.row_audit.begin(), m.row_audit.end());
    // A message stored already claimed needs no wake-up: its stream has it.
    if (!claimed) t.arrivals.insert(m.recipient);
    if (auto e = mailbox::StoredClaimedEvent(m)) RecordEvent(t, *e);
    return r->Int(0, 0);
  }

  absl::StatusOr<std::vector<absl::StatusOr<AppendReceipt>>> DoAppend(Txn& t, const std::vector<NewMessage>& msgs) const {
    std::vector<absl::StatusOr<AppendReceipt>> out;
    out.reserve(msgs.size());
    for (const NewMessage& m : msgs) {
      std::optional<mailbox::Original> original;
      if (m.replaces) {  // checked, its row locked, before anything is written
        auto o = SelectOriginal(t, m.replaces->id);
        if (!o.ok()) return o.status();
        if (absl::Status ok = o->Replaceable(); !ok.ok()) {
          out.push_back(ok);
          continue;
        }
        original = *std::move(o);
      }
      auto stored = Insert(t, m);
      if (!stored.ok()) return stored.status();
      if (original && *stored != 0) {
        if (m.chunks > 1) {  // the original's other chunks, and the copy is complete
          auto copied = t.conn.ExecPrepared(kCopyChunks, {Param::Int(*stored), Param::Int(original->seq)});
          if (!copied.ok()) return Unavailable(copied.status());
          auto done = CompleteUpload(t, *stored, m.chunks, mailbox::PackPendingAudit(m.audit), "", m.recipient,
                                     m.accepted_at);
          if (!done.ok()) return done;
        }
        auto u = t.conn.ExecPrepared(kReplacedUpdate, {Param::Int(original->seq), Param::Text(m.id.str())});
        if (!u.ok()) return Unavailable(u.status());
        u = t.conn.ExecPrepared(kReplacesUpdate, {Param::Int(*stored), Param::Text(original->row.id.str())});
        if (!u.ok()) return Unavailable(u.status());
        RecordEvent(t, mailbox::ActionEvent(original->row, *m.replaces, &m));
      }
      if (*stored == 0) {
        // The key is taken (by an earlier send, or by another replica's that
        // committed while this insert waited).
        auto first = t.conn.ExecPrepared(kFindIdem, {Param::Text(m.sender.str()), Param::Text(m.idempotency_key)});
        if (!first.ok()) return Unavailable(first.status());
        if (first->rows() != 1) return Unavailable(absl::InternalError("an idempotency key conflict without its message"));
        if (!mailbox::KeyForgotten(FromMicros(first->Int(0, 1)), m.key_since)) {
          out.push_back(mailbox::RepeatedKey(MessageId(first->Str(0, 0)), FromMicros(first->Int(0, 1)),
                                             first->Bytes(0, 2), m));
          continue;
        }
        // Past the window: the first message keeps no key, and this one is new.
        auto forget = t.conn.ExecPrepared(kForgetKey, {Param::Text(m.sender.str()), Param::Text(m.idempotency_key)});
        if (!forget.ok()) return Unavailable(forget.status());
        stored = Insert(t, m);
        if (!stored.ok()) return stored.status();
        if (*stored == 0) return Unavailable(absl::InternalError("an idempotency key forgotten but still taken"));
      }
      out.push_back(AppendReceipt{m.id, m.accepted_at, false, *stored});
    }
    return out;
  }

  absl::StatusOr<std::vector<StoredDelivery>> DoClaim(Txn& t, const ClaimRequest& req) const {
    auto r = t.conn.ExecPrepared(kClaim, {Param::Text(req.recipient.str()), Time(req.now), Param::Int(req.max),
                                          Time(req.visible_until), Param::Int(static_cast<int64_t>(req.token)),
                                          Param::Text(req.chunked ? "true" : "false"), Param::Int(req.max_attempts),
                                          Param::Text(reason::kMaxAttemptsReached), Param::Text(req.workflows)});
    if (!r.ok()) return Unavailable(r.status());
    std::vector<StoredDelivery> out;
    out.reserve(static_cast<size_t>(r->rows()));
    for (int i = 0; i < r->rows(); ++i) {
      StoredDelivery d;
      d.seq = r->Int(i, 0);
      d.id = MessageId(r->Str(i, 2));
      d.sender = OrgCode(r->Str(i, 3));
      d.workflow = r->Str(i, 4);
      d.purpose = r->Str(i, 5);
      d.content_type = r->Str(i, 6);
      d.local_reference = r->Str(i, 7);
      d.kind = static_cast<v1::MessageKind>(r->Int(i, 8));
      d.accepted_at = FromMicros(r->Int(i, 9));
      d.delivery_count = static_cast<uint32_t>(r->Int(i, 10));
      if (!r->IsNull(i, 11)) {
        d.subject = mailbox::SubjectOf(r->Str(i, 11));
        d.consent_keys = mailbox::ConsentKeysOf(r->Str(i, 11));
      }
      d.consent_check = static_cast<uint32_t>(r->Int(i, 12));
      d.chunks = static_cast<uint32_t>(r->Int(i, 13));
      if (r->Str(i, 16) == "t") {  // held by the statement (max attempts)
        if (auto s = RecordHold(t, mailbox::RowOf(d, req.recipient), FromMicros(r->Int(i, 14)),
                                mailbox::MaxAttemptsHold(), req.now);
            !s.ok()) {
          return s;
        }
        t.arrivals.insert(req.recipient);  // what it held back a place from may be claimed now
        continue;
      }
      if (!r->IsNull(i, 15)) d.payload = r->Bytes(i, 15);  // a chunked message has none here
      if (auto e = mailbox::DeliveredEvent(d, req.recipient, req.now)) RecordEvent(t, *e);
      out.push_back(std::move(d));
    }
    return out;
  }

  // The rest of holding a message whose row is held already: its HELD
  // event and its sender's report.
  absl::Status RecordHold(Txn& t, const mailbox::Row& m, absl::Time expires_at, const mailbox::Hold& h,
                          absl::Time now) const {
    RecordEvent(t, mailbox::HeldEvent(m, h, now));
    if (auto report = mailbox::HeldReport(m, h, now, expires_at - m.accepted_at)) {
      if (auto s = Insert(t, *report); !s.ok()) return s.status();
    }
    return absl::OkStatus();
  }

  // Holds message `seq` if it is still waiting or delivered; false when it
  // is not (acknowledged or held by another replica meanwhile).
  absl::StatusOr<bool> HoldRow(Txn& t, int64_t seq, const mailbox::Row& m, absl::Time expires_at,
                               const mailbox::Hold& h, absl::Time now) const {
    auto u = t.conn.ExecPrepared(kHold, {Param::Int(seq), Time(now), Param::Text(h.reason), TextOrNull(h.code),
                                         h.code.empty() ? Param::Null() : Param::Text(h.text)});
    if (!u.ok()) return Unavailable(u.status());
    if (u->affected() == 0) return false;
    if (auto s = RecordHold(t, m, expires_at, h, now); !s.ok()) return s;
    return true;
  }

  absl::StatusOr<v1::MessageStatus> DoReject(Txn& t, const Rejection& rj) const {
    auto r = t.conn.ExecPrepared(kRejectSelect, {Param::Text(rj.id.str()), Param::Text(rj.recipient.str())});
    if (!r.ok()) return Unavailable(r.status());
    if (r->rows() == 0) {
      return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in your mailbox");
    }
    const int64_t state = r->Int(0, 9);
    const absl::Time expires_at = FromMicros(r->Int(0, 8));
    switch (mailbox::ClassifyReject(state, expires_at, rj.now)) {
      case mailbox::RejectOutcome::kNotFound:
        return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in your mailbox");
      case mailbox::RejectOutcome::kUnchanged: return mailbox::FetchStatus(state, expires_at, rj.now);
      case mailbox::RejectOutcome::kHold: break;
    }
    const mailbox::Row m = RowColumns(*r, 0, rj.id, rj.recipient);
    auto held = HoldRow(t, r->Int(0, 0), m, expires_at, mailbox::HoldFor(rj), rj.now);  // the row is locked
    if (!held.ok()) return held.status();
    return v1::MESSAGE_STATUS_HELD;
  }

  absl::StatusOr<AckResult> DoAck(Txn& t, const OrgCode& recipient, const std::vector<MessageId>& ids,
                                  absl::Time now) const {
    auto r = t.conn.ExecPrepared(kAck, {Param::Text(pg::TextArray(Strings(ids))), Param::Text(recipient.str()), Time(now)});
    if (!r.ok()) return Unavailable(r.status());
    absl::flat_hash_map<absl::string_view, int> rows;
    for (int i = 0; i < r->rows(); ++i) rows[r->Text(i, 0)] = i;
    AckResult out;
    absl::flat_hash_set<absl::string_view> acked_now;
    for (const MessageId& id : ids) {
      auto it = rows.find(id.str());
      if (it == rows.end()) {
        out.not_found.push_back(id);
        continue;
      }
      const int i = it->second;
      const mailbox::AckOutcome outcome = mailbox::ClassifyAck(r->Int(i, 1));
      // The statement has acknowledged the row already; a repeated id in
      // one call is recorded once.
      if (outcome == mailbox::AckOutcome::kAcknowledge && acked_now.insert(id.str()).second) {
        const mailbox::Row m{.id = id,
                             .sender = OrgCode(r->Str(i, 2)),
                             .recipient = recipient,
                             .workflow = r->Str(i, 3),
                             .purpose = r->Str(i, 4),
                             .subject = mailbox::SubjectOf(r->Str(i, 5)),
                             .kind = static_cast<v1::MessageKind>(r->Int(i, 6))};
        if (auto e = mailbox::AcknowledgedEvent(m, now)) RecordEvent(t, *e);
      }
      mailbox::Report(outcome, id, out);
    }
    return out;
  }

  absl::StatusOr<int> DoWithhold(Txn& t, const OrgCode& recipient, const std::vector<MessageId>& ids,
                                 const std::string& reason, absl::Time now) const {
    auto r = t.conn.ExecPrepared(kWithhold, {Param::Text(pg::TextArray(Strings(ids))), Param::Text(recipient.str()),
                                             Time(now), Param::Text(reason)});
    if (!r.ok()) return Unavailable(r.status());
    absl::flat_hash_map<absl::string_view, int> rows;
    for (int i = 0; i < r->rows(); ++i) rows[r->Text(i, 0)] = i;
    int n = 0;
    for (const MessageId& id : ids) {
      auto it = rows.find(id.str());
      if (it == rows.end()) continue;
      const int i = it->second;
      rows.erase(it);  // a repeated id is withheld once
      const mailbox::Row m = RowColumns(*r, i, id, recipient);
      RecordEvent(t, mailbox::WithheldEvent(m, reason, now));
      if (auto report = mailbox::WithheldReport(m, reason, now, FromMicros(r->Int(i, 8)) - m.accepted_at)) {
        if (auto s = Insert(t, *report); !s.ok()) return s.status();
      }
      ++n;
    }
    return n;
  }

  absl::StatusOr<Fetched> DoFetch(Txn& t, const FetchRequest& req) const {
    auto r = t.conn.ExecPrepared(kFetch, {Param::Text(req.id.str()), Param::Text(req.recipient.str())});
    if (!r.ok()) return Unavailable(r.status());
    if (r->rows() == 0) {
      return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in your mailbox");
    }
    Fetched f;
    StoredDelivery& d = f.delivery;
    d.seq = r->Int(0, 0);
    d.id = MessageId(r->Str(0, 1));
    d.sender = OrgCode(r->Str(0, 2));
    d.workflow = r->Str(0, 3);
    d.purpose = r->Str(0, 4);
    d.content_type = r->Str(0, 5);
    d.local_reference = r->Str(0, 6);
    d.kind = static_cast<v1::MessageKind>(r->Int(0, 7));
    d.accepted_at = FromMicros(r->Int(0, 8));
    d.delivery_count = static_cast<uint32_t>(r->Int(0, 9));
    if (!r->IsNull(0, 10)) {
      d.subject = mailbox::SubjectOf(r->Str(0, 10));
      d.consent_keys = mailbox::ConsentKeysOf(r->Str(0, 10));
    }
    d.consent_check = static_cast<uint32_t>(r->Int(0, 11));
    if (!r->IsNull(0, 14)) d.meta = r->Bytes(0, 14);
    d.chunks = static_cast<uint32_t>(r->Int(0, 15));
    const absl::Time expires_at = FromMicros(r->Int(0, 13));
    f.status = mailbox::FetchStatus(r->Int(0, 12), expires_at, req.now);
    if (!mailbox::Fetchable(f.status)) return f;
    if (req.body && (req.chunk < 1 || req.chunk > d.chunks)) {
      return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "the message has no such chunk");
    }
    const bool counts = mailbox::CountsAsDelivery(r->Str(0, 16) == "t", FromMicros(r->Int(0, 17)), req.now);
    if (req.deliver && counts && mailbox::Spent(static_cast<uint32_t>(r->Int(0, 18)), req.max_attempts)) {
      auto held = HoldRow(t, d.seq, mailbox::RowOf(d, req.recipient), expires_at, mailbox::MaxAttemptsHold(), req.now);
      if (!held.ok()) return held.status();
      // Not held: acknowledged by another replica meanwhile.
      f.status = *held ? v1::MESSAGE_STATUS_HELD : v1::MESSAGE_STATUS_ACKNOWLEDGED;
      return f;
    }
    if (req.deliver) {
      auto u = t.conn.ExecPrepared(kFetchDeliver, {Param::Int(d.seq), Time(req.now), Param::Int(counts ? 1 : 0)});
      if (!u.ok()) return Unavailable(u.status());
      if (u->rows() == 0) {  // acknowledged or withheld by another replica meanwhile
        f.status = v1::MESSAGE_STATUS_ACKNOWLEDGED;
        return f;
      }
      d.delivery_count = static_cast<uint32_t>(u->Int(0, 0));
      f.status = v1::MESSAGE_STATUS_DELIVERED;
      if (auto e = mailbox::DeliveredEvent(d, req.recipient, req.now)) RecordEvent(t, *e);
    }
    if (req.body && req.piece >= 0 && d.chunks > 1) {
      auto b = t.conn.ExecPrepared(kPieceRead, {Param::Int(d.seq), Param::Int(req.chunk), Param::Int(req.piece)});
      if (!b.ok()) return Unavailable(b.status());
      if (b->rows() == 0) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "the chunk has no such piece");
      d.payload = b->Bytes(0, 0);
      f.more = b->Str(0, 1) == "t";
    } else if (req.body && req.piece > 0) {
      return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "the message has one piece");
    } else if (req.body && d.chunks > 1) {
      // Sized first: growing a 100 MB string by doubling would hold two at once.
      auto size = t.conn.ExecPrepared(kChunkSize, {Param::Int(d.seq), Param::Int(req.chunk)});
      if (!size.ok()) return Unavailable(size.status());
      d.payload.reserve(static_cast<size_t>(size->Int(0, 0)));
      auto read = ReadChunk(t, d.seq, req.chunk, [&d](absl::string_view p) { d.payload.append(p.data(), p.size()); });
      if (!read.ok()) return read;
    } else if (req.body) {
      auto b = t.conn.ExecPrepared(kBodyRead, {Param::Int(d.seq)});
      if (!b.ok()) return Unavailable(b.status());
      if (b->rows() > 0) d.payload = b->Bytes(0, 0);
    }
    return f;
  }

  // Chunk `n` of message `seq` in pieces (mailbox::kPieceBytes), replacing an earlier try.
  static absl::Status WriteChunk(Txn& t, int64_t seq, uint32_t n, absl::string_view data) {
    if (auto d = t.conn.ExecPrepared(kChunkDelete, {Param::Int(seq), Param::Int(n)}); !d.ok()) {
      return Unavailable(d.status());
    }
    for (size_t part = 0; part < mailbox::PieceCount(data.size()); ++part) {
      auto w = t.conn.ExecPrepared(kChunkInsert, {Param::Int(seq), Param::Int(n), Param::Int(static_cast<int64_t>(part)),
                                                  Param::Bytes(mailbox::Piece(data, part))});
      if (!w.ok()) return Unavailable(w.status());
    }
    return absl::OkStatus();
  }

  // Hands each piece of chunk `n` to `piece`, in order, one query each.
  static absl::Status ReadChunk(Txn& t, int64_t seq, uint32_t n, const std::function<void(absl::string_view)>& piece) {
    for (int64_t part = 0;; ++part) {
      auto b = t.conn.ExecPrepared(kChunkRead, {Param::Int(seq), Param::Int(n), Param::Int(part)});
      if (!b.ok()) return Unavailable(b.status());
      if (b->rows() == 0) return absl::OkStatus();
      piece(b->Bytes(0, 0));
    }
  }

  absl::StatusOr<ChunkStored> DoAppendChunk(Txn& t, const ChunkUpload& c) const {
    auto r = t.conn.ExecPrepared(kChunkState, {Param::Text(c.id.str()), Param::Text(c.sender.str())});
    if (!r.ok()) return Unavailable(r.status());
    if (r->rows() == 0) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no message you sent has this id");
    const int64_t seq = r->Int(0, 0), chunks = r->Int(0, 2);
    auto received = t.conn.ExecPrepared(kChunkReceived, {Param::Int(seq)});
    if (!received.ok()) return Unavailable(received.status());
    if (auto s = mailbox::CheckChunk(r->Int(0, 1), chunks, received->Int(0, 0), static_cast<int>(c.n),
                                     static_cast<int>(c.total));
        !s.ok()) {
      return s;
    }
    const bool stored_progress = !r->IsNull(0, 5);
    if (auto s = mailbox::CheckSubmissionChunk(stored_progress, !c.progress.empty(), received->Int(0, 0), c.after,
                                               static_cast<int>(c.n));
        !s.ok()) {
      return s;
    }
    if (auto w = WriteChunk(t, seq, c.n, c.data); !w.ok()) return w;
    t.audit.insert(t.audit.end(), c.row_audit.begin(), c.row_audit.end());
    ChunkStored out;
    if (c.n != c.total) {
      if (stored_progress) {
        if (auto u = t.conn.ExecPrepared(kProgressUpdate, {Param::Int(seq), Param::Bytes(c.progress)}); !u.ok()) {
          return Unavailable(u.status());
        }
      }
      return out;
    }
    auto done = CompleteUpload(t, seq, chunks, r->IsNull(0, 3) ? "" : r->Bytes(0, 3), c.audit_patch,
                               OrgCode(r->Str(0, 4)), c.now);
    if (!done.ok()) return done;
    out.complete = true;
    return out;
  }

  // The last chunk of message `seq` is stored: its SEND_ACCEPTED entry
  // (`pending`) written with the whole payload's digest, read a chunk at a
  // time, or `patch` (a submission's) merged in; claimable now.
  static absl::Status CompleteUpload(Txn& t, int64_t seq, int64_t chunks, const std::string& pending,
                                     const std::string& patch, const OrgCode& recipient, absl::Time now) {
    Sha256Stream digest;
    for (int64_t n = 1; patch.empty() && n <= chunks; ++n) {
      auto read = ReadChunk(t, seq, static_cast<uint32_t>(n), [&digest](absl::string_view p) { digest.Update(p); });
      if (!read.ok()) return read;
    }
    const std::string whole = digest.Finish();
    auto entry = mailbox::CompletedAudit(pending, whole, now, patch);
    if (!entry.ok()) return entry.status();
    t.audit.push_back(*std::move(entry));
    if (auto u = t.conn.ExecPrepared(kChunkComplete, {Param::Int(seq), Time(now)}); !u.ok()) {
      return Unavailable(u.status());
    }
    t.arrivals.insert(recipient);
    return absl::OkStatus();
  }

  static absl::StatusOr<TrackInfo> DoTrack(Txn& t, const OrgCode& caller, const MessageId& id) {
    auto r = t.conn.ExecPrepared(kTrack, {Param::Text(id.str()), Param::Text(caller.str())});
    if (!r.ok()) return Unavailable(r.status());
    if (r->rows() == 0) {
      return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in your mailboxes");
    }
    TrackInfo info;
    info.id = MessageId(r->Str(0, 0));
    info.sender = OrgCode(r->Str(0, 1));
    info.recipient = OrgCode(r->Str(0, 2));
    info.workflow = r->Str(0, 3);
    info.local_reference = r->Str(0, 4);
    auto status = mailbox::StatusOf(r->Int(0, 5));
    if (!status.ok()) return status.status();
    info.status = *status;
    auto optional_time = [&](int col) -> std::optional<absl::Time> {
      if (r->IsNull(0, col)) return std::nullopt;
      return FromMicros(r->Int(0, col));
    };
    info.accepted_at = FromMicros(r->Int(0, 6));
    info.first_delivered_at = optional_time(7);
    info.acknowledged_at = optional_time(8);
    info.expired_at = optional_time(9);
    info.expires_at = FromMicros(r->Int(0, 10));
    info.delivery_count = static_cast<uint32_t>(r->Int(0, 11));
    info.body_purged = r->Str(0, 12) == "t";
    info.withheld_at = optional_time(13);
    if (!r->IsNull(0, 14)) info.withheld_reason = r->Str(0, 14);
    info.held_at = optional_time(15);
    if (!r->IsNull(0, 16)) info.held_reason = r->Str(0, 16);
    if (!r->IsNull(0, 17)) info.rejection_code = r->Str(0, 17);
    if (!r->IsNull(0, 18)) info.rejection_text = r->Str(0, 18);
    if (!r->IsNull(0, 19)) info.replaces = MessageId(r->Str(0, 19));
    if (!r->IsNull(0, 20)) info.replaced_by = MessageId(r->Str(0, 20));
    return info;
  }

  absl::StatusOr<SweepResult> DoSweep(Txn& t, const SweepRequest& req) const {
    SweepResult out;
    auto expired = t.conn.ExecPrepared(kExpireSelect, {Time(req.now), Param::Int(int64_t{req.max_items} + 1)});
    if (!expired.ok()) return Unavailable(expired.status());
    const int n_expired = mailbox::SweepBatch(expired->rows(), req.max_items, out.more);
    std::vector<int64_t> seqs;
    for (int i = 0; i < n_expired; ++i) seqs.push_back(expired->Int(i, 0));
    if (!seqs.empty()) {
      if (auto u = t.conn.ExecPrepared(kExpireUpdate, {Param::Text(Int64Array(seqs)), Time(req.now)}); !u.ok()) {
        return Unavailable(u.status());
      }
    }
    for (int i = 0; i < n_expired; ++i) {
      const mailbox::Row e{.id = MessageId(expired->Str(i, 1)),
                           .sender = OrgCode(expired->Str(i, 2)),
                           .recipient = OrgCode(expired->Str(i, 3)),
                           .workflow = expired->Str(i, 4),
                           .purpose = expired->Str(i, 8),
                           .subject = mailbox::SubjectOf(expired->Str(i, 9)),
                           .kind = static_cast<v1::MessageKind>(expired->Int(i, 7)),
                           .local_reference = expired->Str(i, 5),
                           .accepted_at = FromMicros(expired->Int(i, 6))};
      ++out.expired;
      ++out.expired_by_workflow[e.workflow];
      mailbox::ExpiryPlan plan = mailbox::PlanExpiry(e, req);
      if (plan.event) RecordEvent(t, *plan.event);
      if (plan.report) {
        if (auto s = Insert(t, *plan.report); !s.ok()) return s.status();
        ++out.reports;
      }
    }
    // Bodies past retention: acknowledged, expired (kept for an operator's
    // resend) and held (kept for a release, and then for a resend).
    for (const char* q : {kPurgeSelect, kPurgeExpiredSelect, kPurgeHeldSelect}) {
      auto purge = t.conn.ExecPrepared(q, {Time(req.purge_before), Param::Int(int64_t{req.max_items} + 1)});
      if (!purge.ok()) return Unavailable(purge.status());
      seqs.clear();
      const int n_purge = mailbox::SweepBatch(purge->rows(), req.max_items, out.more);
      for (int i = 0; i < n_purge; ++i) seqs.push_back(purge->Int(i, 0));
      if (!seqs.empty()) {
        if (auto u = t.conn.ExecPrepared(kPurgeUpdate, {Param::Text(Int64Array(seqs))}); !u.ok()) {
          return Unavailable(u.status());
        }
      }
      out.purged += static_cast<int>(seqs.size());
    }
    auto abandoned = t.conn.ExecPrepared(kAbandon, {Time(req.now), Param::Int(req.max_items)});
    if (!abandoned.ok()) return Unavailable(abandoned.status());
    out.abandoned = static_cast<int>(abandoned->Int(0, 0));
    auto forgot = t.conn.ExecPrepared(kForgetUsed, {Time(req.now), Param::Int(req.max_items)});
    if (!forgot.ok()) return Unavailable(forgot.status());
    out.forgotten = static_cast<int>(forgot->affected());
    return out;
  }

  std::string instance_;  // names this replica's notifications
  std::vector<std::unique_ptr<pg::Connection>> conns_;
  std::vector<std::thread> workers_;
  std::unique_ptr<pg::Connection> listen_;  // the listen thread's
  std::thread listener_thread_;
  std::atomic<bool> stopping_{false};
  const AuditRecorder* recorder_ = nullptr;

  mutable absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::unique_ptr<Op>> queue_ ABSL_GUARDED_BY(mu_);

  // Listeners, each with the position up to which it has heard.
  absl::Mutex audit_mu_;
  AuditListener audit_listener_ ABSL_GUARDED_BY(audit_mu_);
  uint64_t audit_cursor_ ABSL_GUARDED_BY(audit_mu_) = 0;  // the next index to hand on
  absl::Mutex consent_mu_;
  ConsentListener consent_listener_ ABSL_GUARDED_BY(consent_mu_);
  CommitObserver commit_observer_;
  std::atomic<int> connections_down_{0};
  int64_t consent_cursor_ ABSL_GUARDED_BY(consent_mu_) = 0;  // the last seq handed on
  absl::Mutex arrival_mu_;
  ArrivalListener arrival_listener_ ABSL_GUARDED_BY(arrival_mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenPgStore(const PgStoreOptions& options) {
  auto store = std::make_unique<PgStore>();
  if (auto s = store->Open(options); !s.ok()) return s;
  return std::unique_ptr<Store>(std::move(store));
}

// The log in a PostgreSQL store, read in one snapshot (so every head read
// covers entries read), a page at a time.
absl::Status ReadPgAuditLog(const std::string& conninfo, AuditLogVisitor& visitor) {
  auto conn = pg::Connection::Open(conninfo);
  if (!conn.ok()) return conn.status();
  if (auto s = (*conn)->ExecScript("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !s.ok()) return s;
  constexpr int kPage = 10000;
  for (int64_t from = 0;;) {
    auto r = (*conn)->Exec("SELECT idx, entry, leaf FROM audit WHERE idx >= $1 ORDER BY idx LIMIT $2",
                           {pg::Param::Int(from), pg::Param::Int(kPage)});
    if (!r.ok()) return absl::DataLossError(absl::StrCat("not a carebroker store with an audit log: ", r.status().message()));
    for (int i = 0; i < r->rows(); ++i) {
      visitor.Entry(static_cast<uint64_t>(r->Int(i, 0)), r->Bytes(i, 1), r->Bytes(i, 2));
      from = r->Int(i, 0) + 1;
    }
    if (r->rows() < kPage) break;
  }
  auto heads = (*conn)->Exec("SELECT head FROM tree_heads ORDER BY tree_size");
  if (!heads.ok()) return absl::DataLossError(absl::StrCat("cannot read tree heads: ", heads.status().message()));
  for (int i = 0; i < heads->rows(); ++i) {
    visitor.Head(ParseStoredHead(heads->Bytes(i, 0)));
  }
  return (*conn)->ExecScript("COMMIT");
}


absl::StatusOr<std::string> MigratePgStore(const std::string& conninfo) {
  auto conn = pg::Connection::Open(conninfo);
  if (!conn.ok()) return conn.status();
  auto before = pg::Migrate(**conn);
  if (!before.ok()) return before.status();
  if (*before == pg::SchemaVersion()) {
    return absl::StrCat("PostgreSQL store: schema version ", *before, ", current; nothing to do");
  }
  return absl::StrCat("PostgreSQL store: schema version ", *before, " -> ", pg::SchemaVersion());
}

}  // namespace carebroker
