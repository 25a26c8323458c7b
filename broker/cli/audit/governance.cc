#include "broker/cli/audit/governance.h"

#include <map>
#include <ostream>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "audit/merkle.h"
#include "broker/cli/audit/documents.h"
#include "core/nhs_number.h"
#include "core/time.h"

namespace carebroker::audit_cli {
namespace {

std::vector<std::string> Paths(const google::protobuf::RepeatedPtrField<std::string>& p) { return {p.begin(), p.end()}; }

std::string Agreement(const v1::AuditEntry& e) {
  return Esc(absl::StrCat(e.agreement_id(), " v", e.agreement_version(), e.flow().empty() ? "" : ", flow ", e.flow()));
}

std::string Purpose(const v1::AuditEntry& e) {
  std::string p = e.purpose();
  for (char& c : p) c = c == '-' ? ' ' : c;
  return Esc(e.workflow().empty() ? p : absl::StrCat(p, " (", e.workflow(), ")"));
}

std::string Reasons(const v1::AuditEntry& e) {
  std::vector<std::string> w;
  for (const auto& r : e.reasons()) w.push_back(ReasonWords(r));
  return Esc(absl::StrJoin(w, "; "));
}

std::string Spaced(const std::string& nhs) { return absl::StrCat(nhs.substr(0, 3), " ", nhs.substr(3, 3), " ", nhs.substr(6)); }

const char kNone[] = "<span class=\"none\">none</span>";

}  // namespace

int DoSarDocument(const Options& o, const std::string& nhs, std::ostream& out, std::ostream& err) {
  if (!IsValidNhsNumber(nhs)) {
    err << "carebroker-audit: --nhs-number is not a valid NHS number (ten digits, Modulus 11)\n";
    return 2;
  }
  if (o.public_key.empty()) {
    err << "carebroker-audit: a subject access report as a document says how its log was verified: give "
           "--public-key FILE (the broker's audit key)\n";
    return 2;
  }
  v1::AuditFilter f;
  f.set_nhs_number(nhs);
  auto entries = Select(o, f, 0);
  if (!entries.ok()) return Failed(err, entries.status());
  auto verified = LoadVerifiedLog(o);
  if (!verified.ok()) return Failed(err, verified.status());
  if (absl::Status s = CheckEntriesInLog(*entries, verified->log); !s.ok()) {
    err << "carebroker-audit: NOT INTACT: " << s.message() << "\n";
    return 1;
  }

  // What became of each message after it was accepted.
  struct Fate {
    std::string delivered, acknowledged, other;
  };
  std::map<std::string, Fate> fate;
  for (const auto& e : *entries) {
    Fate& m = fate[e.message_id()];
    switch (e.event()) {
      case v1::AUDIT_EVENT_DELIVERED:
        if (m.delivered.empty()) m.delivered = UkTime(e.at());
        break;
      case v1::AUDIT_EVENT_ACKNOWLEDGED:
        m.acknowledged = UkTime(e.at());
        break;
      case v1::AUDIT_EVENT_WITHHELD:
        m.other = absl::StrCat("withheld at delivery (", e.reasons().empty() ? "" : ReasonWords(e.reasons(0)), ")");
        break;
      case v1::AUDIT_EVENT_EXPIRED:
        m.other = "expired before it was delivered";
        break;
      case v1::AUDIT_EVENT_HELD:
        m.other = "held, not delivered";
        break;
      case v1::AUDIT_EVENT_OPERATOR_ACTION: {
        const std::string action = e.reasons().empty() ? "" : e.reasons(0);
        if (action == "CANCEL") m.other = "cancelled before delivery";
        if (action == "RELEASE") m.other = "released for delivery again";
        if (action == "REDIRECT") m.other = "not delivered: sent again to another recipient (below)";
        if (action == "RESEND") m.other = "not delivered: sent again (below)";
        break;
      }
      default:
        break;
    }
  }

  std::vector<std::vector<std::string>> shared, overrides, refused, wishes, agreements;
  std::set<std::string> recipients;
  std::map<std::string, std::string> bases;  // agreement and version -> its legal basis
  for (const auto& e : *entries) {
    const std::string when = Esc(UkTime(e.at()));
    const std::string parties = Esc(absl::StrCat(e.sender(), " to ", e.recipient()));
    // The date on one line, the time of day under it.
    const std::string when_cell =
        absl::StrCat("<span class=\"when\">", absl::StrReplaceAll(when, {{", ", "</span><br>"}}));
    if (e.event() == v1::AUDIT_EVENT_SEND_ACCEPTED) {
      recipients.insert(e.recipient());
      const Fate& m = fate[e.message_id()];
      std::string status = !m.other.empty()        ? m.other
                           : !m.acknowledged.empty() ? absl::StrCat("delivered ", m.delivered, "; received ", m.acknowledged)
                           : !m.delivered.empty()    ? absl::StrCat("delivered ", m.delivered)
                                                     : "not yet delivered";
      const std::string agreement = absl::StrCat(e.agreement_id(), " v", e.agreement_version());
      if (bases.emplace(agreement, BasisWords(e.legal_basis())).second) {
        agreements.push_back({Esc(agreement), Esc(BasisWords(e.legal_basis()))});
      }
      shared.push_back({when_cell, parties, Purpose(e), Esc(agreement), Esc(status)});
      shared.push_back({absl::StrCat("<b>Shared:</b> ", Esc(FieldWords(Paths(e.released_fields()))),
                                     ". <b>Not shared:</b> ",
                                     e.withheld_fields().empty() ? kNone : Esc(FieldWords(Paths(e.withheld_fields()))),
                                     ".")});
      if (e.safeguarding_override()) {
        overrides.push_back({when_cell, parties, Agreement(e), Esc(e.justification())});
      }
    } else if (e.event() == v1::AUDIT_EVENT_SEND_DENIED) {
      refused.push_back({when_cell, parties, Purpose(e), Reasons(e)});
    } else if (e.event() == v1::AUDIT_EVENT_CONSENT_RECORDED || e.event() == v1::AUDIT_EVENT_CONSENT_WITHDRAWN ||
               e.event() == v1::AUDIT_EVENT_OPT_OUT_CHANGED) {
      wishes.push_back({when_cell, Esc(e.actor()), Esc(e.detail())});
    }
  }

  const std::string prepared = UkTime(ToTimestamp(absl::Now()));
  std::string b = absl::StrCat("<h1>Information shared about you</h1>\n<p class=\"lead\">NHS number ", Spaced(nhs),
                               ". Prepared on ", Esc(prepared),
                               " from the audit log of carebroker, which records every decision to share or not "
                               "share information between the organisations that use it.</p>\n");
  const size_t disclosures = shared.size() / 2;
  absl::StrAppend(&b, "<p>", disclosures, disclosures == 1 ? " disclosure" : " disclosures", " to ",
                  recipients.size(), recipients.size() == 1 ? " organisation" : " organisations", "; ",
                  overrides.size(), overrides.size() == 1 ? " safeguarding override" : " safeguarding overrides", "; ",
                  refused.size(), refused.size() == 1 ? " request to share refused" : " requests to share refused",
                  ". Organisations are named by their ODS code (NHS England's Organisation Data Service).</p>\n");

  b += "<h2>Who received information about you</h2>\n";
  b += shared.empty() ? "<p class=\"none\">No organisation received information about you through carebroker.</p>\n"
                      : Table({"When (UK time)", "From and to", "Why", "Agreement", "What happened"}, shared);
  if (!agreements.empty()) {
    b += "<h2>The agreements it was shared under, and the law they rest on</h2>\n";
    b += Table({"Agreement", "Legal basis"}, agreements);
  }
  b += "<h2>When your objection was set aside for safeguarding</h2>\n";
  b += overrides.empty() ? "<p class=\"none\">Never.</p>\n"
                         : Table({"When (UK time)", "From and to", "Agreement", "Justification"},
                                 overrides);
  b += "<h2>Requests to share that were refused</h2>\n";
  b += refused.empty() ? "<p class=\"none\">None.</p>\n"
                       : Table({"When (UK time)", "From and to", "Why it was asked for", "Why it was refused"}, refused);
  b += "<h2>Your recorded wishes</h2>\n";
  b += wishes.empty() ? "<p class=\"none\">None recorded.</p>\n"
                      : Table({"When (UK time)", "Recorded by", "What changed"}, wishes);

  const audit::VerifyReport& r = verified->report;
  const v1::SignedTreeHead& head = verified->latest;
  std::vector<std::string> indexes;
  for (const auto& e : *entries) indexes.push_back(absl::StrCat(e.index()));
  b += "<h2>How this record was checked</h2>\n";
  absl::StrAppend(
      &b, "<p>The audit log this report was read from was verified with the broker's public key: all ", r.entries,
      " entries were hashed again into its tree (RFC 9162) and every one of its ", r.heads,
      " signed tree heads was checked against it. ",
      head.tree_size() == 0 ? std::string("No tree head had been signed yet. ")
                            : absl::StrCat("The latest, signed on ", Esc(UkTime(head.timestamp())), ", covers entries 0 to ",
                                           head.tree_size() - 1, "."),
      r.covered + 1 == r.entries ? " 1 newer entry awaits the next signed head."
      : r.covered < r.entries    ? absl::StrCat(" ", r.entries - r.covered, " newer entries await the next signed head.")
                                 : "",
      " Each of the ", entries->size(), " entries this report was made from is, byte for byte, the entry at its "
      "position in that log.</p>\n<table>\n<tbody>\n",
      "<tr><th>Signing key id</th><td class=\"mono\">", Esc(head.key_id()), "</td></tr>\n",
      "<tr><th>Root hash</th><td class=\"mono\">", Esc(absl::BytesToHexString(head.root_hash())), "</td></tr>\n",
      "<tr><th>Entries used</th><td class=\"mono\">", indexes.empty() ? "none" : absl::StrJoin(indexes, " "),
      "</td></tr>\n</tbody>\n</table>\n");
  return WriteDocument(o, Page("Information shared about you", absl::StrCat("Subject access report, ", prepared), b),
                       out, err);
}

}  // namespace carebroker::audit_cli
