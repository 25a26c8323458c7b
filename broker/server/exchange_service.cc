#include "broker/server/exchange_service.h"

#include <deque>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "audit/log.h"
#include "core/time.h"
#include "core/files.h"
#include "core/ids.h"
#include "core/status.h"
#include "core/reasons.h"
#include "broker/exchange/intake.h"
#include "broker/server/grpc_status.h"

namespace carebroker {
namespace {


// A stream refused before it started.
template <typename Req, typename Resp>
class RefusedStream final : public grpc::ServerBidiReactor<Req, Resp> {
 public:
  explicit RefusedStream(const absl::Status& s) { this->Finish(ToGrpcStatus(s)); }
  void OnDone() override { delete this; }
};

// Counts an open stream for the max_streams limit; false when full.
bool EnterStream(const ExchangeDeps& d) {
  const int limit = static_cast<int>(d.config->proto().limits().max_streams());
  if (d.streams->fetch_add(1) >= limit) {
    d.streams->fetch_sub(1);
    return false;
  }
  return true;
}

absl::Status TooManyStreams() {
  return Error(absl::StatusCode::kResourceExhausted, reason::kTooManyStreams, "the broker's stream limit is reached");
}

// Stores one admitted message and answers `done` once it is durable. When a
// Receive stream of the recipient can take it now, the message is stored
// already claimed by that stream and handed to it directly after the
// commit, with no claim query and no second trip through the store.
void StoreAndDeliver(const ExchangeDeps& d, NewMessage m,
                     absl::AnyInvocable<void(absl::StatusOr<AppendReceipt>) &&> done) {
  const OrgCode recipient = m.recipient;
  Subscriber* direct = d.mailboxes->ReserveDirect(recipient, &m.claim_token);
  std::optional<StoredDelivery> delivery;
  if (direct != nullptr) {
    m.visible_until = m.accepted_at + d.config->visibility_timeout();
    delivery.emplace(StoredDelivery{m.id, m.sender, m.workflow, m.purpose, m.content_type, m.local_reference,
                                    m.kind, m.payload, m.accepted_at, 1, m.subject, m.consent_check});
  }
  std::vector<NewMessage> batch;
  batch.push_back(std::move(m));
  d.store->Append(std::move(batch), [&d, recipient, direct, delivery = std::move(delivery),
                                     done = std::move(done)](auto r) mutable {
    absl::StatusOr<AppendReceipt> one = r.ok() ? std::move((*r)[0]) : absl::StatusOr<AppendReceipt>(r.status());
    if (direct == nullptr) {
      d.mailboxes->EndStoredSend(recipient);
    } else if (one.ok() && !one->duplicate) {
      direct->Deliver(*std::move(delivery));
    } else {
      direct->CancelReservation();
    }
    std::move(done)(std::move(one));
  });
}

absl::Status AuditUnavailable() {
  return Error(absl::StatusCode::kUnavailable, reason::kAuditUnavailable,
               "the audit log cannot be written; nothing was accepted (retry later)");
}

// Admits a request under the policy in force now. A policy denial fills
// `denial` with the entry to make durable before answering.
absl::StatusOr<Admitted> AdmitNow(const ExchangeDeps& d, const OrgCode& sender, v1::SendRequest req,
                                  AuditRecord* denial) {
  if (!d.audit->healthy()) return AuditUnavailable();
  const auto policy = d.policy->current();
  return Admit(*d.config, *policy, d.policy->consent(), d.audit->entries(), sender, std::move(req), d.clock->Now(),
               denial);
}

// Makes a denial's audit entry durable, then answers `denied`; answers
// UNAVAILABLE when the entry cannot be written (fail closed).
void RecordDenial(const ExchangeDeps& d, AuditRecord denial, absl::Status denied,
                  absl::AnyInvocable<void(absl::Status) &&> done) {
  std::vector<AuditRecord> records;
  records.push_back(std::move(denial));
  d.store->AppendAudit(std::move(records),
                       [denied = std::move(denied), done = std::move(done)](absl::StatusOr<uint64_t> r) mutable {
                         std::move(done)(r.ok() ? denied : AuditUnavailable());
                       });
}

// Reference counting for reactors with asynchronous store work in flight:
// one reference for gRPC (dropped in OnDone) and one per store operation.
class RefCounted {
 public:
  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 protected:
  virtual ~RefCounted() = default;

