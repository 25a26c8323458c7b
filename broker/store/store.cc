#include "broker/store/store.h"

#include "core/vocabulary.h"
#include "core/time.h"
#include "core/files.h"
#include "core/ids.h"
#include "core/reasons.h"

namespace carebroker {

NewMessage MakeNonDeliveryReport(const TrackInfo& expired, absl::Time now, absl::Duration expiry,
                                 absl::string_view reason) {
  v1::NonDeliveryReport r;
  r.set_message_id(expired.id.str());
  r.set_recipient(expired.recipient.str());
  r.set_workflow(expired.workflow);
  r.set_local_reference(expired.local_reference);
  *r.mutable_accepted_at() = ToTimestamp(expired.accepted_at);
  *r.mutable_expired_at() = ToTimestamp(now);
  r.set_reason(std::string(reason));
  r.set_rejection_code(expired.rejection_code);
  r.set_rejection_text(expired.rejection_text);

  NewMessage m;
  m.id = NewMessageId(now);
  m.recipient = expired.sender;
  m.workflow = kNdrWorkflow;
  m.purpose = "non-delivery-report";
  m.content_type = kNdrContentType;
  m.local_reference = expired.local_reference;
  m.kind = v1::MESSAGE_KIND_NON_DELIVERY_REPORT;
  m.payload = r.SerializeAsString();
  m.digest = Sha256(m.payload);
  m.accepted_at = now;
  m.expires_at = now + expiry;
  return m;
}

std::string IndexedAuditEntry(uint64_t index, absl::string_view entry) {
  std::string out;
  out.reserve(entry.size() + 11);
  if (index != 0) {
    out.push_back(0x08);
    for (uint64_t v = index;; v >>= 7) {
      if (v < 0x80) {
        out.push_back(static_cast<char>(v));
        break;
      }
      out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    }
  }
  out.append(entry.data(), entry.size());
  return out;
}

v1::SignedTreeHead ParseStoredHead(absl::string_view serialized) {
  v1::SignedTreeHead h;
  if (!h.ParseFromArray(serialized.data(), static_cast<int>(serialized.size()))) h.Clear();
  return h;
}

}  // namespace carebroker
