// Message ids: 32 lower-case hex characters, the first 12 the acceptance
// time in milliseconds (so ids sort roughly by time), the rest random.
// Unique across broker replicas without coordination.
#pragma once

#include "absl/time/time.h"
#include "core/types.h"

namespace carebroker {

MessageId NewMessageId(absl::Time now);

// True when `s` has the shape of a message id.
bool IsMessageIdShape(absl::string_view s);

}  // namespace carebroker
