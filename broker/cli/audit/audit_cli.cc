#include "broker/cli/audit/audit_cli.h"

#include "broker/cli/audit/audit_io.h"
#include "broker/cli/audit/governance.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "audit/log.h"
#include "audit/query.h"
#include "audit/verify.h"
#include "broker/client/client.h"
#include "broker/client/flags.h"
#include "core/files.h"
#include "core/nhs_number.h"
#include "core/time.h"
#include "core/yaml/yaml_proto.h"
#include "carebroker/v1/audit.grpc.pb.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker {
namespace {

using namespace audit_cli;  // NOLINT: this tool's own helpers

using json = nlohmann::json;
using google::protobuf::util::TimeUtil;

struct QueryArgs {
  v1::AuditFilter filter;
  std::string nhs, from, until;
  std::vector<std::string> events;
  uint32_t limit = 0;
};

int DoQuery(const Options& o, QueryArgs q, std::ostream& out, std::ostream& err) {
  if (!q.nhs.empty() && !IsValidNhsNumber(q.nhs)) {
    err << "carebroker-audit: --nhs-number is not a valid NHS number (ten digits, Modulus 11)\n";
    return 2;
  }
  q.filter.set_nhs_number(q.nhs);
  for (const auto& e : q.events) {
    const auto* v = FindEnumValue(v1::AuditEvent_descriptor(), e);
    if (v == nullptr || v->number() == 0) {
      err << "carebroker-audit: unknown event '" << e << "' (e.g. send-accepted, send-denied, delivered)\n";
      return 2;
    }
    q.filter.add_events(static_cast<v1::AuditEvent>(v->number()));
  }
  if (absl::Status s = SetPeriod(q.from, q.until, &q.filter); !s.ok()) return Failed(err, s);
  auto rows = Select(o, q.filter, q.limit);
  if (!rows.ok()) return Failed(err, rows.status());
  std::vector<std::vector<std::string>> table;
  for (const auto& e : *rows) {
    table.push_back({absl::StrCat(e.index()), Time(e.at()), Event(e.event()), e.actor(), e.sender(), e.recipient(),
                     e.workflow(), e.purpose(), e.agreement_id().empty() ? "" : absl::StrCat(e.agreement_id(), " v", e.agreement_version()),
                     e.flow(), absl::StrJoin(e.reasons(), " "), e.safeguarding_override() ? "yes" : "", e.message_id(),
                     e.detail(), absl::BytesToHexString(e.payload_digest())});
  }
  Print(o, {"index", "at", "event", "actor", "sender", "recipient", "workflow", "purpose", "agreement", "flow",
            "reasons", "override", "message", "detail", "digest"},
        table, out);
  return 0;
}

int DoSar(const Options& o, const std::string& nhs, std::ostream& out, std::ostream& err) {
  if (!IsValidNhsNumber(nhs)) {
    err << "carebroker-audit: --nhs-number is not a valid NHS number (ten digits, Modulus 11)\n";
    return 2;
  }
  v1::AuditFilter f;
  f.set_nhs_number(nhs);
  f.add_events(v1::AUDIT_EVENT_SEND_ACCEPTED);
  f.add_events(v1::AUDIT_EVENT_DELIVERED);
  f.add_events(v1::AUDIT_EVENT_ROW_RELEASED);  // the person's row in a CLD return
  auto rows = Select(o, f, 0);
  if (!rows.ok()) return Failed(err, rows.status());
  auto returns = SelectSubmissionFates(o, *rows);
  if (!returns.ok()) return Failed(err, returns.status());
  std::map<std::string, std::string> delivered;  // message id -> first delivery
  for (const auto* all : {&*rows, &*returns}) {
    for (const auto& e : *all) {
      if (e.event() == v1::AUDIT_EVENT_DELIVERED) delivered.emplace(e.message_id(), Time(e.at()));
    }
  }
  std::vector<std::vector<std::string>> table;
  for (const auto& e : *rows) {
    if (e.event() != v1::AUDIT_EVENT_SEND_ACCEPTED && e.event() != v1::AUDIT_EVENT_ROW_RELEASED) continue;
    auto d = delivered.find(e.message_id());
    table.push_back({Time(e.at()), e.sender(), e.recipient(), e.purpose(), e.workflow(), Basis(e.legal_basis()),
                     absl::StrCat(e.agreement_id(), " v", e.agreement_version(), " ", e.flow()),
                     absl::StrJoin(e.released_fields(), " "), d == delivered.end() ? "not yet" : d->second,
                     e.safeguarding_override() ? "yes" : "", e.message_id()});
  }
  Print(o, {"disclosed_at", "from", "to", "purpose", "workflow", "legal_basis", "agreement", "fields_released",
            "delivered_at", "override", "message"},
        table, out);
  return 0;
}

int DoOverrides(const Options& o, std::ostream& out, std::ostream& err) {
  auto overrides = SelectOverrides(o);
  if (!overrides.ok()) return Failed(err, overrides.status());
  std::vector<std::vector<std::string>> table;
  for (const auto& [e, review] : *overrides) {
    const bool reviewed = review.index() != 0;
    table.push_back({absl::StrCat(e.index()), Time(e.at()), e.sender(), e.recipient(), e.workflow(),
                     absl::StrCat(e.agreement_id(), " v", e.agreement_version(), " ", e.flow()),
                     absl::StrJoin(e.reasons(), " "), e.justification(), e.message_id(),
                     reviewed ? absl::AsciiStrToLower(absl::StrJoin(review.reasons(), " ")) : "pending",
                     review.actor(), reviewed ? Time(review.at()) : "", review.justification()});
  }
  Print(o, {"index", "at", "from", "to", "workflow", "agreement", "overridden", "justification", "message", "review",
            "reviewer", "reviewed_at", "review_note"},
        table, out);
  return 0;
}

// Overrides that wait for review: due `days` after each was made.
int DoPendingOverrides(const Options& o, uint32_t days, bool overdue_only, std::ostream& out, std::ostream& err) {
  auto overrides = SelectOverrides(o);
  if (!overrides.ok()) return Failed(err, overrides.status());
  const absl::Time now = absl::Now();
  std::vector<std::vector<std::string>> table;
  for (const auto& [e, review] : *overrides) {
    if (review.index() != 0) continue;
    const absl::Time due = FromTimestamp(e.at()) + absl::Hours(24) * days;
    if (overdue_only && due > now) continue;
    table.push_back({absl::StrCat(e.index()), Time(e.at()), Time(ToTimestamp(due)), due <= now ? "yes" : "no",
                     e.sender(), e.recipient(), e.workflow(),
                     absl::StrCat(e.agreement_id(), " v", e.agreement_version(), " ", e.flow()), e.justification(),
                     e.message_id()});
  }
  Print(o, {"index", "at", "due", "overdue", "from", "to", "workflow", "agreement", "justification", "message"}, table,
        out);
  return 0;
}

int DoReviewOverride(const Options& o, uint64_t index, const std::string& outcome, const std::string& note,
                     std::ostream& out, std::ostream& err) {
  if (o.offline()) {
    err << "carebroker-audit: a review is recorded by the broker: give --target, --cert, --key and --ca, not --export "
           "or --store\n";
    return 2;
  }
  auto stub = Connect(o);
  if (!stub.ok()) return Failed(err, stub.status());
  v1::OverrideReviewRequest req;
  req.set_override_index(index);
  req.set_outcome(outcome == "appropriate" ? v1::OVERRIDE_OUTCOME_APPROPRIATE : v1::OVERRIDE_OUTCOME_INAPPROPRIATE);
  req.set_note(note);
  v1::OverrideReviewResponse resp;
  grpc::ClientContext ctx;
  Deadline(ctx, o);
  if (grpc::Status s = (*stub)->ReviewOverride(&ctx, req, &resp); !s.ok()) return Refused(err, s);
  out << "reviewed the override at entry " << index << " (message " << resp.message_id() << "): " << outcome
      << ", recorded as entry " << resp.review_index() << "\n";
  return 0;
}

int DoOperatorActions(const Options& o, std::ostream& out, std::ostream& err) {
  v1::AuditFilter f;
  f.add_events(v1::AUDIT_EVENT_OPERATOR_ACTION);
  auto rows = Select(o, f, 0);
  if (!rows.ok()) return Failed(err, rows.status());
  std::vector<std::vector<std::string>> table;
  for (const auto& e : *rows) {
    table.push_back({Time(e.at()), e.actor(), absl::AsciiStrToLower(absl::StrJoin(e.reasons(), " ")), e.message_id(),
                     e.sender(), e.recipient(), e.workflow(), e.justification(), e.detail()});
  }
  Print(o, {"at", "operator", "action", "message", "from", "to", "workflow", "justification", "detail"}, table, out);
  return 0;
}

int DoVerify(const Options& o, std::ostream& out, std::ostream& err) {
  auto key = PublicKey(o);
  if (!key.ok()) return Failed(err, key.status());
  audit::Verifier verifier(*key);
  if (absl::Status s = ReadLog(o, verifier); !s.ok()) return Failed(err, s);
  const audit::VerifyReport r = verifier.Finish();
  if (!r.intact) {
    err << "carebroker-audit: NOT INTACT: " << r.problem << "\n";
    return 1;
  }
  out << "intact: " << r.entries << " entries, " << r.heads << " signed tree heads; entries 0 to "
      << (r.covered == 0 ? 0 : r.covered - 1) << " are covered by the latest head";
  if (r.covered < r.entries) out << " (" << r.entries - r.covered << " newer entries await the next head)";
  out << "\n";
  return 0;
}

std::vector<audit::Hash> Path(const google::protobuf::RepeatedPtrField<std::string>& p) {
  std::vector<audit::Hash> out;
  for (const auto& b : p) {
    audit::Hash h{};
    audit::HashFromBytes(b, &h);
    out.push_back(h);
  }
  return out;
}

// prove inclusion|consistency: fetches (or computes) the proof and checks
// it against signed tree heads with the public key.
int DoProve(const Options& o, bool inclusion, uint64_t a, uint64_t b, std::ostream& out, std::ostream& err) {
  auto key = PublicKey(o);
  if (!key.ok()) return Failed(err, key.status());
  // Signed heads (and, offline, the entries to build proofs from).
  audit::LogCopy log;
  std::vector<audit::Hash> path;
  audit::Hash leaf{};
  std::unique_ptr<v1::Audit::Stub> stub;
  if (o.offline()) {
    auto l = LoadLog(o);
    if (!l.ok()) return Failed(err, l.status());
    log = *std::move(l);
  } else {
    auto connected = Connect(o);
    if (!connected.ok()) return Failed(err, connected.status());
    stub = *std::move(connected);
    {
      grpc::ClientContext ctx;
      Deadline(ctx, o);
      v1::ExportRequest req;
      req.set_from_index(UINT64_MAX);  // tree heads only
      auto reader = stub->Export(&ctx, req);
      v1::ExportChunk chunk;
      while (reader->Read(&chunk)) {
        for (auto& h : *chunk.mutable_tree_heads()) log.heads.push_back(std::move(h));
      }
      if (grpc::Status s = reader->Finish(); !s.ok()) return Refused(err, s);
    }
  }
  std::map<uint64_t, audit::Hash> roots;  // signed roots by tree size
  for (const auto& h : log.heads) {
    if (auto s = audit::CheckTreeHead(*key, h); !s.ok()) {
      err << "carebroker-audit: NOT INTACT: " << s.message() << "\n";
      return 1;
    }
    audit::HashFromBytes(h.root_hash(), &roots[h.tree_size()]);
  }
  if (b == 0 && !roots.empty()) b = roots.rbegin()->first;  // default: the latest signed head
  auto need = [&](uint64_t size) -> const audit::Hash* {
    auto it = roots.find(size);
    if (it == roots.end()) err << "carebroker-audit: no signed tree head at size " << size << "\n";
    return it == roots.end() ? nullptr : &it->second;
  };
  if (o.offline()) {
    const audit::MerkleTree tree = audit::TreeOf(log);
    if (b > tree.size() || (inclusion ? a >= b : a > b)) {
      err << "carebroker-audit: out of range: the log holds " << tree.size() << " entries\n";
      return 2;
    }
    path = inclusion ? tree.InclusionProof(a, b) : tree.ConsistencyProof(a, b);
    if (inclusion) leaf = tree.leaf(a);
  } else {
    grpc::ClientContext ctx;
    Deadline(ctx, o);
    if (inclusion) {
      v1::InclusionRequest req;
      req.set_index(a);
      req.set_tree_size(b);
      v1::InclusionProof p;
      if (grpc::Status s = stub->ProveInclusion(&ctx, req, &p); !s.ok()) return Refused(err, s);
      path = Path(p.path());
      leaf = audit::LeafHash(p.entry());  // hashed here: the entry's own bytes
    } else {
      v1::ConsistencyRequest req;
      req.set_first(a);
      req.set_second(b);
      v1::ConsistencyProof p;
      if (grpc::Status s = stub->ProveConsistency(&ctx, req, &p); !s.ok()) return Refused(err, s);
      path = Path(p.path());
    }
  }
  if (inclusion) {
    const audit::Hash* root = need(b);
    if (root == nullptr) return 1;
    if (!audit::VerifyInclusion(leaf, a, b, path, *root)) {
      err << "carebroker-audit: NOT PROVEN: entry " << a << " is not included in the signed tree of size " << b << "\n";
      return 1;
    }
    out << "proven: entry " << a << " is included in the signed tree of size " << b << " (root "
        << audit::ToHex(*root) << ", " << path.size() << " hashes)\n";
    return 0;
  }
  const audit::Hash* ra = a == 0 ? nullptr : need(a);
  const audit::Hash* rb = need(b);
  if ((a != 0 && ra == nullptr) || rb == nullptr) return 1;
  if (!audit::VerifyConsistency(a, b, a == 0 ? audit::EmptyRoot() : *ra, *rb, path)) {
    err << "carebroker-audit: NOT PROVEN: the signed trees of sizes " << a << " and " << b << " are not consistent\n";
    return 1;
  }
  out << "proven: the signed tree of size " << a << " is a prefix of the signed tree of size " << b << " ("
      << path.size() << " hashes)\n";
  return 0;
}

int DoExport(const Options& o, const std::string& file, std::ostream& out, std::ostream& err) {
  auto log = LoadLog(o);
  if (!log.ok()) return Failed(err, log.status());
  std::ofstream f(file, std::ios::binary | std::ios::trunc);
  v1::ExportChunk chunk;
  bool ok = static_cast<bool>(f);
  for (size_t i = 0; ok && i < log->entries.size(); ++i) {
    *chunk.add_entries() = log->entries[i];
    if (chunk.entries_size() == 1000 || i + 1 == log->entries.size()) {
      ok = audit::WriteExportChunk(chunk, f);
      chunk.Clear();
    }
  }
  for (const auto& h : log->heads) *chunk.add_tree_heads() = h;
  ok = ok && audit::WriteExportChunk(chunk, f);
  f.close();
  if (!ok || !f) {
    err << "carebroker-audit: cannot write " << file << "\n";
    return 2;
  }
  out << "exported " << log->entries.size() << " entries and " << log->heads.size() << " signed tree heads to "
      << file << "\n";
  return 0;
}

}  // namespace

