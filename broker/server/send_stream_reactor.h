// SendStream: many sends on one stream, each answered in request order once
// durable. Each send goes through the send pipeline (exchange/send_pipeline.h)
// on the stream's own serial queue, so the stream's sends reach the store in
// the order they were read. At most limits.max_pending_per_stream sends are
// outstanding: past that the server stops reading and TCP flow control
// slows the sender. Ready results are written together, one write in
// flight at a time.
#pragma once

#include <grpcpp/support/server_callback.h>

#include "broker/server/identity.h"
#include "broker/server/service_deps.h"
#include "carebroker/v1/exchange.pb.h"

namespace carebroker {

// A reactor for an authorised agency `id` whose stream has been counted
// (EnterStream); it deletes itself when done.
grpc::ServerBidiReactor<v1::SendRequest, v1::SendStreamResponse>* NewSendStreamReactor(const ServiceDeps& d,
                                                                                       Identity id);

}  // namespace carebroker
