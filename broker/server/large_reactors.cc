#include "broker/server/large_reactors.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "broker/server/grpc_status.h"
#include "broker/server/reactor_util.h"
#include "broker/store/mailbox_rules.h"

namespace carebroker {
namespace {

// ----------------------------------------------------------------- SendLarge

class SendLargeReactor final : public grpc::ServerReadReactor<v1::LargeSendRequest>, public RefCounted {
 public:
  SendLargeReactor(const ServiceDeps& d, Identity id, v1::SendReceipt* receipt)
      : d_(d), id_(std::move(id)), receipt_(receipt) {
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side, or the call broke
      if (next_ == 0) return End(InvalidArgument(reason::kChunkRangeInvalid, "the stream ended before its start"));
      return End(Error(absl::StatusCode::kFailedPrecondition, reason::kChunksIncomplete,
                       absl::StrCat("the stream ended after ", next_ - 1, " of ", total_, " chunks; message ",
                                    receipt_->message_id(), " stays uploading until it expires")));
    }
    if (next_ == 0) return Start();
    Chunk();
  }

  void OnDone() override {
    d_.streams.fetch_sub(1);
    Unref();
  }

 private:
  void Start() {
    if (!req_.has_start()) {
      return End(InvalidArgument(reason::kChunkRangeInvalid, "the first request of a large send is its start"));
    }
    v1::LargeSendRequest::Start& start = *req_.mutable_start();
    if (start.chunks() < 1 || start.chunks() > mailbox::kMaxChunks) {
      return End(InvalidArgument(reason::kChunkRangeInvalid,
                                 absl::StrCat("a large send has 1 to ", mailbox::kMaxChunks, " chunks")));
    }
    if (start.request().payload().size() > kMaxLargeChunkBytes) return End(ChunkTooLarge());
    total_ = start.chunks();
    bytes_ = start.request().payload().size();
    next_ = 1;
    Ref();
    d_.sends.Send(id_.org, std::move(*start.mutable_request()),
                  [this](absl::StatusOr<v1::SendReceipt> r) {
                    if (!r.ok()) {
                      End(r.status());
                    } else {
                      *receipt_ = *std::move(r);
                      next_ = 2;
                      // A repeated idempotency key answers with the first
                      // message at once (Track says whether it completed).
                      if (receipt_->duplicate() || total_ == 1) {
                        End(absl::OkStatus());
                      } else {
                        StartRead(&req_);
                      }
                    }
                    Unref();
                  },
                  nullptr, SendOptions{{}, total_, 0});
  }

  static absl::Status ChunkTooLarge() {
    return Error(absl::StatusCode::kResourceExhausted, reason::kMessageTooLarge,
                 absl::StrCat("a large send's chunk is at most ", kMaxLargeChunkBytes, " bytes (32 MiB)"));
  }

  void Chunk() {
    if (!req_.has_chunk()) {
      return End(InvalidArgument(reason::kChunkRangeInvalid, "after its start a large send has only chunks"));
    }
    if (req_.chunk().empty()) return End(InvalidArgument(reason::kPayloadEmpty, "a chunk is empty"));
    if (req_.chunk().size() > kMaxLargeChunkBytes) return End(ChunkTooLarge());
    bytes_ += req_.chunk().size();
    if (bytes_ > kMaxLargeMessageBytes) {
      return End(Error(absl::StatusCode::kResourceExhausted, reason::kMessageTooLarge,
                       absl::StrCat("a large message is at most ", kMaxLargeMessageBytes, " bytes")));
    }
    Ref();
    d_.sends.SendChunk(
        ChunkUpload{id_.org, MessageId(receipt_->message_id()), next_, total_, std::move(*req_.mutable_chunk()),
                    d_.clock.Now()},
        [this](absl::StatusOr<ChunkStored> stored) {
          if (!stored.ok()) {
            End(stored.status());
          } else if (stored->complete) {
            End(absl::OkStatus());
          } else {
            ++next_;
            StartRead(&req_);
          }
          Unref();
        });
  }

  void End(const absl::Status& s) {
    if (!s.ok()) receipt_->Clear();
    Finish(ToGrpcStatus(s));
  }

  const ServiceDeps& d_;
  const Identity id_;
  v1::SendReceipt* const receipt_;
  v1::LargeSendRequest req_;  // one read or store operation in flight at a time
  uint32_t total_ = 0;
  uint32_t next_ = 0;  // the chunk expected next; 0 before the start
  uint64_t bytes_ = 0;
};

// ------------------------------------------------------------------ Download

class DownloadReactor final : public grpc::ServerWriteReactor<v1::DownloadResponse>, public RefCounted {
 public:
  DownloadReactor(const ServiceDeps& d, Identity id, MessageId message)
      : d_(d), id_(std::move(id)), message_(std::move(message)) {
    Fetch(true);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke"));
    WriteNext();
  }

