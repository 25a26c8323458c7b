#include "broker/exchange/intake.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "broker/core/ids.h"
#include "broker/core/nhs_number.h"
#include "broker/core/status.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker {
namespace {

bool Printable(absl::string_view s, size_t max) {
  if (s.size() > max) return false;
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

absl::Status CheckCanonical(const std::string& payload) {
  v1::CareRecord record;
  if (!record.ParseFromString(payload)) {
    return InvalidArgument("PAYLOAD_MALFORMED", "payload is not a carebroker.v1.CareRecord");
  }
  const std::string& nhs = record.person().nhs_number();
  if (!nhs.empty() && !IsValidNhsNumber(nhs)) {
    return InvalidArgument("NHS_NUMBER_INVALID",
                           "person.nhs_number is not a valid NHS number (ten digits, Modulus 11)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NewMessage> Admit(const Config& config, const OrgCode& sender, v1::SendRequest req,
                                 absl::Time now) {
  const auto& limits = config.proto().limits();
  if (req.payload().size() > limits.max_message_bytes()) {
    return Error(absl::StatusCode::kResourceExhausted, "MESSAGE_TOO_LARGE",
                 absl::StrCat("payload is ", req.payload().size(), " bytes; the limit is ",
                              limits.max_message_bytes()));
  }
  if (req.recipient().empty() || !IsOdsCodeShape(req.recipient())) {
    return InvalidArgument("RECIPIENT_INVALID", "recipient must be an ODS code (3-10 upper-case letters or digits)");
  }
  if (!IsWorkflowShape(req.workflow()) || req.workflow() == kNdrWorkflow) {
    return InvalidArgument("WORKFLOW_INVALID",
                           "workflow must be upper snake case, e.g. HOSPITAL_DISCHARGE (1-64 characters)");
  }
  if (!IsPurposeShape(req.purpose())) {
    return InvalidArgument("PURPOSE_INVALID", "purpose must be lower-case words joined by '-', e.g. direct-care");
  }
  if (!Printable(req.idempotency_key(), 128)) {
    return InvalidArgument("IDEMPOTENCY_KEY_INVALID", "idempotency_key must be at most 128 printable ASCII characters");
  }
  if (req.content_type().empty() || !Printable(req.content_type(), 255)) {
    return InvalidArgument("CONTENT_TYPE_INVALID", "content_type is required: at most 255 printable ASCII characters");
  }
  if (!Printable(req.local_reference(), 128)) {
    return InvalidArgument("LOCAL_REFERENCE_INVALID", "local_reference must be at most 128 printable ASCII characters");
  }
  if (req.justification().size() > 4096) {
    return InvalidArgument("JUSTIFICATION_INVALID", "justification must be at most 4096 bytes");
  }
  if (req.payload().empty()) return InvalidArgument("PAYLOAD_EMPTY", "payload is empty");
  if (req.content_type() == kCareRecordContentType) {
    if (auto s = CheckCanonical(req.payload()); !s.ok()) return s;
  }
  const OrgCode recipient(req.recipient());
  if (config.FindOrganisation(recipient) == nullptr) {
    return Error(absl::StatusCode::kFailedPrecondition, "UNKNOWN_RECIPIENT",
                 absl::StrCat("recipient ", req.recipient(), " is not a registered organisation"));
  }

  NewMessage m;
  m.id = NewMessageId(now);
  m.sender = sender;
  m.recipient = recipient;
  m.workflow = std::move(*req.mutable_workflow());
  m.purpose = std::move(*req.mutable_purpose());
  m.idempotency_key = std::move(*req.mutable_idempotency_key());
  m.content_type = std::move(*req.mutable_content_type());
  m.local_reference = std::move(*req.mutable_local_reference());
  m.kind = v1::MESSAGE_KIND_DATA;
  m.payload = std::move(*req.mutable_payload());
  m.digest = Sha256(m.payload);
  m.accepted_at = now;
  m.expires_at = now + config.expiry();
  return m;
}

}  // namespace carebroker
