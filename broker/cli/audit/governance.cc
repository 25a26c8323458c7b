#include "broker/cli/audit/governance.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <tuple>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "audit/merkle.h"
#include "broker/cli/audit/documents.h"
#include "core/enum_names.h"
#include "core/nhs_number.h"
#include "policy/agreements.h"
#include "policy/engine.h"
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
  // The returns the person's rows went in: their fates name no person.
  auto returns = SelectSubmissionFates(o, *entries);
  if (!returns.ok()) return Failed(err, returns.status());
  auto verified = LoadVerifiedLog(o);
  if (!verified.ok()) return Failed(err, verified.status());
  std::vector<v1::AuditEntry> used = *entries;
  used.insert(used.end(), returns->begin(), returns->end());
  std::sort(used.begin(), used.end(), [](const auto& a, const auto& b) { return a.index() < b.index(); });
  if (absl::Status s = CheckEntriesInLog(used, verified->log); !s.ok()) {
    err << "carebroker-audit: NOT INTACT: " << s.message() << "\n";
    return 1;
  }

  // What became of each message after it was accepted.
  struct Fate {
    std::string delivered, acknowledged, other;
    bool accepted = false;  // a return: its last chunk is in
  };
  std::map<std::string, Fate> fate;
  for (const auto& e : used) {
    Fate& m = fate[e.message_id()];
    switch (e.event()) {
      case v1::AUDIT_EVENT_SEND_ACCEPTED:
        m.accepted = true;
        break;
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
        if (action == "RELEASE") m.other.clear();  // held no more: delivered (or waiting) as below
        if (action == "REDIRECT") m.other = "not delivered: sent again to another recipient (below)";
        if (action == "RESEND") m.other = "not delivered: sent again (below)";
        break;
      }
      default:
        break;
    }
  }

  std::map<uint64_t, std::string> reviews;  // override entry -> its latest review, in words
  for (const auto& e : *entries) {
    if (e.event() != v1::AUDIT_EVENT_OVERRIDE_REVIEWED) continue;
    const bool appropriate = !e.reasons().empty() && e.reasons(0) == "APPROPRIATE";
    reviews[e.override_index()] = absl::StrCat(appropriate ? "found appropriate" : "found not appropriate",
                                               " by an IG officer at ", e.actor(), " on ", UkTime(e.at()));
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
    const bool row = e.event() == v1::AUDIT_EVENT_ROW_RELEASED;  // in a return of many people's
    if (e.event() == v1::AUDIT_EVENT_SEND_ACCEPTED || row) {
      recipients.insert(e.recipient());
      const Fate& m = fate[e.message_id()];
      std::string status = row && !m.accepted ? "not delivered: the return was still being sent, or was never completed"
                           : !m.other.empty()        ? m.other
                           : !m.acknowledged.empty() ? absl::StrCat("delivered ", m.delivered, "; received ", m.acknowledged)
                           : !m.delivered.empty()    ? absl::StrCat("delivered ", m.delivered)
                                                     : "not yet delivered";
      const std::string agreement = absl::StrCat(e.agreement_id(), " v", e.agreement_version());
      if (bases.emplace(agreement, BasisWords(e.legal_basis())).second) {
        agreements.push_back({Esc(agreement), Esc(BasisWords(e.legal_basis()))});
      }
      shared.push_back({when_cell, parties, Purpose(e), Esc(agreement), Esc(status)});
      shared.push_back({absl::StrCat(row ? "Your record was one row of a return about many people. " : "",
                                     "<b>Shared:</b> ", Esc(FieldWords(Paths(e.released_fields()))),
                                     ". <b>Not shared:</b> ",
                                     e.withheld_fields().empty() ? kNone : Esc(FieldWords(Paths(e.withheld_fields()))),
                                     ".")});
      if (e.safeguarding_override()) {
        auto review = reviews.find(e.index());
        overrides.push_back({when_cell, parties, Agreement(e), Esc(e.justification()),
                             review == reviews.end() ? "waiting for review" : Esc(review->second)});
      }
    } else if (e.event() == v1::AUDIT_EVENT_SEND_DENIED) {
      refused.push_back({when_cell, parties, Purpose(e), Reasons(e)});
    } else if (e.event() == v1::AUDIT_EVENT_ROW_WITHHELD) {
      refused.push_back({when_cell, parties, Purpose(e),
                         absl::StrCat(Reasons(e), ". Your row was left out of a return about many people.")});
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
                         : Table({"When (UK time)", "From and to", "Agreement", "Justification", "Review"},
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
  for (const auto& e : used) indexes.push_back(absl::StrCat(e.index()));
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
      " Each of the ", used.size(), " entries this report was made from is, byte for byte, the entry at its "
      "position in that log.</p>\n<table>\n<tbody>\n",
      "<tr><th>Signing key id</th><td class=\"mono\">", Esc(head.key_id()), "</td></tr>\n",
      "<tr><th>Root hash</th><td class=\"mono\">", Esc(absl::BytesToHexString(head.root_hash())), "</td></tr>\n",
      "<tr><th>Entries used</th><td class=\"mono\">", indexes.empty() ? "none" : absl::StrJoin(indexes, " "),
      "</td></tr>\n</tbody>\n</table>\n");
  return WriteDocument(o, Page("Information shared about you", absl::StrCat("Subject access report, ", prepared), b),
                       out, err);
}

namespace {

using json = nlohmann::json;

// What the log holds over a period: disclosures and refusals by flow and by
// edge (sender, recipient, agreement, flow; no agreement: "" and ""), and
// the set of agreements the broker last loaded.
struct Volume {
  uint64_t disclosed = 0, refused = 0;
};
using Edge = std::tuple<std::string, std::string, std::string, std::string>;
struct LogCounts {
  std::map<std::pair<std::string, std::string>, Volume> by_flow;
  std::map<Edge, Volume> by_edge;
  std::string loaded_digest;  // empty: no load recorded
  std::string loaded_at;
};

absl::StatusOr<LogCounts> Count(const Options& o, const Period& period) {
  v1::AuditFilter sends;
  sends.add_events(v1::AUDIT_EVENT_SEND_ACCEPTED);
  sends.add_events(v1::AUDIT_EVENT_SEND_DENIED);
  if (absl::Status s = SetPeriod(period.from, period.until, &sends); !s.ok()) return s;
  auto rows = Select(o, sends, 0);
  if (!rows.ok()) return rows.status();
  LogCounts c;
  for (const auto& e : *rows) {
    const bool ok = e.event() == v1::AUDIT_EVENT_SEND_ACCEPTED;
    Volume& f = c.by_flow[{e.agreement_id(), e.flow()}];
    Volume& g = c.by_edge[{e.sender(), e.recipient(), e.agreement_id(), e.flow()}];
    (ok ? f.disclosed : f.refused)++;
    (ok ? g.disclosed : g.refused)++;
  }
  v1::AuditFilter loads;
  loads.add_events(v1::AUDIT_EVENT_AGREEMENTS_LOADED);
  auto loaded = Select(o, loads, 0);
  if (!loaded.ok()) return loaded.status();
  if (!loaded->empty()) {
    const std::string& d = loaded->back().detail();
    const size_t at = d.find("digest ");
    if (at != std::string::npos) c.loaded_digest = d.substr(at + 7);
    c.loaded_at = UkTime(loaded->back().at());
  }
  return c;
}

std::string PeriodWords(const Period& p) {
  if (p.from.empty() && p.until.empty()) return "the whole log";
  return absl::StrCat(p.from.empty() ? "the start of the log" : p.from, " to ",
                      p.until.empty() ? "the end of the log" : p.until);
}

std::string KindWords(int kind) {
  switch (kind) {
    case v1::ORGANISATION_KIND_NHS_TRUST: return "NHS trusts";
    case v1::ORGANISATION_KIND_GP_PRACTICE: return "GP practices";
    case v1::ORGANISATION_KIND_LOCAL_AUTHORITY: return "local authorities";
    case v1::ORGANISATION_KIND_NHS_ENGLAND: return "NHS England";
    case v1::ORGANISATION_KIND_INTEGRATED_CARE_BOARD: return "integrated care boards";
    default: return "other organisations";
  }
}

std::string PartyWords(const v1::Parties& p) {
  std::vector<std::string> w;
  for (int k : p.kinds()) w.push_back(KindWords(k));
  for (const auto& ods : p.ods()) w.push_back(ods);
  return absl::StrJoin(w, ", ");
}

std::string TransformWords(const v1::FieldTransform& t) {
  std::string what;
  switch (t.action_case()) {
    case v1::FieldTransform::kRedact: what = "withheld"; break;
    case v1::FieldTransform::kPseudonymise: what = "pseudonymised with the recipient's own key"; break;
    case v1::FieldTransform::kGeneralise:
      what = t.generalise() == v1::GENERALISATION_YEAR    ? "generalised to the year"
             : t.generalise() == v1::GENERALISATION_MONTH ? "generalised to the month"
             : t.generalise() == v1::GENERALISATION_DISTRICT ? "generalised to the postcode district"
                                                             : "generalised to the postcode sector";
      break;
    default: what = "transformed"; break;
  }
  return absl::StrCat(t.field(), ": ", what);
}

std::string ConsentWords(const v1::Flow& f) {
  std::string w = f.consent() == v1::CONSENT_MODEL_IMPLIED    ? "implied: shared unless the person has recorded dissent"
                  : f.consent() == v1::CONSENT_MODEL_EXPLICIT ? "explicit: shared only while the person's consent stands"
                                                              : "not applicable: a statutory duty, recorded dissent is not consulted";
  if (f.safeguarding_override()) w += "; a safeguarding send with a justification may set aside recorded dissent";
  return w;
}

std::string DataWords(const v1::Flow& f) {
  if (f.payload() == v1::PAYLOAD_KIND_OPAQUE) return "content carried as it is sent (no person-level data)";
  std::string w = f.payload() == v1::PAYLOAD_KIND_DOCUMENT ? "a document about the person, carried whole"
                                                           : FieldWords({f.fields().begin(), f.fields().end()});
  const int a9 = f.legal_basis().article9();
  if (a9 != v1::ARTICLE9_NOT_APPLICABLE && a9 != v1::ARTICLE9_UNSPECIFIED) {
    absl::StrAppend(&w, " (special category: data concerning health and care)");
  }
  return w;
}

// The opt-out rule for each of the flow's purposes, said once when they agree.
std::string OptOutWords(const policy::CompiledFlow& cf) {
  std::map<std::string, std::vector<std::string>> by_rule;
  for (int p : cf.flow->purposes()) {
    by_rule[cf.OptOutRule(static_cast<v1::Purpose>(p))].push_back(policy::PurposeToWire(static_cast<v1::Purpose>(p)));
  }
  if (by_rule.size() == 1) return by_rule.begin()->first;
  std::vector<std::string> w;
  for (const auto& [rule, purposes] : by_rule) w.push_back(absl::StrCat(absl::StrJoin(purposes, ", "), ": ", rule));
  return absl::StrJoin(w, "; ");
}

std::string InForce(const policy::LoadedAgreement& a, absl::Time now) {
  if (now < a.valid_from) return "not yet in force";
  if (now >= a.valid_until) return "ended";
  return "in force";
}

std::string Md(absl::string_view s) { return absl::StrReplaceAll(s, {{"|", "\\|"}, {"\n", " "}}); }

int NeedDocumentFormat(const Options& o, std::ostream& err, std::initializer_list<const char*> allowed) {
  for (const char* f : allowed) {
    if (o.format == f) return 0;
  }
  err << "carebroker-audit: this report is written as " << absl::StrJoin(allowed, ", ") << ", not " << o.format << "\n";
  return 2;
}

absl::StatusOr<std::shared_ptr<const policy::PolicySet>> LoadFolder(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("--agreements DIR is required (the folder the broker loads)");
  auto set = policy::PolicySet::Load(dir);
  if (!set.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", set.status().message()));
  return set;
}

std::string DigestWords(const std::string& dir, const policy::AgreementSet& set, const LogCounts& c, bool* same) {
  *same = !c.loaded_digest.empty() && c.loaded_digest == set.digest;
  if (c.loaded_digest.empty()) {
    return absl::StrCat("The folder ", dir, " (digest ", set.digest,
                        ") could not be matched to the broker's: the log records no load of agreements.");
  }
  if (*same) {
    return absl::StrCat("The folder ", dir, " is the set of agreements the broker has in force: its digest ", set.digest,
                        " is the one the broker recorded when it loaded them on ", c.loaded_at, ".");
  }
  return absl::StrCat("WARNING: the folder ", dir, " (digest ", set.digest,
                      ") is not the set the broker last loaded (digest ", c.loaded_digest, ", on ", c.loaded_at,
                      "): this record describes the folder, not what the broker enforces.");
}

}  // namespace

int DoProcessing(const Options& o, const std::string& dir, const Period& period, std::ostream& out, std::ostream& err) {
  if (int rc = NeedDocumentFormat(o, err, {"table", "markdown", "html", "pdf", "json"}); rc != 0) return rc;
  auto ps = LoadFolder(dir);
  if (!ps.ok()) return Failed(err, ps.status());
  auto counts = Count(o, period);
  if (!counts.ok()) return Failed(err, counts.status());
  const policy::AgreementSet& set = (*ps)->agreements();
  bool same = false;
  const std::string provenance = DigestWords(dir, set, *counts, &same);
  if (!same) err << "carebroker-audit: " << provenance << "\n";
  const absl::Time now = absl::Now();
  const std::string prepared = UkTime(ToTimestamp(now));

  // One record per flow: (key, label, text) items, the same in every format.
  struct Item {
    std::string key, label, text;
  };
  struct Record {
    std::string agreement, flow, heading;
    std::vector<Item> items;
  };
  std::vector<Record> records;
  uint64_t unmatched_refusals = 0;
  for (const auto& [k, v] : counts->by_flow) {
    if (k.first.empty()) unmatched_refusals += v.refused;
  }
  for (const policy::CompiledFlow& cf : (*ps)->flows()) {
    const v1::Agreement& a = cf.agreement->agreement;
    const v1::Flow& f = *cf.flow;
    std::vector<std::string> purposes, transforms;
    for (int p : f.purposes()) purposes.push_back(policy::PurposeToWire(static_cast<v1::Purpose>(p)));
    for (const auto& t : f.transforms()) transforms.push_back(TransformWords(t));
    Volume v;
    if (auto it = counts->by_flow.find({a.id(), f.name()}); it != counts->by_flow.end()) v = it->second;
    Record r{a.id(), f.name(), absl::StrCat(a.id(), " v", a.version(), ": ", a.title(), ", flow ", f.name()), {}};
    r.items = {
        {"controllers", "Controllers", absl::StrJoin(a.controllers(), ", ")},
        {"in_force", "In force", absl::StrCat(a.valid_from(), " to ", a.valid_until(), " (", InForce(*cf.agreement, now), ")")},
        {"purposes", "Purposes", absl::StrJoin(purposes, ", ")},
        {"workflows", "Workflows", absl::StrJoin(f.workflows(), ", ")},
        {"data_subjects", "Categories of people", f.data_subjects().empty() ? "NOT STATED in the agreement (data_subjects)" : f.data_subjects()},
        {"data", "Categories of data", DataWords(f)},
        {"transforms", "Minimisation", transforms.empty() ? "none beyond the fields released" : absl::StrJoin(transforms, "; ")},
        {"senders", "Disclosed by", PartyWords(f.senders())},
        {"recipients", "Recipients", PartyWords(f.recipients())},
        {"legal_basis", "Legal basis", BasisWords(f.legal_basis())},
        {"consent", "Consent", ConsentWords(f)},
        {"national_opt_out", "National data opt-out", OptOutWords(cf)},
        {"retention", "Retention", a.retention().empty() ? "NOT STATED in the agreement (retention)" : a.retention()},
        {"disclosures", "Disclosures in the period", absl::StrCat(v.disclosed)},
        {"refusals", "Refusals in the period", absl::StrCat(v.refused)},
    };
    records.push_back(std::move(r));
  }

  const std::string intro = absl::StrCat(
      "Generated on ", prepared, " from the agreements in ", dir, " and from the audit log, counting ",
      PeriodWords(period), ". ", provenance,
      " carebroker carries these disclosures between the controllers as their processor: it keeps each message "
      "only until its recipient acknowledges it, or until it expires and then for the broker's delivery.retention, "
      "and keeps an audit entry of every decision, which names no one in clear.");
  const std::string unmatched = absl::StrCat("Requests refused under no agreement in the period: ", unmatched_refusals, ".");
  if (o.format == "json") {
    json j;
    j["generated_at"] = Time(ToTimestamp(now));
    j["agreements_dir"] = dir;
    j["agreements_digest"] = set.digest;
    j["broker_loaded_digest"] = counts->loaded_digest;
    j["is_the_set_in_force"] = same;
    j["period"] = {{"from", period.from}, {"until", period.until}};
    j["refused_under_no_agreement"] = unmatched_refusals;
    j["flows"] = json::array();
    for (const auto& r : records) {
      json f = {{"agreement", r.agreement}, {"flow", r.flow}};
      for (const auto& i : r.items) f[i.key] = i.text;
      j["flows"].push_back(f);
    }
    out << j.dump(2) << "\n";
    return 0;
  }
  if (o.format == "table" || o.format == "markdown") {
    out << "# Record of processing activities\n\n" << Md(intro) << "\n\n" << unmatched << "\n";
    for (const auto& r : records) {
      out << "\n## " << Md(r.heading) << "\n\n| | |\n|---|---|\n";
      for (const auto& i : r.items) out << "| " << i.label << " | " << Md(i.text) << " |\n";
    }
    return 0;
  }
  std::string b = absl::StrCat("<h1>Record of processing activities</h1>\n<p class=\"lead\">", Esc(intro), "</p>\n<p>",
                               Esc(unmatched), "</p>\n");
  for (const auto& r : records) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& i : r.items) rows.push_back({Esc(i.label), Esc(i.text)});
    absl::StrAppend(&b, "<h2>", Esc(r.heading), "</h2>\n", Table({"", ""}, rows));
  }
  return WriteDocument(o, Page("Record of processing activities", absl::StrCat("Record of processing, ", prepared), b),
                       out, err);
}

