// Message ids: 32 lower-case hex characters, the first 12 the acceptance
// time in milliseconds (so ids sort roughly by time), the rest random.
// Unique across broker replicas without coordination.
#pragma once

#include "absl/time/time.h"
#include "core/types.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker {

MessageId NewMessageId(absl::Time now);

// True when `s` has the shape of a message id.
bool IsMessageIdShape(absl::string_view s);

// The key a person's recorded wishes are kept and found under: the NHS
// number, or for a person named by a local identifier "ASSIGNER|VALUE"
// (no NHS number holds a '|'). "" when neither is given.
std::string PersonKey(absl::string_view nhs_number, const v1::LocalIdentifier& local);

// Whether `l` can name a person: a value of 1 to 64 characters and an
// assigner of 1 to 40 (letters, digits and . _ - / :), neither holding '|'
// or white space.
bool IsLocalIdentifierShape(const v1::LocalIdentifier& l);

}  // namespace carebroker
