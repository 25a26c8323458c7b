// carebroker-audit: the IG officers' tool. Online with an ig-officer
// certificate (the broker filters and records every query), or offline
// against an export file or a copy of the store. `verify` and `prove`
// check everything locally with the public key, never trusting the broker.
#pragma once

#include <iosfwd>

namespace carebroker {

// Exit codes: 0 success (verify: intact), 1 the log failed verification or
// the broker refused, 2 bad usage or unreadable input.
int RunAudit(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace carebroker
