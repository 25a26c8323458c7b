// Intake: turns a caller's SendRequest into a NewMessage ready to store, or
// says precisely why not. Pure (no I/O, no gRPC), so it is unit-tested
// directly; the policy engine plugs in here in a later step.
//
// Errors (reason codes in the ErrorInfo):
//   INVALID_ARGUMENT     RECIPIENT_INVALID, WORKFLOW_INVALID, PURPOSE_INVALID,
//                        IDEMPOTENCY_KEY_INVALID, CONTENT_TYPE_INVALID,
//                        LOCAL_REFERENCE_INVALID, JUSTIFICATION_INVALID,
//                        PAYLOAD_EMPTY, PAYLOAD_MALFORMED, NHS_NUMBER_INVALID
//   RESOURCE_EXHAUSTED   MESSAGE_TOO_LARGE
//   FAILED_PRECONDITION  UNKNOWN_RECIPIENT (not a registered organisation)
// Messages name fields, never their values.
#pragma once

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "broker/config/config.h"
#include "broker/core/types.h"
#include "broker/store/store.h"
#include "carebroker/v1/exchange.pb.h"

namespace carebroker {

// The content type of a canonical CareRecord payload.
inline constexpr char kCareRecordContentType[] = "application/x-protobuf; proto=carebroker.v1.CareRecord";

// Checks `req` from `sender` and builds the message to store, taking the
// payload out of `req` (pass a moved request to avoid a copy). `sender`
// must already be known to be a registered agency.
absl::StatusOr<NewMessage> Admit(const Config& config, const OrgCode& sender, v1::SendRequest req,
                                 absl::Time now);


}  // namespace carebroker
