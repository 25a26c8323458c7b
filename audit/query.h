// Audit queries: which entries a filter selects. One definition, used by
// the broker's Audit service and by carebroker-audit offline.
#pragma once

#include <string>

#include "carebroker/v1/audit.pb.h"

namespace carebroker::audit {

// `subject` is the filter's person as a subject hash ("" for any): the
// server or an offline tool with the key computes it from the NHS number.
bool Matches(const v1::AuditEntry& e, const v1::AuditFilter& f, const std::string& subject);

// The filter in words, for the AUDIT_QUERY entry: the NHS number appears
// only as its subject hash.
std::string DescribeFilter(const v1::AuditFilter& f, const std::string& subject);

// Is this entry a safeguarding override an IG officer reviews: a message
// (SEND_ACCEPTED) or a CLD submission's row (ROW_RELEASED) released with
// recorded dissent set aside.
bool IsOverride(const v1::AuditEntry& e);

}  // namespace carebroker::audit