  void OnDone() override {
    d_.streams.fetch_sub(1);
    Unref();
  }

 private:
  // The first fetch counts and audits the delivery; later ones only read.
  // From the first on, and every third of delivery.visibility_timeout, the
  // message's claim is renewed (Hide), so a large download over a slow link
  // outlasting the timeout does not see the message handed out again
  // mid-way; what Hide answers changes nothing (a message no stream
  // claimed has no claim to keep).
  void Fetch(bool first) {
    const absl::Time now = d_.clock.Now();
    const absl::Duration timeout = d_.config.visibility_timeout();
    if (now - hidden_at_ >= timeout / 3) {
      hidden_at_ = now;
      d_.store.Hide(id_.org, message_, now + timeout, [](absl::StatusOr<bool>) {});
    }
    Ref();
    d_.store.Fetch(FetchRequest{id_.org, message_, now, first, true, chunk_, static_cast<int>(piece_),
                                d_.config.proto().delivery().max_attempts()},
                   [this, first](absl::StatusOr<Fetched> got) {
                     OnFetched(first, std::move(got));
                     Unref();
                   });
  }

  void OnFetched(bool first, absl::StatusOr<Fetched> got) {
    if (!got.ok()) return End(got.status());
    if (!mailbox::Fetchable(got->status)) {
      return End(Error(absl::StatusCode::kNotFound, reason::kMessageNotFound,
                       absl::StrCat(first ? "" : "during the download: ", "the message is ",
                                    mailbox::StatusWord(got->status))));
    }
    StoredDelivery& d = got->delivery;
    piece_data_ = std::move(d.payload);
    offset_ = 0;
    more_ = got->more;
    if (!first) return WriteNext();
    chunks_ = d.chunks;
    // The consent re-check at delivery, as a Receive stream makes it.
    if (absl::string_view why = d_.policy.CheckAtDelivery(d, id_.org); !why.empty()) {
      piece_data_.clear();
      Ref();
      WithholdAtDelivery(d_.store, d_.metrics, d, id_.org, why, d_.clock.Now(),
                         [this, why = std::string(why)](absl::StatusOr<int> r) {
                           End(r.ok() ? Error(absl::StatusCode::kNotFound, why,
                                              "withheld at delivery: the person's recorded wishes changed")
                                      : r.status());
                           Unref();
                         });
      return;
    }
    d_.metrics.delivered.With({d.workflow}).Inc();
    d.payload.clear();
    ToDelivery(d, buf_.mutable_delivery());
    StartWrite(&buf_);
  }

  // The next slice of the piece in hand, else the next piece or chunk,
  // else the end.
  void WriteNext() {
    if (offset_ < piece_data_.size()) {
      const size_t n = std::min(kDownloadWriteBytes, piece_data_.size() - offset_);
      buf_.set_data(piece_data_.data() + offset_, n);
      offset_ += n;
      return StartWrite(&buf_);
    }
    piece_data_.clear();
    piece_data_.shrink_to_fit();
    if (more_) {
      ++piece_;
      return Fetch(false);
    }
    if (chunk_ < chunks_) {
      ++chunk_;
      piece_ = 0;
      return Fetch(false);
    }
    End(absl::OkStatus());
  }

  void End(const absl::Status& s) { Finish(ToGrpcStatus(s)); }

  const ServiceDeps& d_;
  const Identity id_;
  const MessageId message_;
  v1::DownloadResponse buf_;  // one write in flight
  std::string piece_data_;    // the piece being written
  size_t offset_ = 0;
  bool more_ = false;  // the chunk has a piece after this one
  uint32_t chunks_ = 1;
  uint32_t chunk_ = 1;
  uint32_t piece_ = 0;
  absl::Time hidden_at_ = absl::InfinitePast();  // when the claim was last renewed
};

}  // namespace

grpc::ServerReadReactor<v1::LargeSendRequest>* NewSendLargeReactor(const ServiceDeps& d, Identity id,
                                                                  v1::SendReceipt* receipt) {
  return new SendLargeReactor(d, std::move(id), receipt);
}

grpc::ServerWriteReactor<v1::DownloadResponse>* NewDownloadReactor(const ServiceDeps& d, Identity id,
                                                                   MessageId message) {
  return new DownloadReactor(d, std::move(id), std::move(message));
}

}  // namespace carebroker
