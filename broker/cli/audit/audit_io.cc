#include "broker/cli/audit/audit_io.h"

#include <chrono>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "audit/log.h"
#include "audit/query.h"
#include "broker/client/flags.h"
#include "core/canonical.h"
#include "core/enum_names.h"
#include "core/files.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker::audit_cli {

using json = nlohmann::json;
using google::protobuf::util::TimeUtil;

absl::StatusOr<std::unique_ptr<v1::Audit::Stub>> Connect(const Options& o) {
  if (o.tls.cert.empty() || o.tls.key.empty() || o.tls.ca.empty() || o.tls.target.empty()) {
    return absl::InvalidArgumentError(
        "give --export or --store to work offline, or --target, --cert, --key and --ca "
        "(or CAREBROKER_TARGET, _CERT, _KEY, _CA) for the broker");
  }
  auto ch = MakeChannel(o.tls);
  if (!ch.ok()) return ch.status();
  return v1::Audit::NewStub(*ch);
}

int Failed(std::ostream& err, const absl::Status& s) {
  err << "carebroker-audit: " << s.message() << "\n";
  return absl::IsUnavailable(s) ? 1 : 2;
}

void Deadline(grpc::ClientContext& ctx, const Options& o) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
}

int Refused(std::ostream& err, const grpc::Status& s) {
  err << "carebroker-audit: " << DescribeStatus(s) << "\n";
  return 1;
}

absl::Status ReadLog(const Options& o, audit::LogVisitor& visitor) {
  if (!o.export_file.empty()) return audit::ReadExportFile(o.export_file, visitor);
  if (!o.store_file.empty()) return audit::ReadStoreFile(o.store_file, visitor);
  auto stub = Connect(o);
  if (!stub.ok()) return stub.status();
  grpc::ClientContext ctx;
  Deadline(ctx, o);
  auto reader = (*stub)->Export(&ctx, v1::ExportRequest());
  v1::ExportChunk chunk;
  while (reader->Read(&chunk)) audit::VisitChunk(chunk, visitor);
  grpc::Status s = reader->Finish();
  if (!s.ok()) return absl::UnavailableError(DescribeStatus(s));
  return absl::OkStatus();
}

absl::StatusOr<audit::LogCopy> LoadLog(const Options& o) {
  audit::LogCopy log;
  if (absl::Status s = ReadLog(o, log); !s.ok()) return s;
  return log;
}

absl::StatusOr<audit::Key> PublicKey(const Options& o) {
  if (o.public_key.empty()) return absl::InvalidArgumentError("--public-key FILE is required (the broker's audit key)");
  return audit::Key::LoadFile(o.public_key);
}


absl::StatusOr<std::vector<v1::AuditEntry>> Select(const Options& o, v1::AuditFilter f, uint32_t limit) {
  if (!o.offline()) {
    auto stub = Connect(o);
    if (!stub.ok()) return stub.status();
    grpc::ClientContext ctx;
    Deadline(ctx, o);
    v1::AuditQueryRequest req;
    *req.mutable_filter() = f;
    req.set_limit(limit);
    auto reader = (*stub)->Query(&ctx, req);
    std::vector<v1::AuditEntry> out;
    v1::AuditEntry e;
    while (reader->Read(&e)) out.push_back(e);
    grpc::Status s = reader->Finish();
    if (!s.ok()) return absl::UnavailableError(DescribeStatus(s));
    return out;
  }
  std::string subject = f.subject();
  if (!f.nhs_number().empty()) {
    if (o.subject_key.empty()) {
      return absl::InvalidArgumentError("offline, --nhs-number needs --subject-key FILE (the broker's audit subject key)");
    }
    auto key = ReadFileToString(o.subject_key, "subject key");
    if (!key.ok()) return key.status();
    subject = audit::EntryMaker(*key).Subject(f.nhs_number());
  }
  auto log = LoadLog(o);
  if (!log.ok()) return log.status();
  std::vector<v1::AuditEntry> out;
  for (const auto& x : log->entries) {
    v1::AuditEntry e;
    if (!e.ParseFromString(x.entry()) || !audit::Matches(e, f, subject)) continue;
    out.push_back(std::move(e));
    if (limit != 0 && out.size() >= limit) break;
  }
  return out;
}

std::string Time(const google::protobuf::Timestamp& t) { return TimeUtil::ToString(t); }

std::string Event(int e) { return EnumShortName(v1::AuditEvent_descriptor(), e); }

