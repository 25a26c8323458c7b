// carebroker.v1.Exchange over the gRPC callback API.
//
// Every RPC first derives the caller's identity from its verified client
// certificate and requires the agency role and a registered organisation
// (server/auth.h). No handler blocks and none parses a payload: sends go
// through the send pipeline (exchange/send_pipeline.h), whose CPU work runs
// on the intake executor; store work is asynchronous. Each stream has one
// write in flight, a bounded number of outstanding sends (SendStream stops
// reading when full) and a bounded number of unacknowledged deliveries
// (Receive claims only what it has credit for); a large send or download
// holds one chunk or piece at a time. The reactors are in
// send_stream_reactor.h, receive_reactor.h and large_reactors.h.
#pragma once

#include "broker/server/service_deps.h"
#include "carebroker/v1/exchange.grpc.pb.h"

namespace carebroker {

class ExchangeService final : public v1::Exchange::CallbackService {
 public:
  explicit ExchangeService(const ServiceDeps& deps) : deps_(deps) {}

  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* ctx, const v1::SendRequest* req,
                                 v1::SendReceipt* resp) override;
  grpc::ServerBidiReactor<v1::SendRequest, v1::SendStreamResponse>* SendStream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>* Receive(grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* ctx, const v1::AckRequest* req,
                                v1::AckResponse* resp) override;
  grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* ctx, const v1::RejectRequest* req,
                                   v1::RejectResponse* resp) override;
  grpc::ServerUnaryReactor* Track(grpc::CallbackServerContext* ctx, const v1::TrackRequest* req,
                                  v1::TrackResponse* resp) override;
  grpc::ServerReadReactor<v1::LargeSendRequest>* SendLarge(grpc::CallbackServerContext* ctx,
                                                           v1::SendReceipt* resp) override;
  grpc::ServerWriteReactor<v1::DownloadResponse>* Download(grpc::CallbackServerContext* ctx,
                                                          const v1::DownloadRequest* req) override;

 private:
  const ServiceDeps& deps_;
};

}  // namespace carebroker