int DoFlows(const Options& o, const std::string& dir, const Period& period, std::ostream& out, std::ostream& err) {
  if (int rc = NeedDocumentFormat(o, err, {"table", "csv", "json", "html", "pdf"}); rc != 0) return rc;
  auto ps = LoadFolder(dir);
  if (!ps.ok()) return Failed(err, ps.status());
  auto counts = Count(o, period);
  if (!counts.ok()) return Failed(err, counts.status());
  bool same = false;
  const std::string provenance = DigestWords(dir, (*ps)->agreements(), *counts, &same);
  if (!same) err << "carebroker-audit: " << provenance << "\n";

  // Edges that carried something, then the flows in force that carried nothing.
  std::vector<std::vector<std::string>> rows;
  std::set<std::pair<std::string, std::string>> used;
  for (const auto& [edge, v] : counts->by_edge) {
    const auto& [from, to, agreement, flow] = edge;
    used.insert({agreement, flow});
    rows.push_back({from, to, agreement.empty() ? "(none)" : agreement, flow, absl::StrCat(v.disclosed),
                    absl::StrCat(v.refused)});
  }
  struct Idle {
    std::string from, to, agreement, flow, workflows;
  };
  std::vector<Idle> idle;
  const absl::Time now = absl::Now();
  for (const policy::CompiledFlow& cf : (*ps)->flows()) {
    const v1::Agreement& a = cf.agreement->agreement;
    if (used.count({a.id(), cf.flow->name()}) || InForce(*cf.agreement, now) != "in force") continue;
    idle.push_back({PartyWords(cf.flow->senders()), PartyWords(cf.flow->recipients()), a.id(), cf.flow->name(),
                    absl::StrJoin(cf.flow->workflows(), ", ")});
    rows.push_back({idle.back().from, idle.back().to, a.id(), cf.flow->name(), "0", "0"});
  }
  const std::vector<std::string> head = {"from", "to", "agreement", "flow", "disclosed", "refused"};
  if (o.format != "html" && o.format != "pdf") {
    Print(o, head, rows, out);
    return 0;
  }

  // The map: organisations as boxes, the kinds an idle flow names as
  // ellipses; an edge per sender, recipient and flow.
  auto q = [](absl::string_view s) { return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\\", "\\\\"}, {"\"", "\\\""}}), "\""); };
  std::string dot = "digraph flows {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"DejaVu Sans\", fontsize=11];\n"
                    "  edge [fontname=\"DejaVu Sans\", fontsize=9];\n";
  for (const auto& [edge, v] : counts->by_edge) {
    const auto& [from, to, agreement, flow] = edge;
    if (agreement.empty()) {
      absl::StrAppend(&dot, "  ", q(from), " -> ", q(to), " [color=\"#b00020\", fontcolor=\"#b00020\", style=dashed, label=",
                      q(absl::StrCat("no agreement\n", v.refused, " refused")), "];\n");
    } else {
      absl::StrAppend(&dot, "  ", q(from), " -> ", q(to), " [label=",
                      q(absl::StrCat(agreement, "\n", flow, "\n", v.disclosed, " disclosed, ", v.refused, " refused")),
                      v.refused > 0 && v.disclosed == 0 ? ", color=\"#b00020\"" : "", "];\n");
    }
  }
  for (const auto& i : idle) {
    absl::StrAppend(&dot, "  ", q(i.from), " [shape=ellipse, style=dotted];\n  ", q(i.to),
                    " [shape=ellipse, style=dotted];\n  ", q(i.from), " -> ", q(i.to),
                    " [style=dotted, color=\"#777777\", fontcolor=\"#555555\", label=",
                    q(absl::StrCat(i.agreement, "\n", i.flow, "\n", i.workflows, "\nnothing sent")), "];\n");
  }
  dot += "}\n";
  auto svg = RenderSvg(dot, o.dot);
  if (!svg.ok()) return Failed(err, svg.status());
  std::vector<std::vector<std::string>> cells;
  for (const auto& r : rows) {
    std::vector<std::string> c;
    for (const auto& x : r) c.push_back(Esc(x));
    cells.push_back(std::move(c));
  }
  const std::string prepared = UkTime(ToTimestamp(now));
  const std::string b = absl::StrCat(
      "<h1>Data flows</h1>\n<p class=\"lead\">Who sent what to whom under which agreement, counting ",
      Esc(PeriodWords(period)), ". Generated on ", Esc(prepared), ". ", Esc(provenance),
      " Dashed red edges are requests refused under no agreement; dotted ones are flows in force that carried "
      "nothing.</p>\n<div class=\"map\">", *svg, "</div>\n<h2>Each edge</h2>\n",
      Table({"From", "To", "Agreement", "Flow", "Disclosed", "Refused"}, cells));
  return WriteDocument(o, Page("Data flows", absl::StrCat("Data flows, ", prepared), b), out, err);
}

}  // namespace carebroker::audit_cli