void Print(const Options& o, const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows,
           std::ostream& out) {
  if (o.format == "json") {
    json a = json::array();
    for (const auto& r : rows) {
      json obj;
      for (size_t i = 0; i < head.size(); ++i) obj[head[i]] = r[i];
      a.push_back(obj);
    }
    out << a.dump(2) << "\n";
    return;
  }
  if (o.format == "csv") {
    auto cell = [](const std::string& s) {
      if (s.find_first_of(",\"\n") == std::string::npos) return s;
      std::string q = "\"";
      for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
      return q + "\"";
    };
    std::vector<std::string> h;
    for (const auto& x : head) h.push_back(cell(x));
    out << absl::StrJoin(h, ",") << "\n";
    for (const auto& r : rows) {
      std::vector<std::string> c;
      for (const auto& x : r) c.push_back(cell(x));
      out << absl::StrJoin(c, ",") << "\n";
    }
    return;
  }
  std::vector<size_t> w(head.size());
  for (size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size(); ++i) out << r[i] << (i + 1 < r.size() ? std::string(w[i] - r[i].size() + 2, ' ') : "");
    out << "\n";
  };
  line(head);
  for (const auto& r : rows) line(r);
  out << rows.size() << (rows.size() == 1 ? " entry\n" : " entries\n");
}

std::string Basis(const v1::LegalBasis& b) {
  std::string s = absl::StrCat("art6 ", EnumShortName(v1::Article6_descriptor(), b.article6()), "; art9 ",
                               EnumShortName(v1::Article9_descriptor(), b.article9()));
  if (!b.statutory().empty()) absl::StrAppend(&s, "; ", b.statutory());
  return s;
}

absl::StatusOr<VerifiedLog> LoadVerifiedLog(const Options& o) {
  auto key = PublicKey(o);
  if (!key.ok()) return key.status();
  VerifiedLog v;
  if (absl::Status s = ReadLog(o, v.log); !s.ok()) return s;
  v.report = audit::Verify(v.log, *key);
  if (!v.report.intact) return absl::UnavailableError(absl::StrCat("NOT INTACT: ", v.report.problem));
  for (const auto& h : v.log.heads) {
    if (h.tree_size() >= v.latest.tree_size()) v.latest = h;
  }
  return v;
}

absl::Status CheckEntriesInLog(const std::vector<v1::AuditEntry>& entries, const audit::LogCopy& log) {
  for (const auto& e : entries) {
    const bool same = e.index() < log.entries.size() && log.entries[e.index()].index() == e.index() &&
                      log.entries[e.index()].entry() == Canonical(e);
    if (!same) {
      return absl::FailedPreconditionError(
          absl::StrCat("entry ", e.index(), " as the broker answered the query is not the entry in the verified log"));
    }
  }
  return absl::OkStatus();
}

absl::Status SetPeriod(const std::string& from, const std::string& until, v1::AuditFilter* f) {
  for (auto [text, field] : {std::pair{&from, f->mutable_from()}, std::pair{&until, f->mutable_until()}}) {
    if (text->empty()) continue;
    if (!TimeUtil::FromString(*text, field)) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", *text, "' is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)"));
    }
  }
  if (from.empty()) f->clear_from();
  if (until.empty()) f->clear_until();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::AuditEntry>> SelectSubmissionFates(const Options& o,
                                                                  const std::vector<v1::AuditEntry>& about) {
  std::set<std::string> ids;
  for (const auto& e : about) {
    if (e.event() == v1::AUDIT_EVENT_ROW_RELEASED) ids.insert(e.message_id());
  }
  if (ids.empty()) return std::vector<v1::AuditEntry>();
  v1::AuditFilter f;
  for (const auto& id : ids) f.add_message_ids(id);
  for (v1::AuditEvent ev : {v1::AUDIT_EVENT_SEND_ACCEPTED, v1::AUDIT_EVENT_DELIVERED, v1::AUDIT_EVENT_ACKNOWLEDGED,
                            v1::AUDIT_EVENT_EXPIRED, v1::AUDIT_EVENT_HELD, v1::AUDIT_EVENT_OPERATOR_ACTION}) {
    f.add_events(ev);
  }
  return Select(o, f, 0);
}

absl::StatusOr<std::vector<std::pair<v1::AuditEntry, v1::AuditEntry>>> SelectOverrides(const Options& o) {
  v1::AuditFilter made;
  made.set_overrides_only(true);
  auto overrides = Select(o, made, 0);
  if (!overrides.ok()) return overrides.status();
  v1::AuditFilter reviewed;
  reviewed.add_events(v1::AUDIT_EVENT_OVERRIDE_REVIEWED);
  auto reviews = Select(o, reviewed, 0);
  if (!reviews.ok()) return reviews.status();
  std::map<uint64_t, const v1::AuditEntry*> latest;  // override index -> its latest review
  for (const auto& r : *reviews) latest[r.override_index()] = &r;
  std::vector<std::pair<v1::AuditEntry, v1::AuditEntry>> out;
  for (auto& e : *overrides) {
    if (!audit::IsOverride(e)) continue;
    auto it = latest.find(e.index());
    out.emplace_back(std::move(e), it == latest.end() ? v1::AuditEntry() : *it->second);
  }
  return out;
}

}  // namespace carebroker::audit_cli