 private:
  std::atomic<int> refs_{1};
};

// ---------------------------------------------------------------- SendStream

class SendStreamReactor final : public grpc::ServerBidiReactor<v1::SendRequest, v1::SendStreamResponse>,
                                public RefCounted {
 public:
  SendStreamReactor(const ExchangeDeps& d, Identity id)
      : d_(d), id_(std::move(id)), max_pending_(d.config->proto().limits().max_pending_per_stream()) {
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool finish;
      {
        absl::MutexLock l(&mu_);
        read_done_ = true;
        finish = ShouldFinishLocked();
      }
      if (finish) DoFinish(absl::OkStatus());
      return;
    }
    AuditRecord denial;
    absl::StatusOr<Admitted> msg = AdmitNow(d_, id_.org, std::move(req_), &denial);
    uint64_t bytes = msg.ok() ? msg->message.payload.size() : 0;
    if (msg.ok() && !d_.budget->TryAcquire(bytes)) {
      msg = Error(absl::StatusCode::kResourceExhausted, reason::kMemoryBudgetExhausted,
                  "the broker is at its memory budget; retry shortly");
    }
    bool read_more;
    Slot* slot;  // stable: only popped once ready, after its append completes
    {
      absl::MutexLock l(&mu_);
      slot = &slots_.emplace_back();
      if (!msg.ok() && denial.empty()) {
        *slot->result.mutable_error() = ToStreamError(msg.status());
        slot->ready = true;
      } else if (msg.ok()) {
        FillReceipt(*msg, slot->result.mutable_receipt());
      }
      read_more = slots_.size() < max_pending_;
      if (!read_more) read_paused_ = true;
    }
    if (msg.ok()) {
      Ref();
      StoreAndDeliver(d_, std::move(msg->message), [this, slot, bytes](absl::StatusOr<AppendReceipt> r) {
        OnAppended(slot, bytes, std::move(r));
      });
    }
    if (!msg.ok() && !denial.empty()) {
      Ref();
      RecordDenial(d_, std::move(denial), msg.status(), [this, slot](absl::Status s) {
        {
          absl::MutexLock l(&mu_);
          *slot->result.mutable_error() = ToStreamError(s);
          slot->ready = true;
        }
        MaybeWrite();
        Unref();
      });
    }
    if (read_more) StartRead(&req_);
    MaybeWrite();
  }

  void OnWriteDone(bool ok) override {
    bool finish;
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      if (!ok) broken_ = true;
      finish = ShouldFinishLocked();
    }
    if (finish) {
      DoFinish(ok ? absl::OkStatus() : absl::CancelledError("stream broken"));
      return;
    }
    MaybeWrite();
  }

  void OnDone() override {
    d_.streams->fetch_sub(1);
    Unref();
  }

 private:
  struct Slot {
    bool ready = false;
    v1::SendResult result;
  };

  void OnAppended(Slot* slot, uint64_t bytes, absl::StatusOr<AppendReceipt> r) {
    d_.budget->Release(bytes);
    {
      absl::MutexLock l(&mu_);
      if (r.ok()) {
        const AppendReceipt& rc = *r;
        auto* out = slot->result.mutable_receipt();
        out->set_message_id(rc.id.str());
        *out->mutable_accepted_at() = ToTimestamp(rc.accepted_at);
        out->set_duplicate(rc.duplicate);
      } else {
        *slot->result.mutable_error() = ToStreamError(r.status());
      }
      slot->ready = true;
    }
    MaybeWrite();
    Unref();
  }

