// carebroker-audit's documents for information governance: the subject
// access report as a page to send to the person (HTML, PDF), the record of
// processing (UK GDPR Article 30) and the data-flow map, both generated
// from the agreements in force and the log.
#pragma once

#include <iosfwd>
#include <string>

#include "broker/cli/audit/audit_io.h"

namespace carebroker::audit_cli {

// The subject access report as a document (o.format html or pdf): who
// received what about the person, when, under which agreement and legal
// basis, what was withheld, overrides with their justification, requests
// refused, the person's recorded wishes, and how the log it was read from
// was verified (it needs --public-key).
int DoSarDocument(const Options& o, const std::string& nhs_number, std::ostream& out, std::ostream& err);

}  // namespace carebroker::audit_cli
