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

// The period a report counts the log over: RFC 3339 times, either may be
// empty (the start or the end of the log).
struct Period {
  std::string from, until;
};

// The record of processing (UK GDPR Article 30) of the agreements in
// `agreements_dir`: for each flow its controllers, purposes, categories of
// people and data (fields released and their transforms), recipients,
// legal bases, opt-out rule and retention, with the disclosures and
// refusals the log holds for it over `period`. Markdown (o.format table or
// markdown), HTML, PDF or JSON. It says whether the folder is the set the
// broker last loaded (its AGREEMENTS_LOADED entry's digest).
int DoProcessing(const Options& o, const std::string& agreements_dir, const Period& period, std::ostream& out,
                 std::ostream& err);

// The data-flow map: who sent what to whom under which agreement over
// `period`, with the disclosures and refusals on each edge, the refusals
// under no agreement, and the flows of `agreements_dir` that carried
// nothing. HTML (an SVG drawn by Graphviz, and the edges as a table), PDF;
// or the edges as a table, CSV or JSON.
int DoFlows(const Options& o, const std::string& agreements_dir, const Period& period, std::ostream& out,
            std::ostream& err);

}  // namespace carebroker::audit_cli
