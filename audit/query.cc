#include "audit/query.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/time.h"
#include "core/yaml/yaml_proto.h"

namespace carebroker::audit {
bool Matches(const v1::AuditEntry& e, const v1::AuditFilter& f, const std::string& subject) {
  if (!subject.empty() && e.subject() != subject) return false;
  if (!f.organisation().empty() && e.sender() != f.organisation() && e.recipient() != f.organisation() &&
      e.actor() != f.organisation()) {
    return false;
  }
  if (!f.workflow().empty() && e.workflow() != f.workflow()) return false;
  if (!f.purpose().empty() && e.purpose() != f.purpose()) return false;
  if (!f.events().empty() && std::find(f.events().begin(), f.events().end(), e.event()) == f.events().end()) {
    return false;
  }
  if (f.has_from() && Micros(e.at()) < Micros(f.from())) return false;
  if (f.has_until() && Micros(e.at()) >= Micros(f.until())) return false;
  if (f.overrides_only() && !e.safeguarding_override()) return false;
  if (!f.message_ids().empty() &&
      std::find(f.message_ids().begin(), f.message_ids().end(), e.message_id()) == f.message_ids().end()) {
    return false;
  }
  return true;
}

std::string DescribeFilter(const v1::AuditFilter& f, const std::string& subject) {
  std::vector<std::string> parts;
  if (!subject.empty()) parts.push_back(absl::StrCat("subject ", subject));
  if (!f.organisation().empty()) parts.push_back(absl::StrCat("organisation ", f.organisation()));
  if (!f.workflow().empty()) parts.push_back(absl::StrCat("workflow ", f.workflow()));
  if (!f.purpose().empty()) parts.push_back(absl::StrCat("purpose ", f.purpose()));
  for (int ev : f.events()) parts.push_back(absl::StrCat("event ", EnumShortName(v1::AuditEvent_descriptor(), ev)));
  if (f.has_from()) parts.push_back(absl::StrCat("from ", f.from().seconds()));
  if (f.has_until()) parts.push_back(absl::StrCat("until ", f.until().seconds()));
  if (f.overrides_only()) parts.push_back("overrides only");
  if (!f.message_ids().empty()) parts.push_back(absl::StrCat("messages ", absl::StrJoin(f.message_ids(), " ")));
  return parts.empty() ? "everything" : absl::StrJoin(parts, "; ");
}

bool IsOverride(const v1::AuditEntry& e) {
  return e.safeguarding_override() &&
         (e.event() == v1::AUDIT_EVENT_SEND_ACCEPTED || e.event() == v1::AUDIT_EVENT_ROW_RELEASED);
}

}  // namespace carebroker::audit
