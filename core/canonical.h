// The one deterministic serialisation of a protobuf message: what audit
// entries are hashed and stored as, and what an entry held back for a
// chunked message is rewritten as (broker/store/mailbox_rules.h).
#pragma once

#include <string>

#include <google/protobuf/message.h>

namespace carebroker {

std::string Canonical(const google::protobuf::Message& m);

}  // namespace carebroker