int RunAudit(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"carebroker-audit: query, report on and verify the carebroker audit log"};
  app.require_subcommand(1);
  Options o;
  AddTlsFlags(app, o.tls, "ig-officer");
  auto* ex = app.add_option("--export", o.export_file, "offline: an export file");
  app.add_option("--store", o.store_file, "offline: a copy of the broker's SQLite store, or a PostgreSQL store's connection string")->excludes(ex);
  app.add_option("--public-key", o.public_key, "the broker's audit public key, PEM (verify, prove)");
  app.add_option("--subject-key", o.subject_key, "offline: the audit subject key, to search by NHS number");
  app.add_option("--format", o.format, "output format: table, csv, json; a report's documents also html, pdf")
      ->check(CLI::IsMember({"table", "csv", "json", "markdown", "html", "pdf"}));
  app.add_option("--chromium", o.chromium, "the headless Chromium that prints PDFs (default: chromium on PATH)");
  app.add_option("--dot", o.dot, "Graphviz's dot, which draws the data-flow map (default: dot on PATH)");
  AddTimeoutFlag(app, o.timeout_s, "seconds for each request");

  QueryArgs q;
  std::string organisation, workflow, purpose, subject;
  bool overrides = false;
  auto* query = app.add_subcommand("query", "entries matching filters");
  query->add_option("--nhs-number", q.nhs, "the person (hashed; never stored)");
  query->add_option("--subject", subject, "the person's subject hash");
  query->add_option("--organisation", organisation, "sender, recipient or actor ODS code");
  query->add_option("--workflow", workflow, "e.g. HOSPITAL_DISCHARGE");
  query->add_option("--purpose", purpose, "e.g. direct-care");
  query->add_option("--event", q.events, "e.g. send-accepted, send-denied, delivered, withheld (repeatable)");
  query->add_option("--from", q.from, "RFC 3339, inclusive");
  query->add_option("--until", q.until, "RFC 3339, exclusive");
  query->add_flag("--overrides-only", overrides, "only safeguarding overrides");
  query->add_option("--limit", q.limit, "at most this many entries");

  auto* report = app.add_subcommand("report", "reports for IG review");
  report->require_subcommand(1);
  std::string sar_nhs;
  auto* sar = report->add_subcommand("sar", "the disclosure log for a subject access request");
  sar->add_option("--nhs-number", sar_nhs, "the person")->required();
  sar->add_option("--out", o.out_file, "with --format html or pdf: the document's file (html: default stdout)");
  std::string agreements_dir;
  Period period;
  auto* processing = report->add_subcommand("processing", "the record of processing (UK GDPR Article 30) of the agreements");
  auto* flows = report->add_subcommand("flows", "a map of who sends what to whom under which agreement");
  for (auto* r : {processing, flows}) {
    r->add_option("--agreements", agreements_dir, "the agreements folder the broker loads")->required();
    r->add_option("--from", period.from, "count the log from this RFC 3339 time (inclusive)");
    r->add_option("--until", period.until, "count the log until this RFC 3339 time (exclusive)");
    r->add_option("--out", o.out_file, "with --format html or pdf: the document's file (html: default stdout)");
  }
  auto* ovr = report->add_subcommand("overrides", "every safeguarding override with its justification");
  auto* ops = report->add_subcommand("operator-actions", "every operator's action on a message, with its justification");

  auto* overrides_cmd = app.add_subcommand("overrides", "safeguarding overrides waiting for an IG officer's review");
  overrides_cmd->require_subcommand(1);
  uint32_t review_days = 5;
  bool overdue_only = false;
  auto* pending = overrides_cmd->add_subcommand("pending", "overrides not reviewed yet, with when each is due");
  pending->add_option("--review-days", review_days, "days to review each in (the broker's governance.review_days)")
      ->check(CLI::Range(0, 365));
  pending->add_flag("--overdue-only", overdue_only, "only those past their due time");
  uint64_t review_index = 0;
  std::string outcome, note;
  auto* review = overrides_cmd->add_subcommand("review", "record your review of the override at audit entry INDEX");
  review->add_option("index", review_index, "the override's audit entry (overrides pending lists them)")->required();
  review->add_option("--outcome", outcome, "appropriate or inappropriate")
      ->required()
      ->check(CLI::IsMember({"appropriate", "inappropriate"}));
  review->add_option("--note", note, "why (required; never patient data)")->required();

  auto* verify = app.add_subcommand("verify", "recompute the tree and check every signed tree head");

  auto* prove = app.add_subcommand("prove", "inclusion and consistency proofs, checked here");
  prove->require_subcommand(1);
  uint64_t index = 0, size = 0, first = 0, second = 0;
  auto* inc = prove->add_subcommand("inclusion", "entry INDEX is in the signed tree of SIZE");
  inc->add_option("--index", index, "entry index")->required();
  inc->add_option("--tree-size", size, "a signed tree size (default: the latest)");
  auto* con = prove->add_subcommand("consistency", "the signed tree of FIRST is a prefix of that of SECOND");
  con->add_option("--first", first, "a signed tree size")->required();
  con->add_option("--second", second, "a larger signed tree size (default: the latest)");

  std::string out_file;
  auto* exp = app.add_subcommand("export", "write every entry and signed tree head to a file");
  exp->add_option("--out", out_file, "export file")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err) == 0 ? 0 : 2;
  }
  q.filter.set_subject(subject);
  q.filter.set_organisation(organisation);
  q.filter.set_workflow(workflow);
  q.filter.set_purpose(purpose);
  q.filter.set_overrides_only(overrides);
  const bool document = o.format == "html" || o.format == "pdf";
  if ((document || o.format == "markdown") && !*sar && !*processing && !*flows) {
    err << "carebroker-audit: --format " << o.format
        << " is for a report's documents (report sar, processing, flows); use table, csv or json\n";
    return 2;
  }
  if (o.format == "markdown" && *sar) {
    err << "carebroker-audit: report sar is written as table, csv, json, html or pdf\n";
    return 2;
  }
  if (!o.out_file.empty() && !document) {
    err << "carebroker-audit: --out is for a document: give --format html or pdf\n";
    return 2;
  }
  if (*query) return DoQuery(o, q, out, err);
  if (*sar) return document ? DoSarDocument(o, sar_nhs, out, err) : DoSar(o, sar_nhs, out, err);
  if (*processing) return DoProcessing(o, agreements_dir, period, out, err);
  if (*flows) return DoFlows(o, agreements_dir, period, out, err);
  if (*ovr) return DoOverrides(o, out, err);
  if (*ops) return DoOperatorActions(o, out, err);
  if (*pending) return DoPendingOverrides(o, review_days, overdue_only, out, err);
  if (*review) return DoReviewOverride(o, review_index, outcome, note, out, err);
  if (*verify) return DoVerify(o, out, err);
  if (*inc) return DoProve(o, true, index, size, out, err);
  if (*con) return DoProve(o, false, first, second, out, err);
  if (*exp) return DoExport(o, out_file, out, err);
  return 2;
}

}  // namespace carebroker
