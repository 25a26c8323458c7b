#include "broker/server/send_stream_reactor.h"

#include <deque>

#include "absl/synchronization/mutex.h"
#include "broker/server/grpc_status.h"
#include "broker/server/reactor_util.h"

namespace carebroker {
namespace {

// ---------------------------------------------------------------- SendStream

class SendStreamReactor final : public grpc::ServerBidiReactor<v1::SendRequest, v1::SendStreamResponse>,
                                public RefCounted {
 public:
  SendStreamReactor(const ServiceDeps& d, Identity id, std::shared_ptr<Executor::Serial> serial)
      : d_(d),
        id_(std::move(id)),
        max_pending_(d.config.proto().limits().max_pending_per_stream()),
        serial_(std::move(serial)) {
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
    bool read_more;
    Slot* slot;  // stable: only popped once ready, after its send is answered
    {
      absl::MutexLock l(&mu_);
      slot = &slots_.emplace_back();
      read_more = slots_.size() < max_pending_;
      if (!read_more) read_paused_ = true;
    }
    Ref();
    d_.sends.Send(
        id_.org, std::move(req_),
        [this, slot](absl::StatusOr<v1::SendReceipt> r) {
          {
            absl::MutexLock l(&mu_);
            if (r.ok()) {
              *slot->result.mutable_receipt() = *std::move(r);
            } else {
              *slot->result.mutable_error() = ToStreamError(r.status());
            }
            slot->ready = true;
          }
          MaybeWrite();
          Unref();
        },
        serial_);
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
    d_.streams.fetch_sub(1);
    Unref();
  }

 private:
  struct Slot {
    bool ready = false;
    v1::SendResult result;
  };

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

  const ServiceDeps& d_;
  const Identity id_;
  const size_t max_pending_;
  const std::shared_ptr<Executor::Serial> serial_;  // this stream's sends, in request order
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

}  // namespace

grpc::ServerBidiReactor<v1::SendRequest, v1::SendStreamResponse>* NewSendStreamReactor(const ServiceDeps& d,
                                                                                       Identity id) {
  return new SendStreamReactor(d, std::move(id), d.sends.NewSerial());
}

}  // namespace carebroker
