// carebrokerctl: the operators' and integrators' client, as a library with
// a command table; main() only forwards argv.
//
// Global flags (or environment): --target (CAREBROKER_TARGET, default
// 127.0.0.1:7443), --cert/--key (CAREBROKER_CERT/_KEY), --ca
// (CAREBROKER_CA), --timeout seconds for each unary RPC (default 30),
// --format text|json (json is a stable contract).
//
// Commands (the table is in commands.h, one file per group):
//   send --to ODS --workflow W --purpose P [--idempotency-key K]
//        [--content-type T] [--local-reference R] [--justification J]
//        [--care-record] FILE                              -> message id
//   receive --out DIR [--max N] [--wait SECONDS]          -> one file per
//        message (acknowledged once written); a line per message and the
//        count on stdout (with --format json, each message's metadata)
//   ack ID...                                              -> per-id result
//   track ID                                               -> status, times
//   policy lint DIR | test DIR CASES | explain DIR ...     (offline)
//   policy reload                                          (operator role)
//   consent record | withdraw | opt-out | show --nhs-number N ...
//   convert --from F --to T FILE                           (offline)
//   db migrate --store STORE                               (offline)
//
// Exit codes: 0 success; 1 the broker refused or failed the request (the
// gRPC code and reason are on stderr); 2 bad usage or a local error
// (unreadable file, unwritable folder).
#pragma once

#include <ostream>

namespace carebroker {

int RunCtl(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace carebroker
