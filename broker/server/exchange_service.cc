#include "broker/server/exchange_service.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "broker/exchange/intake.h"
#include "broker/server/auth.h"
#include "broker/server/grpc_status.h"
#include "broker/server/large_reactors.h"
#include "broker/server/reactor_util.h"
#include "broker/server/receive_reactor.h"
#include "broker/server/send_stream_reactor.h"
#include "broker/store/mailbox_rules.h"
#include "core/ids.h"
#include "core/reasons.h"
#include "core/status.h"
#include "core/time.h"

namespace carebroker {

grpc::ServerUnaryReactor* ExchangeService::Send(grpc::CallbackServerContext* ctx, const v1::SendRequest* req,
                                                v1::SendReceipt* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) {
    reactor->Finish(ToGrpcStatus(id.status()));
    return reactor;
  }
  deps_.sends.Send(id->org, *req, [reactor, resp](absl::StatusOr<v1::SendReceipt> r) {
    if (r.ok()) *resp = *std::move(r);
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerBidiReactor<v1::SendRequest, v1::SendStreamResponse>* ExchangeService::SendStream(
    grpc::CallbackServerContext* ctx) {
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) return new RefusedStream<v1::SendRequest, v1::SendStreamResponse>(id.status());
  if (!EnterStream(deps_)) return new RefusedStream<v1::SendRequest, v1::SendStreamResponse>(TooManyStreams());
  return NewSendStreamReactor(deps_, *std::move(id));
}

grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>* ExchangeService::Receive(
    grpc::CallbackServerContext* ctx) {
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) return new RefusedStream<v1::ReceiveRequest, v1::DeliveryBatch>(id.status());
  if (!EnterStream(deps_)) return new RefusedStream<v1::ReceiveRequest, v1::DeliveryBatch>(TooManyStreams());
  return NewReceiveReactor(deps_, *std::move(id));
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
  deps_.store.Ack(id->org, std::move(ids), deps_.clock.Now(), [reactor, resp](absl::StatusOr<AckResult> r) {
    if (r.ok()) {
      for (const auto& m : r->acknowledged) resp->add_acknowledged(m.str());
      for (const auto& m : r->not_found) resp->add_not_found(m.str());
      for (const auto& m : r->expired) resp->add_expired(m.str());
    }
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ExchangeService::Reject(grpc::CallbackServerContext* ctx, const v1::RejectRequest* req,
                                                  v1::RejectResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = Authorize(ctx, deps_, Role::kAgency);
  absl::Status bad = !id.ok()                               ? id.status()
                     : !IsMessageIdShape(req->message_id()) ? InvalidArgument(reason::kMessageIdInvalid,
                                                                              "a message id is 32 hex characters")
                                                            : mailbox::CheckRejection(req->code(), req->text());
  if (!bad.ok()) {
    reactor->Finish(ToGrpcStatus(bad));
    return reactor;
  }
  deps_.store.Reject(Rejection{id->org, MessageId(req->message_id()), req->code(), req->text(), deps_.clock.Now()},
                     [reactor, resp](absl::StatusOr<v1::MessageStatus> r) {
                       if (r.ok()) resp->set_status(*r);
                       reactor->Finish(ToGrpcStatus(r.status()));
                     });
  return reactor;
}

namespace {
// A Track names its message by id or by the caller's idempotency key, one of the two.
absl::Status CheckTrackRequest(const v1::TrackRequest& req) {
  if (req.idempotency_key().empty() == req.message_id().empty()) {
    return InvalidArgument(reason::kMessageIdInvalid, "track by a message id or by an idempotency key, one of the two");
  }
  if (req.idempotency_key().size() > kMaxIdempotencyKeyBytes) {
    return InvalidArgument(reason::kIdempotencyKeyInvalid,
                           absl::StrCat("an idempotency key is at most ", kMaxIdempotencyKeyBytes, " characters"));
  }
  if (!req.message_id().empty() && !IsMessageIdShape(req.message_id())) {
    return InvalidArgument(reason::kMessageIdInvalid, "a message id is 32 hex characters");
  }
  return absl::OkStatus();
}
}  // namespace

grpc::ServerUnaryReactor* ExchangeService::Track(grpc::CallbackServerContext* ctx, const v1::TrackRequest* req,
                                                 v1::TrackResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) {
    reactor->Finish(ToGrpcStatus(id.status()));
    return reactor;
  }
  const bool by_key = !req->idempotency_key().empty();
  const absl::Status bad = CheckTrackRequest(*req);
  if (!bad.ok()) {
    reactor->Finish(ToGrpcStatus(bad));
    return reactor;
  }
  auto answer = [reactor, resp, caller = id->org](absl::StatusOr<TrackInfo> r) {
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
      if (r->held_at) *resp->mutable_held_at() = ToTimestamp(*r->held_at);
      resp->set_held_reason(r->held_reason);
      resp->set_rejection_code(r->rejection_code);
      resp->set_rejection_text(r->rejection_text);
      resp->set_replaces(r->replaces.str());
      // A redirect's new message is another organisation's: only its sender learns its id.
      if (r->sender == caller) resp->set_replaced_by(r->replaced_by.str());
    }
    reactor->Finish(ToGrpcStatus(r.status()));
  };
  if (by_key) {
    deps_.store.TrackByKey(id->org, req->idempotency_key(), deps_.clock.Now() - deps_.config.idempotency_window(),
                           std::move(answer));
  } else {
    deps_.store.Track(id->org, MessageId(req->message_id()), std::move(answer));
  }
  return reactor;
}

grpc::ServerReadReactor<v1::LargeSendRequest>* ExchangeService::SendLarge(grpc::CallbackServerContext* ctx,
                                                                            v1::SendReceipt* resp) {
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) return new Refused<grpc::ServerReadReactor<v1::LargeSendRequest>>(id.status());
  if (!EnterStream(deps_)) return new Refused<grpc::ServerReadReactor<v1::LargeSendRequest>>(TooManyStreams());
  return NewSendLargeReactor(deps_, *std::move(id), resp);
}

grpc::ServerWriteReactor<v1::DownloadResponse>* ExchangeService::Download(grpc::CallbackServerContext* ctx,
                                                                          const v1::DownloadRequest* req) {
  auto id = Authorize(ctx, deps_, Role::kAgency);
  if (!id.ok()) return new Refused<grpc::ServerWriteReactor<v1::DownloadResponse>>(id.status());
  if (!IsMessageIdShape(req->message_id())) {
    return new Refused<grpc::ServerWriteReactor<v1::DownloadResponse>>(
        InvalidArgument(reason::kMessageIdInvalid, "a message id is 32 hex characters"));
  }
  if (!EnterStream(deps_)) return new Refused<grpc::ServerWriteReactor<v1::DownloadResponse>>(TooManyStreams());
  return NewDownloadReactor(deps_, *std::move(id), MessageId(req->message_id()));
}

}  // namespace carebroker