  // Writes every ready result at the front, in request order, as one
  // response, if no write is in flight.
  void MaybeWrite() {
    bool write = false, resume_read = false, finish = false;
    {
      absl::MutexLock l(&mu_);
      if (!writing_ && !broken_ && !finished_ && !slots_.empty() && slots_.front().ready) {
        write_buf_.Clear();
        while (!slots_.empty() && slots_.front().ready) {
          *write_buf_.add_results() = std::move(slots_.front().result);
          slots_.pop_front();
        }
        writing_ = write = true;
        if (read_paused_ && slots_.size() < max_pending_) {
          read_paused_ = false;
          resume_read = true;
        }
      }
      finish = ShouldFinishLocked();
    }
    if (write) StartWrite(&write_buf_);
    if (resume_read) StartRead(&req_);
    if (finish) DoFinish(absl::OkStatus());
  }

  bool ShouldFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return false;
    if (broken_ || (read_done_ && slots_.empty())) {
      finished_ = true;
      return true;
    }
    return false;
  }

  void DoFinish(const absl::Status& s) { Finish(ToGrpcStatus(s)); }

  const ExchangeDeps& d_;
  const Identity id_;
  const size_t max_pending_;
  v1::SendRequest req_;  // one read in flight at a time
  v1::SendStreamResponse write_buf_;

  absl::Mutex mu_;
  std::deque<Slot> slots_ ABSL_GUARDED_BY(mu_);  // responses in request order
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// ------------------------------------------------------------------- Receive

