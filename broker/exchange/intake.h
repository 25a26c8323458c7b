// Intake: turns a caller's SendRequest into a NewMessage ready to store, or
// says precisely why not. Pure (no I/O, no gRPC), so it is unit-tested
// directly. Every send is decided by the policy in force (deny by default)
// and a canonical record is minimised before it is stored: the stored and
// delivered payload holds only what the deciding flow releases.
//
// Errors (reason codes in the ErrorInfo):
//   INVALID_ARGUMENT     RECIPIENT_INVALID, ROUTE_CONFLICT, ROUTE_UNKNOWN,
//                        ROUTE_NEEDS_RECORD, WORKFLOW_INVALID, PURPOSE_INVALID,
//                        adapter errors (HL7_INVALID, HL7_UNSUPPORTED, FHIR_INVALID,
//                        FHIR_UNSUPPORTED, COUNCIL_JSON_INVALID, CLD_INVALID,
//                        CSV_INVALID, DATE_INVALID), PURPOSE_UNKNOWN,
//                        IDEMPOTENCY_KEY_INVALID, CONTENT_TYPE_INVALID,
//                        LOCAL_REFERENCE_INVALID, JUSTIFICATION_INVALID,
//                        PAYLOAD_EMPTY, PAYLOAD_MALFORMED, NHS_NUMBER_INVALID
//   RESOURCE_EXHAUSTED   MESSAGE_TOO_LARGE
//   FAILED_PRECONDITION  UNKNOWN_RECIPIENT (not a registered organisation),
//                        UNROUTABLE (a route resolved to no one),
//                        FORMAT_UNSUPPORTED (the recipient's format cannot carry the record),
//                        PSEUDONYM_KEY_MISSING
//   PERMISSION_DENIED    NO_AGREEMENT, AGREEMENT_EXPIRED, AGREEMENT_NOT_YET_VALID,
//                        PAYLOAD_KIND_NOT_ALLOWED, CONSENT_DISSENT, CONSENT_REQUIRED,
//                        NATIONAL_OPT_OUT, OVERRIDE_JUSTIFICATION_MISSING
//                        (the message lists every reason and the flow)
// Messages name fields, never their values.
#pragma once

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "broker/config/config.h"
#include "core/types.h"
#include "broker/exchange/policy_gate.h"
#include "broker/store/store.h"
#include "carebroker/v1/exchange.pb.h"

namespace carebroker {
namespace audit {
class EntryMaker;
}

// The longest idempotency key a send may carry (and Track look up).
inline constexpr size_t kMaxIdempotencyKeyBytes = 128;

// An admitted message and what the sender is told about the decision.
struct Admitted {
  NewMessage message;
  std::string agreement_id;
  std::string agreement_version;
  std::string flow;
  std::vector<std::string> withheld_fields;
  bool overridden = false;
};

// Checks `req` from `sender`, decides it under `policy` with the person's
// recorded wishes from `consent`, and builds the (minimised) message to
// store, taking the payload out of `req` (pass a moved request to avoid a
// copy). `sender` must already be known to be a registered agency.
//
// The admitted message carries its SEND_ACCEPTED audit entry (made with
// `entries`). A policy denial fills `*denial` with its SEND_DENIED entry,
// which the caller must make durable before answering. `max_bytes` bounds
// the payload (0: limits.max_message_bytes; a chunk of a chunked message is
// bounded by mesh.max_request_bytes instead). `chunks`: the payload is the
// first of this many.
//
// A CLD file of more than one person, or any CLD file in chunks, is a
// submission (exchange/submission.h): decided as a message for a person
// with nothing recorded, then row by row; it must name its recipient, who
// must receive CLD; it is about no one person (no subject, no consent
// re-check at delivery: each row was decided as it passed).
absl::StatusOr<Admitted> Admit(const Config& config, const policy::PolicySet& policy,
                               const policy::ConsentBook& consent, const audit::EntryMaker& entries,
                               const OrgCode& sender, v1::SendRequest req, absl::Time now, AuditRecord* denial,
                               uint64_t max_bytes = 0, uint32_t chunks = 1, absl::string_view also_keys = "");

// Fills the decision fields of a receipt.
void FillReceipt(const Admitted& a, v1::SendReceipt* out);


}  // namespace carebroker
