#include "broker/server/receive_reactor.h"

#include <deque>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/synchronization/mutex.h"
#include "broker/server/grpc_status.h"
#include "broker/server/reactor_util.h"
#include "core/ids.h"
#include "core/time.h"

namespace carebroker {
namespace {

// ------------------------------------------------------------------- Receive

class ReceiveReactor final : public grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>,
                             public Subscriber,
                             public RefCounted {
 public:
  ReceiveReactor(const ServiceDeps& d, Identity id) : d_(d), id_(std::move(id)) {
    thread_local absl::BitGen gen;
    token_ = (absl::Uniform<uint64_t>(gen) >> 1) | 1;  // positive in a signed 64-bit column, never 0
    StartRead(&req_);
  }

  void Wake() override { TryClaim(); }

  ClaimToken Reserve() override {
    absl::MutexLock l(&mu_);
    if (phase_ == Phase::kAwaitingOpen || end_ != End::kRunning || !drained_ || claiming_ || CreditLocked() <= 0) {
      return 0;
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
        in_flight_.insert(d.id.str());
        to_write_.push_back(std::move(d));
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
        finish = !ack_outstanding_ && pending_acks_.empty();
      }
      if (finish) FinishOnce(absl::OkStatus());
      return;
    }
    if (req_.has_open()) {
      bool first;
      {
        absl::MutexLock l(&mu_);
        first = phase_ == Phase::kAwaitingOpen;
        if (first) {
          const uint32_t limit = d_.config.proto().limits().max_in_flight_per_stream();
          const uint32_t asked = req_.open().max_in_flight();
          max_in_flight_ = asked == 0 || asked > limit ? limit : asked;
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
      for (const auto& id : in_flight_) unacked.emplace_back(id);
      in_flight_.clear();
      for (const auto& d : to_write_) d_.budget.Release(d.payload.size());
      to_write_.clear();
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
    const absl::Time now = d_.clock.Now();
    ClaimRequest req{id_.org, std::min(credit, 512), now, now + d_.config.visibility_timeout(), token_};
    Ref();
    d_.store.Claim(std::move(req), [this, asked = std::min(credit, 512)](auto r) { OnClaimed(asked, std::move(r)); });
  }

  void OnClaimed(int asked, absl::StatusOr<std::vector<StoredDelivery>> r) {
    bool again = false;
    {
      absl::MutexLock l(&mu_);
      claiming_ = false;
      if (r.ok() && end_ != End::kDone) {
        for (auto& d : *r) {
          if (Withheld(d)) continue;
          d_.budget.ForceAcquire(d.payload.size());
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
    absl::string_view reason = d_.policy.CheckAtDelivery(d, id_.org);
    if (reason.empty()) return false;
    Ref();
    d_.store.Withhold(id_.org, {d.id}, std::string(reason), d_.clock.Now(), [this](auto) { Unref(); });
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
    d_.store.Ack(id_.org, std::move(ids), d_.clock.Now(), [this](absl::StatusOr<AckResult> r) {
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
          finish = phase_ == Phase::kClosing && !ack_outstanding_ && pending_acks_.empty();
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
      if (writing_ || end_ != End::kRunning || to_write_.empty()) return;
      const uint64_t cap = d_.config.proto().limits().max_message_bytes();
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
      if (end_ != End::kRunning) return;
      end_ = End::kFinished;
    }
    Finish(ToGrpcStatus(s));
  }

  const ServiceDeps& d_;
  const Identity id_;
  ClaimToken token_ = 0;
  v1::ReceiveRequest req_;
  v1::DeliveryBatch write_buf_;

  // The stream's state is two small machines and five activity flags.
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
  //   claiming_         a Store::Claim; rewake_: a wake-up came meanwhile,
  //                     so claim again when it returns
  //   ack_outstanding_  a Store::Ack of earlier acks; later ones wait in
  //                     pending_acks_
  //   drained_          the last claim emptied the mailbox, so direct
  //                     deliveries (Reserve) cannot overtake stored ones
  //   reserved_         direct-delivery slots reserved and not yet settled
  enum class Phase { kAwaitingOpen, kOpen, kClosing };
  enum class End { kRunning, kFinished, kDone };

  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kAwaitingOpen;
  End end_ ABSL_GUARDED_BY(mu_) = End::kRunning;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool claiming_ ABSL_GUARDED_BY(mu_) = false;
  bool rewake_ ABSL_GUARDED_BY(mu_) = false;
  bool ack_outstanding_ ABSL_GUARDED_BY(mu_) = false;
  bool drained_ ABSL_GUARDED_BY(mu_) = false;
  int reserved_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t write_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_set<std::string> in_flight_ ABSL_GUARDED_BY(mu_);  // claimed, not acked
  std::deque<StoredDelivery> to_write_ ABSL_GUARDED_BY(mu_);
  std::vector<MessageId> pending_acks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>* NewReceiveReactor(const ServiceDeps& d,
                                                                                  Identity id) {
  return new ReceiveReactor(d, std::move(id));
}

}  // namespace carebroker