class ReceiveReactor final : public grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>,
                             public Subscriber,
                             public RefCounted {
 public:
  ReceiveReactor(const ExchangeDeps& d, Identity id) : d_(d), id_(std::move(id)) {
    thread_local absl::BitGen gen;
    token_ = (absl::Uniform<uint64_t>(gen) >> 1) | 1;  // positive in a signed 64-bit column, never 0
    StartRead(&req_);
  }

  void Wake() override { TryClaim(); }

  ClaimToken Reserve() override {
    absl::MutexLock l(&mu_);
    if (!opened_ || done_ || finished_ || !drained_ || claiming_ || CreditLocked() <= 0) return 0;
    ++reserved_;
    Ref();
    return token_;
  }

  void Deliver(StoredDelivery d) override {
    if (Withheld(d)) {
      {
        absl::MutexLock l(&mu_);
        --reserved_;
      }
      TryClaim();
      Unref();
      return;
    }
    bool gone;
    {
      absl::MutexLock l(&mu_);
      --reserved_;
      gone = done_;
      if (!gone) {
        d_.budget->ForceAcquire(d.payload.size());
        in_flight_.insert(d.id.str());
        to_write_.push_back(std::move(d));
      }
    }
    if (gone) {
      // The stream ended while the message was being stored: put it back.
      Ref();
      d_.store->Release(id_.org, token_, {d.id}, d_.clock->Now(), [this](auto) { Unref(); });
    } else {
      MaybeWrite();
    }
    Unref();
  }

  void CancelReservation() override {
    {
      absl::MutexLock l(&mu_);
      --reserved_;
    }
    TryClaim();
    Unref();
  }

  void MarkBacklog() override {
    absl::MutexLock l(&mu_);
    drained_ = false;
    if (claiming_) rewake_ = true;  // the claim in flight may predate the message
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client closed its side: finish once its acks are durable, so a
      // clean end of stream means every ack sent on it is committed.
      bool finish;
      {
        absl::MutexLock l(&mu_);
        closing_ = true;
        finish = !ack_outstanding_ && pending_acks_.empty();
      }
      if (finish) FinishOnce(absl::OkStatus());
      return;
    }
    if (req_.has_open()) {
      bool first;
      {
        absl::MutexLock l(&mu_);
        first = !opened_;
        if (first) {
          const uint32_t limit = d_.config->proto().limits().max_in_flight_per_stream();
          const uint32_t asked = req_.open().max_in_flight();
          max_in_flight_ = asked == 0 || asked > limit ? limit : asked;
          opened_ = true;
        }
      }
      if (!first) {
        FinishOnce(InvalidArgument(reason::kReceiveAlreadyOpen, "open was sent twice on one stream"));
        return;
      }
      d_.mailboxes->Subscribe(id_.org, this);
      TryClaim();
    } else if (req_.kind_case() == v1::ReceiveRequest::kAck) {
      if (!IsMessageIdShape(req_.ack())) {
        FinishOnce(InvalidArgument(reason::kMessageIdInvalid, "ack is not a message id"));
        return;
      }
      bool opened, flush = false, backlog = false;
      {
        absl::MutexLock l(&mu_);
        opened = opened_;
        if (opened) {
          in_flight_.erase(req_.ack());
          pending_acks_.emplace_back(req_.ack());
          flush = !ack_outstanding_;
          backlog = !drained_;
        }
      }
      if (!opened) {
        FinishOnce(InvalidArgument(reason::kReceiveOpenRequired, "the first request on a Receive stream must be open"));
        return;
      }
      if (flush) FlushAcks();
      // The freed credit is for messages waiting in the store; a drained
      // stream has none (arrivals and the housekeeping tick wake it).
      if (backlog) TryClaim();
    } else {
      FinishOnce(InvalidArgument(reason::kReceiveOpenRequired, "the first request on a Receive stream must be open"));
      return;
    }
    StartRead(&req_);
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      d_.budget->Release(write_bytes_);
      write_bytes_ = 0;
    }
    if (!ok) {
      FinishOnce(absl::CancelledError("stream broken"));
      return;
    }
    MaybeWrite();
  }

  void OnDone() override {
    d_.mailboxes->Unsubscribe(id_.org, this);
    std::vector<MessageId> unacked;
    {
      absl::MutexLock l(&mu_);
      done_ = true;
      for (const auto& id : in_flight_) unacked.emplace_back(id);
      in_flight_.clear();
      for (const auto& d : to_write_) d_.budget->Release(d.payload.size());
      to_write_.clear();
    }
    if (!unacked.empty()) {
      // Unacknowledged deliveries go back to the mailbox at once.
      Ref();
      d_.store->Release(id_.org, token_, std::move(unacked), d_.clock->Now(), [this](auto) { Unref(); });
    }
    FlushAcks();  // acks that arrived before the end still count
    d_.streams->fetch_sub(1);
    Unref();
  }

 private:
  void TryClaim() {
    absl::MutexLock l(&mu_);
    if (!opened_ || done_ || finished_) return;
    if (claiming_) {
      rewake_ = true;
      return;
    }
    const int credit = CreditLocked();
    if (credit <= 0 || d_.budget->Exhausted()) return;
    claiming_ = true;
    rewake_ = false;
    const absl::Time now = d_.clock->Now();
    ClaimRequest req{id_.org, std::min(credit, 512), now, now + d_.config->visibility_timeout(), token_};
    Ref();
    d_.store->Claim(std::move(req), [this, asked = std::min(credit, 512)](auto r) { OnClaimed(asked, std::move(r)); });
  }

  void OnClaimed(int asked, absl::StatusOr<std::vector<StoredDelivery>> r) {
    bool again = false;
    {
      absl::MutexLock l(&mu_);
      claiming_ = false;
      if (r.ok() && !done_) {
        for (auto& d : *r) {
          if (Withheld(d)) continue;
          d_.budget->ForceAcquire(d.payload.size());
          in_flight_.insert(d.id.str());
          to_write_.push_back(std::move(d));
        }
        again = rewake_ || static_cast<int>(r->size()) == asked;
        // Nothing older is left in the store: direct deliveries may follow.
        drained_ = !again;
      }
    }
    if (!r.ok()) {
      FinishOnce(r.status());
    } else {
      MaybeWrite();
      if (again) TryClaim();
    }
    Unref();
  }

  // The consent re-check at delivery: a message whose person recorded
  // dissent (or an opt-out that applies) while it waited is withheld for
  // good, and its sender sees WITHHELD in Track.
  bool Withheld(const StoredDelivery& d) {
    absl::string_view reason = d_.policy->CheckAtDelivery(d, id_.org);
    if (reason.empty()) return false;
    Ref();
    d_.store->Withhold(id_.org, {d.id}, std::string(reason), d_.clock->Now(), [this](auto) { Unref(); });
    return true;
  }

  // Deliveries this stream may still take.
  int CreditLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<int>(max_in_flight_) - static_cast<int>(in_flight_.size()) - reserved_;
  }

  void FlushAcks() {
    std::vector<MessageId> ids;
    {
      absl::MutexLock l(&mu_);
      if (ack_outstanding_ || pending_acks_.empty()) return;
      ids.swap(pending_acks_);
      ack_outstanding_ = true;
    }
    Ref();
    d_.store->Ack(id_.org, std::move(ids), d_.clock->Now(), [this](absl::StatusOr<AckResult> r) {
      {
        absl::MutexLock l(&mu_);
        ack_outstanding_ = false;
      }
      if (!r.ok()) {
        FinishOnce(r.status());
      } else {
        FlushAcks();
        bool finish;
        {
          absl::MutexLock l(&mu_);
          finish = closing_ && !ack_outstanding_ && pending_acks_.empty();
        }
        if (finish) FinishOnce(absl::OkStatus());
      }
      Unref();
    });
  }

  // Writes the claimed deliveries waiting at the front as one response (at
  // least one; more while they fit in one message of the size limit), if
  // no write is in flight.
  void MaybeWrite() {
    {
      absl::MutexLock l(&mu_);
      if (writing_ || done_ || finished_ || to_write_.empty()) return;
      const uint64_t cap = d_.config->proto().limits().max_message_bytes();
      write_buf_.Clear();
      write_bytes_ = 0;
      while (!to_write_.empty() &&
             (write_bytes_ == 0 || write_bytes_ + to_write_.front().payload.size() <= cap)) {
        StoredDelivery d = std::move(to_write_.front());
        to_write_.pop_front();
        v1::Delivery* out = write_buf_.add_deliveries();
        out->set_message_id(d.id.str());
        out->set_sender(d.sender.str());
        out->set_workflow(std::move(d.workflow));
        out->set_purpose(std::move(d.purpose));
        out->set_content_type(std::move(d.content_type));
        write_bytes_ += d.payload.size();
        out->set_payload(std::move(d.payload));
        *out->mutable_accepted_at() = ToTimestamp(d.accepted_at);
        out->set_delivery_count(d.delivery_count);
        out->set_kind(d.kind);
        out->set_local_reference(std::move(d.local_reference));
      }
      writing_ = true;
    }
    StartWrite(&write_buf_);
  }

  void FinishOnce(const absl::Status& s) {
    {
      absl::MutexLock l(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(ToGrpcStatus(s));
  }

  const ExchangeDeps& d_;
  const Identity id_;
  ClaimToken token_ = 0;
  v1::ReceiveRequest req_;
  v1::DeliveryBatch write_buf_;

  absl::Mutex mu_;
  bool opened_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool claiming_ ABSL_GUARDED_BY(mu_) = false;
  bool rewake_ ABSL_GUARDED_BY(mu_) = false;
  bool ack_outstanding_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;  // the client half-closed
  bool drained_ ABSL_GUARDED_BY(mu_) = false;  // the last claim emptied the mailbox
  int reserved_ ABSL_GUARDED_BY(mu_) = 0;      // slots reserved for direct delivery
  uint32_t max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t write_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_set<std::string> in_flight_ ABSL_GUARDED_BY(mu_);  // claimed, not acked
  std::deque<StoredDelivery> to_write_ ABSL_GUARDED_BY(mu_);
  std::vector<MessageId> pending_acks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

namespace {

// Records a caller refused after the handshake and returns `refusal`.
absl::Status Refused(const ExchangeDeps& d, absl::Status refusal, const Identity* who) {
  if (d.audit != nullptr) {
    v1::AuditEntry e;
    if (who != nullptr) {
      e.set_actor(who->org.str());
      e.set_actor_role(std::string(RoleName(who->role)));
    }
    e.add_reasons(ReasonOf(refusal));
    e.set_detail(absl::StrCat("call refused: ", refusal.message()));
    d.audit->RecordRefusal(std::move(e));
  }
  return refusal;
}

}  // namespace

absl::StatusOr<Identity> Identify(grpc::CallbackServerContext* ctx, const ExchangeDeps& d) {
  auto auth = ctx->auth_context();
  std::vector<grpc::string_ref> pems =
      auth ? auth->FindPropertyValues("x509_pem_cert") : std::vector<grpc::string_ref>{};
  if (pems.empty()) {
    return Refused(d,
                   Error(absl::StatusCode::kUnauthenticated, reason::kCertificateRequired,
                         "a verified client certificate is required"),
                   nullptr);
  }
  auto id = d.identities->Get(absl::string_view(pems[0].data(), pems[0].size()));
  if (!id.ok()) return Refused(d, id.status(), nullptr);
  if (d.config->FindOrganisation(id->org) == nullptr) {
    return Refused(d,
                   Error(absl::StatusCode::kPermissionDenied, reason::kUnknownOrganisation,
                         absl::StrCat("organisation ", id->org.str(), " is not registered with this broker")),
                   &*id);
  }
  return id;
}

absl::Status RoleNotAllowed(const ExchangeDeps& d, const Identity& who, absl::string_view what) {
  return Refused(d,
                 Error(absl::StatusCode::kPermissionDenied, reason::kRoleNotAllowed,
                       absl::StrCat(what, " is not allowed for the ", RoleName(who.role), " role")),
                 &who);
}

absl::StatusOr<Identity> Authorize(grpc::CallbackServerContext* ctx, const ExchangeDeps& d, Role role) {
  auto id = Identify(ctx, d);
  if (!id.ok()) return id.status();
  if (id->role != role) {
    return Refused(d,
                   Error(absl::StatusCode::kPermissionDenied, reason::kRoleNotAllowed,
                         absl::StrCat("this call needs the ", RoleName(role), " role; the certificate has ",
                                      RoleName(id->role))),
                   &*id);
  }
  return id;
}

grpc::ServerUnaryReactor* ExchangeService::Send(grpc::CallbackServerContext* ctx, const v1::SendRequest* req,
                                                v1::SendReceipt* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) {
    reactor->Finish(ToGrpcStatus(id.status()));
    return reactor;
  }
  AuditRecord denial;
  auto msg = AdmitNow(deps_, id->org, *req, &denial);
  if (!msg.ok()) {
    if (denial.empty()) {
      reactor->Finish(ToGrpcStatus(msg.status()));
    } else {
      RecordDenial(deps_, std::move(denial), msg.status(),
                   [reactor](absl::Status s) { reactor->Finish(ToGrpcStatus(s)); });
    }
    return reactor;
  }
  const uint64_t bytes = msg->message.payload.size();
  if (!deps_.budget->TryAcquire(bytes)) {
    reactor->Finish(ToGrpcStatus(Error(absl::StatusCode::kResourceExhausted, reason::kMemoryBudgetExhausted,
                                       "the broker is at its memory budget; retry shortly")));
    return reactor;
  }
  FillReceipt(*msg, resp);
  StoreAndDeliver(deps_, std::move(msg->message), [this, reactor, resp, bytes](absl::StatusOr<AppendReceipt> r) {
    deps_.budget->Release(bytes);
    if (r.ok()) {
      resp->set_message_id(r->id.str());
      *resp->mutable_accepted_at() = ToTimestamp(r->accepted_at);
      resp->set_duplicate(r->duplicate);
    }
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerBidiReactor<v1::SendRequest, v1::SendStreamResponse>* ExchangeService::SendStream(
    grpc::CallbackServerContext* ctx) {
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) return new RefusedStream<v1::SendRequest, v1::SendStreamResponse>(id.status());
  if (!EnterStream(deps_)) return new RefusedStream<v1::SendRequest, v1::SendStreamResponse>(TooManyStreams());
  return new SendStreamReactor(deps_, *std::move(id));
}

grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>* ExchangeService::Receive(
    grpc::CallbackServerContext* ctx) {
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) return new RefusedStream<v1::ReceiveRequest, v1::DeliveryBatch>(id.status());
  if (!EnterStream(deps_)) return new RefusedStream<v1::ReceiveRequest, v1::DeliveryBatch>(TooManyStreams());
  return new ReceiveReactor(deps_, *std::move(id));
}

grpc::ServerUnaryReactor* ExchangeService::Ack(grpc::CallbackServerContext* ctx, const v1::AckRequest* req,
                                               v1::AckResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) {
    reactor->Finish(ToGrpcStatus(id.status()));
    return reactor;
  }
  if (req->message_ids().empty() || req->message_ids_size() > 10000) {
    reactor->Finish(ToGrpcStatus(InvalidArgument(reason::kAckInvalid, "give 1 to 10000 message ids")));
    return reactor;
  }
  std::vector<MessageId> ids;
  for (const auto& m : req->message_ids()) {
    if (!IsMessageIdShape(m)) {
      reactor->Finish(ToGrpcStatus(InvalidArgument(reason::kMessageIdInvalid, "a message id is 32 hex characters")));
      return reactor;
    }
    ids.emplace_back(m);
  }
  deps_.store->Ack(id->org, std::move(ids), deps_.clock->Now(), [reactor, resp](absl::StatusOr<AckResult> r) {
    if (r.ok()) {
      for (const auto& m : r->acknowledged) resp->add_acknowledged(m.str());
      for (const auto& m : r->not_found) resp->add_not_found(m.str());
      for (const auto& m : r->expired) resp->add_expired(m.str());
    }
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ExchangeService::Track(grpc::CallbackServerContext* ctx, const v1::TrackRequest* req,
                                                 v1::TrackResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) {
    reactor->Finish(ToGrpcStatus(id.status()));
    return reactor;
  }
  if (!IsMessageIdShape(req->message_id())) {
    reactor->Finish(ToGrpcStatus(InvalidArgument(reason::kMessageIdInvalid, "a message id is 32 hex characters")));
    return reactor;
  }
  deps_.store->Track(id->org, MessageId(req->message_id()), [reactor, resp](absl::StatusOr<TrackInfo> r) {
    if (r.ok()) {
      resp->set_message_id(r->id.str());
      resp->set_sender(r->sender.str());
      resp->set_recipient(r->recipient.str());
      resp->set_workflow(r->workflow);
      resp->set_local_reference(r->local_reference);
      resp->set_status(r->status);
      *resp->mutable_accepted_at() = ToTimestamp(r->accepted_at);
      if (r->first_delivered_at) *resp->mutable_first_delivered_at() = ToTimestamp(*r->first_delivered_at);
      if (r->acknowledged_at) *resp->mutable_acknowledged_at() = ToTimestamp(*r->acknowledged_at);
      if (r->expired_at) *resp->mutable_expired_at() = ToTimestamp(*r->expired_at);
      *resp->mutable_expires_at() = ToTimestamp(r->expires_at);
      resp->set_delivery_count(r->delivery_count);
      resp->set_body_purged(r->body_purged);
      if (r->withheld_at) *resp->mutable_withheld_at() = ToTimestamp(*r->withheld_at);
      resp->set_withheld_reason(r->withheld_reason);
    }
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

}  // namespace carebroker
