// The one place absl::Status becomes grpc::Status. Every code maps to
// itself; the reason (core/status.h, codes in core/reasons.h) travels as a google.rpc.ErrorInfo
// in the status details. INTERNAL and UNKNOWN get a generic message, so a
// bug never leaks data.
#pragma once

#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "carebroker/v1/exchange.pb.h"

namespace carebroker {

grpc::Status ToGrpcStatus(const absl::Status& s);

// Answers a unary call with `s` at once (a refusal before any work).
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& s);

// The same error as a per-request result inside a stream.
v1::Error ToStreamError(const absl::Status& s);

}  // namespace carebroker
