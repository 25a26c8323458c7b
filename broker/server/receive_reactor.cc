#include "broker/server/receive_reactor.h"

#include <deque>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "broker/server/grpc_status.h"
#include "broker/server/reactor_util.h"
#include "broker/store/mailbox_rules.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/time.h"

namespace carebroker {
namespace {

// The workflow counted for an acknowledgement of an id this stream did not deliver.
constexpr absl::string_view kUnknownWorkflow = "unknown";

// ------------------------------------------------------------------- Receive

class ReceiveReactor final : public grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>,
                             public Subscriber,
                             public RefCounted {
 public:
  ReceiveReactor(const ServiceDeps& d, Identity id)
      : d_(d), id_(std::move(id)), sends_(d.mailboxes.Sends(id_.org)) {
    thread_local absl::BitGen gen;
    token_ = (absl::Uniform<uint64_t>(gen) >> 1) | 1;  // positive in a signed 64-bit column, never 0
    StartRead(&req_);
  }

  void Wake() override { TryClaim(); }

  ClaimToken Reserve(absl::string_view workflow) override {
    absl::MutexLock l(&mu_);
    if (phase_ == Phase::kAwaitingOpen || end_ != End::kRunning || CreditLocked() <= 0) return 0;
    if (!workflows_.empty() && workflows_.find(absl::StrCat(",", workflow, ",")) == std::string::npos) return 0;
    // An older message on its way into the store would be overtaken.
    if (sends_->unsettled.load() != 0) return 0;
    if (!drained_) {
      // Not drained: only behind a claim in flight that sees every older
      // message (it started after the last of them was stored), and with
      // half the credit left for claims, so held deliveries cannot starve
      // the claims they wait for.
      if (!claiming_ || sends_->settled.load() != claim_seen_ ||
          held_.size() + static_cast<size_t>(reserved_) >= max_in_flight_ / 2) {
        return 0;
      }
    }
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
      gone = end_ == End::kDone;
      if (!gone) {
        d_.budget.ForceAcquire(d.payload.size());
        in_flight_.emplace(d.id.str(), d.workflow);
        // Behind what a claim in flight, or the next one, brings back.
        (drained_ && !claiming_ && held_.empty() ? to_write_ : held_).push_back(std::move(d));
      }
    }
    if (gone) {
      // The stream ended while the message was being stored: put it back.
      Ref();
      d_.store.Release(id_.org, token_, {d.id}, d_.clock.Now(), [this](auto) { Unref(); });
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
        if (phase_ == Phase::kOpen) phase_ = Phase::kClosing;
        finish = AnsweredLocked();
      }
      if (finish) FinishOnce(absl::OkStatus());
      return;
    }
    if (req_.has_open()) {
      auto filter = mailbox::WorkflowList(req_.open().workflows());
      if (!filter.ok()) {
        FinishOnce(filter.status());
        return;
      }
      bool first;
      {
        absl::MutexLock l(&mu_);
        first = phase_ == Phase::kAwaitingOpen;
        if (first) {
          workflows_ = *std::move(filter);
          const uint32_t limit = d_.config.proto().limits().max_in_flight_per_stream();
          const uint32_t asked = req_.open().max_in_flight();
          max_in_flight_ = asked == 0 || asked > limit ? limit : asked;
          large_messages_ = req_.open().large_messages();
          phase_ = Phase::kOpen;
        }
      }
      if (!first) {
        FinishOnce(InvalidArgument(reason::kReceiveAlreadyOpen, "open was sent twice on one stream"));
        return;
      }
      d_.mailboxes.Subscribe(id_.org, this);
      TryClaim();
    } else if (req_.kind_case() == v1::ReceiveRequest::kAck) {
      if (!IsMessageIdShape(req_.ack())) {
        FinishOnce(InvalidArgument(reason::kMessageIdInvalid, "ack is not a message id"));
        return;
      }
      bool opened, flush = false, backlog = false;
      {
        absl::MutexLock l(&mu_);
        opened = phase_ != Phase::kAwaitingOpen;
        if (opened) {
          // The workflow, for the metrics: known for what this stream
          // delivered ("unknown" for an id it did not).
          auto node = in_flight_.extract(req_.ack());
          pending_ack_workflows_.emplace(req_.ack(), node.empty() ? std::string(kUnknownWorkflow) : std::move(node.mapped()));
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
    } else if (req_.kind_case() == v1::ReceiveRequest::kReject) {
      if (!OnReject(req_.reject())) return;
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
      d_.budget.Release(write_bytes_);
      write_bytes_ = 0;
    }
    if (!ok) {
      FinishOnce(absl::CancelledError("stream broken"));
      return;
    }
    MaybeWrite();
  }

  void OnDone() override {
    d_.mailboxes.Unsubscribe(id_.org, this);
    std::vector<MessageId> unacked;
    {
      absl::MutexLock l(&mu_);
      end_ = End::kDone;
      for (const auto& [id, workflow] : in_flight_) unacked.emplace_back(id);
      in_flight_.clear();
      for (const auto& d : to_write_) d_.budget.Release(d.payload.size());
      for (const auto& d : held_) d_.budget.Release(d.payload.size());
      to_write_.clear();
      held_.clear();
    }
    if (!unacked.empty()) {
      // Unacknowledged deliveries go back to the mailbox at once.
      Ref();
      d_.store.Release(id_.org, token_, std::move(unacked), d_.clock.Now(), [this](auto) { Unref(); });
    }
    FlushAcks();  // acks that arrived before the end still count
    d_.streams.fetch_sub(1);
    Unref();
  }

 private:
  void TryClaim() {
    // Read before the claim starts, so the claim sees at least this many.
    const uint64_t seen = sends_->settled.load();
    absl::MutexLock l(&mu_);
    if (phase_ == Phase::kAwaitingOpen || end_ != End::kRunning) return;
    if (claiming_) {
      rewake_ = true;
      return;
    }
    const int credit = CreditLocked();
    if (credit <= 0 || d_.budget.Exhausted()) return;
    claiming_ = true;
    rewake_ = false;
    claim_seen_ = seen;
    claim_asked_ = std::min(credit, 512);
    const absl::Time now = d_.clock.Now();
    ClaimRequest req{id_.org,          claim_asked_,
                     now,              now + d_.config.visibility_timeout(),
                     token_,           large_messages_,
                     d_.config.proto().delivery().max_attempts(), workflows_};
    Ref();
    d_.store.Claim(std::move(req), [this, asked = claim_asked_](auto r) { OnClaimed(asked, std::move(r)); });
  }

  void OnClaimed(int asked, absl::StatusOr<std::vector<StoredDelivery>> r) {
    // unsettled before settled (the reverse of EndStoredSend's order).
    const uint64_t unsettled = sends_->unsettled.load();
    const uint64_t settled = sends_->settled.load();
    bool again = false;
    {
      absl::MutexLock l(&mu_);
      claiming_ = false;
      claim_asked_ = 0;
      if (r.ok() && end_ != End::kDone) {
        for (auto& d : *r) {
          // Held direct deliveries go out in the store's order among first
          // deliveries (redeliveries have no place in it).
          if (d.delivery_count == 1) WriteHeldBefore(d);
          if (Withheld(d)) continue;
          d_.budget.ForceAcquire(d.payload.size());
          in_flight_.emplace(d.id.str(), d.workflow);
          to_write_.push_back(std::move(d));
        }
        const bool full = static_cast<int>(r->size()) == asked;
        // More to claim: the store may hold more, or a message stored
        // without a reservation became durable after this claim started.
        again = rewake_ || full || settled != claim_seen_;
        // Nothing older is left in the store or on its way: direct
        // deliveries may go straight out.
        drained_ = !again && unsettled == 0;
        // The rest follow once nothing older can come back: this claim
        // returned all it could see, and it started after every older
        // message was stored (Reserve). Otherwise they wait for the next.
        if (!full) {
          for (auto& d : held_) to_write_.push_back(std::move(d));
          held_.clear();
        }
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

  // Moves the held deliveries that come before `next` in the store's order
  // (oldest first: accepted_at, then seq) to the write queue.
  void WriteHeldBefore(const StoredDelivery& next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (!held_.empty() && std::tie(held_.front().accepted_at, held_.front().seq) < std::tie(next.accepted_at, next.seq)) {
      to_write_.push_back(std::move(held_.front()));
      held_.pop_front();
    }
  }

  // The consent re-check at delivery: a message whose person recorded
  // dissent (or an opt-out that applies) while it waited is withheld for
  // good, and its sender sees WITHHELD in Track.
  bool Withheld(const StoredDelivery& d) {
    absl::string_view reason = d_.policy.CheckAtDelivery(d, id_.org);
    if (reason.empty()) return false;
    Ref();
    WithholdAtDelivery(d_.store, d_.metrics, d, id_.org, reason, d_.clock.Now(), [this](auto) { Unref(); });
    return true;
  }

  // Deliveries this stream may still take (a claim in flight may bring
  // back as many as it asked for).
  int CreditLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<int>(max_in_flight_) - static_cast<int>(in_flight_.size()) - reserved_ - claim_asked_;
  }

  void FlushAcks() {
    std::vector<MessageId> ids;
    absl::flat_hash_map<std::string, std::string> workflows;
    {
      absl::MutexLock l(&mu_);
      if (ack_outstanding_ || pending_acks_.empty()) return;
      ids.swap(pending_acks_);
      workflows.swap(pending_ack_workflows_);
      ack_outstanding_ = true;
    }
    Ref();
    d_.store.Ack(id_.org, std::move(ids), d_.clock.Now(),
                 [this, workflows = std::move(workflows)](absl::StatusOr<AckResult> r) {
      {
        absl::MutexLock l(&mu_);
        ack_outstanding_ = false;
      }
      if (!r.ok()) {
        FinishOnce(r.status());
      } else {
        // One counter update per workflow in the batch, not per ack.
        absl::flat_hash_map<absl::string_view, uint64_t> by_workflow;
        for (const auto& a : r->acknowledged) {
          auto w = workflows.find(a.str());
          ++by_workflow[w == workflows.end() ? kUnknownWorkflow : absl::string_view(w->second)];
        }
        for (const auto& [workflow, n] : by_workflow) d_.metrics.acknowledged.With({std::string(workflow)}).Inc(n);
        if (LogEnabled(LogLevel::kDebug)) {
          for (const auto& a : r->acknowledged) {
            Log(LogLevel::kDebug, "message.acknowledged").Str("message_id", a.str()).Str("recipient", id_.org.str());
          }
        }
        FlushAcks();
        FinishIfAnswered();
      }
      Unref();
    });
  }

  // A delivery refused for good: held in the store, its place in
  // max_in_flight freed. False when the stream is finished (a bad request).
  bool OnReject(const v1::RejectRequest& rj) {
    absl::Status bad = IsMessageIdShape(rj.message_id())
                           ? mailbox::CheckRejection(rj.code(), rj.text())
                           : InvalidArgument(reason::kMessageIdInvalid, "reject names no message id");
    bool opened = false, backlog = false;
    if (bad.ok()) {
      absl::MutexLock l(&mu_);
      opened = phase_ != Phase::kAwaitingOpen;
      if (opened) {
        in_flight_.erase(rj.message_id());
        ++rejects_outstanding_;
        backlog = !drained_;
      }
    }
    if (bad.ok() && !opened) {
      bad = InvalidArgument(reason::kReceiveOpenRequired, "the first request on a Receive stream must be open");
    }
    if (!bad.ok()) {
      FinishOnce(bad);
      return false;
    }
    Ref();
    d_.store.Reject(Rejection{id_.org, MessageId(rj.message_id()), rj.code(), rj.text(), d_.clock.Now()},
                    [this](absl::StatusOr<v1::MessageStatus> r) {
                      {
                        absl::MutexLock l(&mu_);
                        --rejects_outstanding_;
                      }
                      // A message not held now (acknowledged, expired, not
                      // this mailbox's) is ignored, as such an ack is.
                      if (!r.ok() && r.status().code() != absl::StatusCode::kNotFound) {
                        FinishOnce(r.status());
                      } else {
                        FinishIfAnswered();
                      }
                      Unref();
                    });
    if (backlog) TryClaim();
    return true;
  }

  // Every ack and reject the client sent is durable.
  bool AnsweredLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !ack_outstanding_ && pending_acks_.empty() && rejects_outstanding_ == 0;
  }

  // A stream the client closed finishes once its acks and rejects are durable.
  void FinishIfAnswered() {
    bool finish;
    {
      absl::MutexLock l(&mu_);
      finish = phase_ == Phase::kClosing && AnsweredLocked();
    }
    if (finish) FinishOnce(absl::OkStatus());
  }

  // Writes the claimed deliveries waiting at the front as one response (at
  // least one; more while they fit in one message of the size limit), if
  // no write is in flight.
  void MaybeWrite() {
    {
      absl::MutexLock l(&mu_);
      if (writing_ || end_ != End::kRunning || to_write_.empty()) return;
      const uint64_t cap = d_.config.proto().limits().max_message_bytes();
      const absl::Time now = d_.clock.Now();
      write_buf_.Clear();
      write_bytes_ = 0;
      while (!to_write_.empty() &&
             (write_bytes_ == 0 || write_bytes_ + to_write_.front().payload.size() <= cap)) {
        StoredDelivery d = std::move(to_write_.front());
        to_write_.pop_front();
        v1::Delivery* out = write_buf_.add_deliveries();
        d_.metrics.delivered.With({d.workflow}).Inc();
        if (d.delivery_count == 1) d_.metrics.send_to_delivery.Observe(absl::ToDoubleSeconds(now - d.accepted_at));
        Log(LogLevel::kDebug, "message.delivered")
            .Str("message_id", d.id.str())
            .Str("sender", d.sender.str())
            .Str("recipient", id_.org.str())
            .Str("workflow", d.workflow)
            .Int("delivery_count", d.delivery_count)
            .Ms("since_accepted", now - d.accepted_at);
        write_bytes_ += d.payload.size();
        ToDelivery(d, out);
      }
      writing_ = true;
    }
    StartWrite(&write_buf_);
  }

  void FinishOnce(const absl::Status& s) {
    {
      absl::MutexLock l(&mu_);
      if (end_ != End::kRunning) return;
      end_ = End::kFinished;
    }
    Finish(ToGrpcStatus(s));
  }

  const ServiceDeps& d_;
  const Identity id_;
  const MailboxSends* const sends_;
  ClaimToken token_ = 0;
  v1::ReceiveRequest req_;
  v1::DeliveryBatch write_buf_;

  // The stream's state is two small machines and the activity below.
  //
  // What the client has done (phase_):
  //   kAwaitingOpen  --open-->  kOpen  --half-close-->  kClosing
  //   acks are taken in kOpen; kClosing finishes once every ack is durable;
  //   a half-close before open finishes at once.
  // What the server has done (end_):
  //   kRunning  --FinishOnce-->  kFinished  --OnDone-->  kDone
  //   claims, writes and reservations happen only in kRunning with the
  //   stream opened; in kDone a direct delivery goes back to the store.
  //
  // One of each operation is in flight at a time:
  //   writing_          a StartWrite of write_buf_ (write_bytes_ of budget)
  //   claiming_         a Store::Claim of claim_asked_ deliveries, started
  //                     when sends_->settled was claim_seen_; rewake_: a
  //                     wake-up came meanwhile, so claim again when it returns
  //   ack_outstanding_  a Store::Ack of earlier acks; later ones wait in
  //                     pending_acks_ (rejects are rare: each its own
  //                     Store::Reject, rejects_outstanding_ of them)
  //   drained_          the last claim emptied the mailbox and no send is on
  //                     its way into the store unreserved, so a direct
  //                     delivery cannot overtake a stored one
  //   reserved_         direct-delivery slots reserved and not yet settled
  //   held_             direct deliveries that arrived while not drained or
  //                     during a claim: written after that claim's results
  //                     once no older message can still be claimed
  enum class Phase { kAwaitingOpen, kOpen, kClosing };
  enum class End { kRunning, kFinished, kDone };

  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kAwaitingOpen;
  End end_ ABSL_GUARDED_BY(mu_) = End::kRunning;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool claiming_ ABSL_GUARDED_BY(mu_) = false;
  bool rewake_ ABSL_GUARDED_BY(mu_) = false;
  bool ack_outstanding_ ABSL_GUARDED_BY(mu_) = false;
  int rejects_outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  bool drained_ ABSL_GUARDED_BY(mu_) = false;
  int reserved_ ABSL_GUARDED_BY(mu_) = 0;
  int claim_asked_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t claim_seen_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool large_messages_ ABSL_GUARDED_BY(mu_) = false;  // claims chunked messages too (Open)
  std::string workflows_ ABSL_GUARDED_BY(mu_);        // Open's filter, mailbox::WorkflowList; "" every workflow
  uint64_t write_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Claimed, not acked: id -> workflow.
  absl::flat_hash_map<std::string, std::string> in_flight_ ABSL_GUARDED_BY(mu_);
  // The workflows of pending_acks_, for the metrics.
  absl::flat_hash_map<std::string, std::string> pending_ack_workflows_ ABSL_GUARDED_BY(mu_);
  std::deque<StoredDelivery> to_write_ ABSL_GUARDED_BY(mu_);
  std::deque<StoredDelivery> held_ ABSL_GUARDED_BY(mu_);
  std::vector<MessageId> pending_acks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>* NewReceiveReactor(const ServiceDeps& d,
                                                                                  Identity id) {
  return new ReceiveReactor(d, std::move(id));
}

}  // namespace carebroker
