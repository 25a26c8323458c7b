#include "broker/cli/ctl.h"

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "adapters/formats.h"
#include "broker/client/client.h"
#include "core/files.h"
#include "core/ids.h"
#include "core/shapes.h"
#include "core/status.h"
#include "core/vocabulary.h"
#include "core/yaml/yaml_proto.h"
#include "broker/store/offline.h"
#include "carebroker/v1/consent.grpc.pb.h"
#include "carebroker/v1/exchange.grpc.pb.h"
#include "carebroker/v1/policy.grpc.pb.h"
#include "carebroker/v1/record.pb.h"
#include "policy/agreements.h"
#include "policy/cases.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;
using google::protobuf::util::TimeUtil;
using json = nlohmann::json;

struct Global {
  ClientTls tls;
  double timeout_s = 30;
  std::string format = "text";
  bool json() const { return format == "json"; }
};

std::string EnvOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string Rfc3339(const google::protobuf::Timestamp& t) {
  return t.seconds() == 0 && t.nanos() == 0 ? "" : TimeUtil::ToString(t);
}

// Guesses a content type from a file name; --content-type wins.
std::string GuessContentType(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".hl7" || ext == ".er7") return "x-application/hl7-v2+er7";
  if (ext == ".json") return "application/json";
  if (ext == ".fhir") return "application/fhir+json";
  if (ext == ".csv") return "text/csv";
  if (ext == ".xml") return "application/xml";
  if (ext == ".pb") return kCareRecordContentType;
  return "application/octet-stream";
}

int RpcFailed(std::ostream& err, const grpc::Status& s) {
  err << "carebrokerctl: " << DescribeStatus(s) << "\n";
  return 1;
}

void SetDeadline(grpc::ClientContext& ctx, const Global& g) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(g.timeout_s * 1000)));
}

template <typename Service = v1::Exchange>
std::unique_ptr<typename Service::Stub> Connect(const Global& g, std::ostream& err) {
  auto ch = MakeChannel(g.tls);
  if (!ch.ok()) {
    err << "carebrokerctl: " << ch.status().message() << "\n";
    return nullptr;
  }
  return Service::NewStub(*ch);
}

// policy lint DIR: every error as FILE:LINE: key: reason; exit 1 if any.
int DoLint(const std::string& dir, std::ostream& out, std::ostream& err) {
  auto set = policy::LoadAgreements(dir);
  if (!set.ok()) {
    err << set.status().message() << "\n";
    return 1;
  }
  size_t flows = 0;
  for (const auto& a : set->agreements) flows += a.agreement.flows_size();
  out << dir << ": " << set->agreements.size() << " agreements, " << flows << " flows, valid\n";
  return 0;
}

// convert --from F --to T FILE: the adapters offline, no broker. Prints the
// result, or the precise error (exit 1); bad arguments exit 2.
struct ConvertArgs {
  std::string from, to, file, sender = "SENDER", recipient = "RECIPIENT";
  bool keep_invalid_nhs = false;
};

int DoConvert(const ConvertArgs& a, std::ostream& out, std::ostream& err) {
  auto from = adapters::FormatByName(a.from);
  auto to = adapters::FormatByName(a.to);
  if (!from.ok() || !to.ok()) {
    err << "carebrokerctl convert: " << (from.ok() ? to.status() : from.status()).message() << "\n";
    return 2;
  }
  auto bytes = ReadFileToString(a.file, "FILE");
  if (!bytes.ok()) {
    err << "carebrokerctl convert: " << bytes.status().message() << "\n";
    return 2;
  }
  auto record = adapters::Parse(*from, *bytes, {.keep_invalid_nhs_numbers = a.keep_invalid_nhs});
  if (!record.ok()) {
    err << a.file << ": " << ReasonOf(record.status()) << ": " << record.status().message() << "\n";
    return 1;
  }
  const absl::Time now = absl::Now();
  auto rendered = adapters::Render(*to, *record, {NewMessageId(now).str(), a.sender, a.recipient, now});
  if (!rendered.ok()) {
    err << a.file << ": " << ReasonOf(rendered.status()) << ": " << rendered.status().message() << "\n";
    return 1;
  }
  out << *rendered;
  if (!rendered->empty() && rendered->back() != '\n' && *to != adapters::Format::kCanonical) out << "\n";
  return 0;
}

// Loads the agreements folder for an offline command; prints the errors.
std::shared_ptr<const policy::PolicySet> LoadForOffline(const std::string& dir, std::ostream& err) {
  auto set = policy::PolicySet::Load(dir);
  if (!set.ok()) {
    err << set.status().message() << "\n";
    return nullptr;
  }
  return *set;
}

std::string DecisionText(const policy::Decision& d) {
  std::string s = d.allowed ? "allow" : absl::StrCat("deny (", absl::StrJoin(d.reasons, ", "), ")");
  if (d.flow != nullptr) {
    absl::StrAppend(&s, d.allowed ? " under " : " by ", d.flow->agreement->agreement.id(), " v",
                    d.flow->agreement->agreement.version(), " flow ", d.flow->flow->name());
  }
  if (d.overridden) absl::StrAppend(&s, ", overriding dissent (safeguarding)");
  return s;
}

// policy test DIR CASES: each case's decision against its expectation.
// Exit 0 when every case passes, 1 when any fails, 2 on bad input.
int DoPolicyTest(const Global& g, const std::string& dir, const std::string& cases_file, std::ostream& out,
                 std::ostream& err) {
  auto set = LoadForOffline(dir, err);
  if (!set) return 2;
  auto cases = policy::LoadPolicyCases(cases_file);
  if (!cases.ok()) {
    err << cases.status().message() << "\n";
    return 2;
  }
  const std::string base = fs::path(cases_file).parent_path().string();
  int failed = 0;
  json results = json::array();
  for (const auto& c : cases->cases()) {
    auto got = policy::EvaluateCase(*set, c, base, absl::Now());
    if (!got.ok()) {
      err << cases_file << ": case '" << c.name() << "': " << got.status().message() << "\n";
      return 2;
    }
    const std::vector<std::string> diffs = policy::CheckExpectation(c.expect(), *got);
    if (!diffs.empty()) ++failed;
    if (g.json()) {
      results.push_back({{"name", c.name()},
                         {"passed", diffs.empty()},
                         {"decision", DecisionText(got->decision)},
                         {"withheld", got->withheld},
                         {"failures", diffs}});
      continue;
    }
    out << (diffs.empty() ? "PASS " : "FAIL ") << c.name() << "\n";
    for (const auto& d : diffs) out << "    " << d << "\n";
  }
  if (g.json()) {
    out << json{{"passed", cases->cases_size() - failed}, {"failed", failed}, {"cases", results}}.dump(2) << "\n";
  } else {
    out << cases->cases_size() - failed << " passed, " << failed << " failed\n";
  }
  return failed == 0 ? 0 : 1;
}

struct ExplainArgs {
  std::string dir, sender, sender_kind, recipient, recipient_kind, workflow, purpose, justification, date, record;
  std::vector<std::string> dissent, consent;
  bool opaque = false, opt_out = false;
};

// "PURPOSE" or "PURPOSE@SCOPE" (an ODS code or an organisation kind).
absl::StatusOr<v1::Directive> ParseDirective(absl::string_view text, v1::DirectiveKind kind) {
  v1::Directive d;
  d.set_kind(kind);
  const size_t at = text.find('@');
  const absl::string_view purpose = text.substr(0, at);
  d.set_purpose(policy::PurposeFromWire(purpose));
  if (d.purpose() == v1::PURPOSE_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat("unknown purpose '", purpose, "'"));
  }
  if (at == absl::string_view::npos) return d;
  const absl::string_view scope = text.substr(at + 1);
  if (const auto* k = FindEnumValue(v1::OrganisationKind_descriptor(), scope); k != nullptr && k->number() != 0) {
    d.mutable_scope()->set_kind(static_cast<v1::OrganisationKind>(k->number()));
  } else if (IsOdsCodeShape(scope)) {
    d.mutable_scope()->set_ods(std::string(scope));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("'", scope, "' is neither an ODS code nor an organisation kind"));
  }
  return d;
}

absl::StatusOr<v1::PolicyCase> ExplainCase(const ExplainArgs& a) {
  v1::PolicyCase c;
  c.set_name("explain");
  c.set_sender(a.sender);
  c.set_recipient(a.recipient);
  for (auto [text, set] : {std::pair{&a.sender_kind, &v1::PolicyCase::set_sender_kind},
                           std::pair{&a.recipient_kind, &v1::PolicyCase::set_recipient_kind}}) {
    const auto* k = FindEnumValue(v1::OrganisationKind_descriptor(), *text);
    if (k == nullptr || k->number() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown organisation kind '", *text, "' (e.g. nhs-trust, local-authority, gp-practice)"));
    }
    (c.*set)(static_cast<v1::OrganisationKind>(k->number()));
  }
  c.set_workflow(a.workflow);
  c.set_purpose(a.purpose);
  if (a.opaque) c.set_payload(v1::PAYLOAD_KIND_OPAQUE);
  c.set_justification(a.justification);
  c.set_date(a.date);
  c.set_record(a.record);
  c.mutable_consent()->set_national_opt_out(a.opt_out);
  for (auto [list, kind] : {std::pair{&a.dissent, v1::DIRECTIVE_KIND_DISSENT},
                            std::pair{&a.consent, v1::DIRECTIVE_KIND_CONSENT}}) {
    for (const auto& text : *list) {
      auto d = ParseDirective(text, kind);
      if (!d.ok()) return d.status();
      *c.mutable_consent()->add_directives() = *std::move(d);
    }
  }
  std::vector<std::string> errors;
  policy::CheckCaseRequest(c, &errors);
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return c;
}

template <typename E>
std::string Short(E value) {
  return EnumShortName(google::protobuf::GetEnumDescriptor<E>(), value);
}

// policy explain: one request, every flow considered, the decision and
// the fields that would be released.
int DoExplain(const ExplainArgs& a, std::ostream& out, std::ostream& err) {
  auto c = ExplainCase(a);
  if (!c.ok()) {
    err << "carebrokerctl: " << c.status().message() << "\n";
    return 2;
  }
  auto set = LoadForOffline(a.dir, err);
  if (!set) return 2;
  auto got = policy::EvaluateCase(*set, *c, "", absl::Now());
  if (!got.ok()) {
    err << "carebrokerctl: " << got.status().message() << "\n";
    return 2;
  }
  const policy::Decision& d = got->decision;
  out << "request: " << c->sender() << " (" << a.sender_kind << ") to " << c->recipient() << " ("
      << a.recipient_kind << "), " << c->workflow() << ", " << c->purpose() << ", "
      << (a.opaque ? "opaque payload" : "care record") << "\n";
  out << "considered:\n";
  for (const auto& line : d.trace) out << "  " << line << "\n";
  out << "decision: " << DecisionText(d) << "\n";
  if (d.flow == nullptr) return 0;
  const v1::Flow& f = *d.flow->flow;
  const v1::LegalBasis& lb = f.legal_basis();
  out << "legal basis: article 6 " << Short(lb.article6()) << "; article 9 " << Short(lb.article9())
      << "; common law " << Short(lb.common_law());
  if (!lb.statutory().empty()) out << "; " << lb.statutory();
  out << "\nconsent model: " << Short(f.consent())
      << "; national data opt-out: " << (d.opt_out_applies ? "applies" : "does not apply")
      << "; safeguarding override: " << (f.safeguarding_override() ? "allowed" : "not allowed") << "\n";
  if (!d.allowed || a.opaque) return 0;
  out << "fields the flow releases:\n";
  for (const auto& p : f.fields()) out << "  " << p << "\n";
  if (!f.transforms().empty()) out << "transforms:\n";
  for (const auto& t : f.transforms()) {
    out << "  " << t.field() << ": "
        << (t.has_generalise() ? "generalised to " + Short(t.generalise())
                               : t.pseudonymise() ? "pseudonymised for the recipient" : "redacted")
        << "\n";
  }
  if (got->has_record) {
    out << "from " << a.record << ", released:\n";
    for (const auto& p : got->released) out << "  " << p << "\n";
    out << "withheld:\n";
    for (const auto& p : got->withheld) out << "  " << p << "\n";
  }
  return 0;
}

int DoReload(const Global& g, std::ostream& out, std::ostream& err) {
  auto stub = Connect<v1::Policy>(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::ReloadResponse r;
  grpc::Status s = stub->Reload(&ctx, v1::ReloadRequest(), &r);
  if (!s.ok()) return RpcFailed(err, s);
  out << r.agreements() << " agreements, " << r.flows() << " flows in force (digest " << r.digest() << ")\n";
  return 0;
}

struct ConsentArgs {
  std::string nhs, purpose, scope_ods, scope_kind, source, recorded_by, directive;
  bool dissent = false, consent = false, on = false, off = false;
};

int PrintJson(const google::protobuf::Message& m, std::ostream& out) {
  std::string text;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(m, &text, o);
  out << text;
  return 0;
}

int DoConsent(const Global& g, const std::string& cmd, const ConsentArgs& a, std::ostream& out, std::ostream& err) {
  auto stub = Connect<v1::Consent>(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  grpc::Status s;
  if (cmd == "record") {
    if (a.dissent == a.consent) {
      err << "carebrokerctl: give exactly one of --consent or --dissent\n";
      return 2;
    }
    v1::RecordRequest req;
    req.set_nhs_number(a.nhs);
    req.set_kind(a.dissent ? v1::DIRECTIVE_KIND_DISSENT : v1::DIRECTIVE_KIND_CONSENT);
    req.set_purpose(a.purpose);
    if (!a.scope_ods.empty()) req.mutable_scope()->set_ods(a.scope_ods);
    if (!a.scope_kind.empty()) {
      const auto* kind = FindEnumValue(v1::OrganisationKind_descriptor(), a.scope_kind);
      if (kind == nullptr || kind->number() == 0) {
        err << "carebrokerctl: unknown organisation kind " << a.scope_kind << "\n";
        return 2;
      }
      req.mutable_scope()->set_kind(static_cast<v1::OrganisationKind>(kind->number()));
    }
    req.set_source(a.source);
    req.set_recorded_by(a.recorded_by);
    v1::Directive d;
    s = stub->Record(&ctx, req, &d);
    if (s.ok()) return PrintJson(d, out);
  } else if (cmd == "withdraw") {
    v1::WithdrawRequest req;
    req.set_nhs_number(a.nhs);
    req.set_directive_id(a.directive);
    req.set_source(a.source);
    req.set_recorded_by(a.recorded_by);
    v1::Directive d;
    s = stub->Withdraw(&ctx, req, &d);
    if (s.ok()) return PrintJson(d, out);
  } else if (cmd == "opt-out") {
    if (a.on == a.off) {
      err << "carebrokerctl: give exactly one of --set or --clear\n";
      return 2;
    }
    v1::SetNationalOptOutRequest req;
    req.set_nhs_number(a.nhs);
    req.set_opted_out(a.on);
    req.set_source(a.source);
    req.set_recorded_by(a.recorded_by);
    v1::ConsentState st;
    s = stub->SetNationalOptOut(&ctx, req, &st);
    if (s.ok()) return PrintJson(st, out);
  } else {
    v1::GetConsentRequest req;
    req.set_nhs_number(a.nhs);
    v1::ConsentState st;
    s = stub->Get(&ctx, req, &st);
    if (s.ok()) return PrintJson(st, out);
  }
  return RpcFailed(err, s);
}

struct SendArgs {
  std::string to, workflow, purpose, key, content_type, local_reference, justification, file;
  bool care_record = false;  // FILE is a CareRecord in protobuf JSON; sent as canonical binary
};

int DoSend(const Global& g, const SendArgs& a, std::ostream& out, std::ostream& err) {
  auto payload = ReadFileToString(a.file, "payload file");
  if (!payload.ok()) {
    err << "carebrokerctl: " << payload.status().message() << "\n";
    return 2;
  }
  v1::SendRequest req;
  req.set_recipient(a.to);
  req.set_workflow(a.workflow);
  req.set_purpose(a.purpose);
  req.set_idempotency_key(a.key);
  req.set_content_type(a.content_type.empty() ? GuessContentType(a.file) : a.content_type);
  req.set_local_reference(a.local_reference);
  req.set_justification(a.justification);
  if (a.care_record) {
    v1::CareRecord record;
    auto parsed = google::protobuf::util::JsonStringToMessage(*payload, &record);
    if (!parsed.ok()) {
      err << "carebrokerctl: " << a.file << ": not a CareRecord in JSON: " << parsed.message() << "\n";
      return 2;
    }
    req.set_content_type(kCareRecordContentType);
    payload = record.SerializeAsString();
  }
  req.set_payload(*std::move(payload));
  auto stub = Connect(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::SendReceipt r;
  grpc::Status s = stub->Send(&ctx, req, &r);
  if (!s.ok()) return RpcFailed(err, s);
  if (g.json()) {
    out << json{{"message_id", r.message_id()},
                {"accepted_at", Rfc3339(r.accepted_at())},
                {"duplicate", r.duplicate()},
                {"agreement", r.agreement_id()},
                {"agreement_version", r.agreement_version()},
                {"flow", r.flow()},
                {"withheld_fields", std::vector<std::string>(r.withheld_fields().begin(), r.withheld_fields().end())},
                {"safeguarding_override", r.safeguarding_override()}}
               .dump()
        << "\n";
  } else {
    out << r.message_id() << (r.duplicate() ? " (duplicate: first send's id)" : "") << "\n";
    err << "allowed by " << r.agreement_id() << " v" << r.agreement_version() << " flow " << r.flow()
        << (r.safeguarding_override() ? " (safeguarding override)" : "") << "\n";
    for (const auto& f : r.withheld_fields()) err << "withheld: " << f << "\n";
  }
  return 0;
}

struct ReceiveArgs {
  std::string out_dir;
  int max = 0;  // 0: no limit
  double wait_s = 5;
};

int DoReceive(const Global& g, const ReceiveArgs& a, std::ostream& out, std::ostream& err) {
  const fs::path dir(a.out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    err << "carebrokerctl: cannot use output folder " << a.out_dir << "\n";
    return 2;
  }
  auto stub = Connect(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  auto stream = stub->Receive(&ctx);

  std::mutex mu;  // guards writes on the stream and the fields below
  std::condition_variable cv;
  bool closed = false;
  auto last = std::chrono::steady_clock::now();
  auto close_writes = [&]() {  // caller holds mu
    if (!closed) {
      closed = true;
      stream->WritesDone();
    }
  };

  v1::ReceiveRequest open;
  open.mutable_open()->set_max_in_flight(a.max > 0 ? std::min(a.max, 100) : 100);
  if (!stream->Write(open)) return RpcFailed(err, stream->Finish());

  // Ends the stream after `wait` seconds with no delivery.
  std::thread idle([&]() {
    std::unique_lock<std::mutex> l(mu);
    const auto wait = std::chrono::milliseconds(static_cast<int64_t>(a.wait_s * 1000));
    while (!closed) {
      if (cv.wait_until(l, last + wait, [&] { return closed; })) break;
      if (std::chrono::steady_clock::now() >= last + wait) close_writes();
    }
  });

  int count = 0;
  bool local_error = false;
  json messages = json::array();
  v1::DeliveryBatch batch;
  while (stream->Read(&batch)) {
    std::unique_lock<std::mutex> l(mu);
    last = std::chrono::steady_clock::now();
    for (const v1::Delivery& d : batch.deliveries()) {
      if (closed) break;  // not acknowledged: redelivered later
      const std::string body_name = d.message_id() + ExtensionFor(d.content_type());
      if (!WriteFileAtomically(dir.string(), body_name, d.payload())) {
        err << "carebrokerctl: cannot write into " << a.out_dir << "; message left unacknowledged\n";
        local_error = true;
        close_writes();
        break;
      }
      v1::ReceiveRequest ack;
      ack.set_ack(d.message_id());
      if (!stream->Write(ack)) break;
      ++count;
      const std::string kind = v1::MessageKind_Name(d.kind()).substr(std::string("MESSAGE_KIND_").size());
      if (g.json()) {
        messages.push_back(json{{"file", (dir / body_name).string()},
                                {"message_id", d.message_id()},
                                {"sender", d.sender()},
                                {"workflow", d.workflow()},
                                {"purpose", d.purpose()},
                                {"content_type", d.content_type()},
                                {"local_reference", d.local_reference()},
                                {"accepted_at", Rfc3339(d.accepted_at())},
                                {"delivery_count", d.delivery_count()},
                                {"kind", kind}});
      } else {
        out << (dir / body_name).string() << "  from " << d.sender() << "  " << d.workflow()
            << (d.delivery_count() > 1 ? "  (redelivery)" : "") << "\n";
      }
      if (a.max > 0 && count >= a.max) close_writes();
    }
  }
  {
    std::lock_guard<std::mutex> l(mu);
    closed = true;
  }
  cv.notify_all();
  idle.join();
  grpc::Status s = stream->Finish();
  if (!s.ok()) return RpcFailed(err, s);
  if (g.json()) {
    out << json{{"received", count}, {"messages", messages}}.dump() << "\n";
  } else {
    out << "received " << count << " message" << (count == 1 ? "" : "s") << " into " << a.out_dir << "\n";
  }
  return local_error ? 2 : 0;
}

int DoAck(const Global& g, const std::vector<std::string>& ids, std::ostream& out, std::ostream& err) {
  auto stub = Connect(g, err);
  if (!stub) return 2;
  v1::AckRequest req;
  for (const auto& id : ids) req.add_message_ids(id);
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::AckResponse r;
  grpc::Status s = stub->Ack(&ctx, req, &r);
  if (!s.ok()) return RpcFailed(err, s);
  if (g.json()) {
    out << json{{"acknowledged", r.acknowledged()}, {"not_found", r.not_found()}, {"expired", r.expired()}}.dump()
        << "\n";
  } else {
    for (const auto& id : r.acknowledged()) out << id << " acknowledged\n";
    for (const auto& id : r.not_found()) out << id << " not found\n";
    for (const auto& id : r.expired()) out << id << " expired\n";
  }
  return r.not_found().empty() && r.expired().empty() ? 0 : 1;
}

int DoTrack(const Global& g, const std::string& id, std::ostream& out, std::ostream& err) {
  auto stub = Connect(g, err);
  if (!stub) return 2;
  v1::TrackRequest req;
  req.set_message_id(id);
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::TrackResponse r;
  grpc::Status s = stub->Track(&ctx, req, &r);
  if (!s.ok()) return RpcFailed(err, s);
  std::string status = v1::MessageStatus_Name(r.status());
  status = status.substr(std::string("MESSAGE_STATUS_").size());
  json j{{"message_id", r.message_id()},
         {"status", status},
         {"sender", r.sender()},
         {"recipient", r.recipient()},
         {"workflow", r.workflow()},
         {"local_reference", r.local_reference()},
         {"accepted_at", Rfc3339(r.accepted_at())},
         {"first_delivered_at", Rfc3339(r.first_delivered_at())},
         {"acknowledged_at", Rfc3339(r.acknowledged_at())},
         {"expired_at", Rfc3339(r.expired_at())},
         {"expires_at", Rfc3339(r.expires_at())},
         {"delivery_count", r.delivery_count()},
         {"body_purged", r.body_purged()},
         {"withheld_at", Rfc3339(r.withheld_at())},
         {"withheld_reason", r.withheld_reason()}};
  if (g.json()) {
    out << j.dump() << "\n";
  } else {
    for (const auto& [k, v] : j.items()) {
      if (v.is_string() && v.get<std::string>().empty()) continue;
      out << k << ": " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
    }
  }
  return 0;
}

// Applies the store's schema migrations: PostgreSQL by its connection
// string, SQLite by opening the file (which migrates it). Exit 1 when the
// store cannot be reached or is newer than this build.
int DoDbMigrate(const std::string& store, std::ostream& out, std::ostream& err) {
  auto done = MigrateStore(store);
  if (!done.ok()) {
    err << "carebrokerctl: " << done.status().message() << "\n";
    return 1;
  }
  out << *done << "\n";
  return 0;
}

}  // namespace

int RunCtl(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"carebrokerctl: send, receive, acknowledge and track messages; lint and reload agreements; record consent"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may follow the command
  Global g;
  g.tls.target = EnvOr("CAREBROKER_TARGET", "127.0.0.1:7443");
  g.tls.cert = EnvOr("CAREBROKER_CERT", "");
  g.tls.key = EnvOr("CAREBROKER_KEY", "");
  g.tls.ca = EnvOr("CAREBROKER_CA", "");
  app.add_option("--target", g.tls.target, "broker host:port (CAREBROKER_TARGET)");
  app.add_option("--cert", g.tls.cert, "client certificate PEM (CAREBROKER_CERT)");
  app.add_option("--key", g.tls.key, "client key PEM (CAREBROKER_KEY)");
  app.add_option("--ca", g.tls.ca, "CA certificate PEM (CAREBROKER_CA)");
  app.add_option("--timeout", g.timeout_s, "deadline in seconds for each request")->check(CLI::PositiveNumber);
  app.add_option("--format", g.format, "output format")->check(CLI::IsMember({"text", "json"}));

  SendArgs sa;
  auto* send = app.add_subcommand("send", "send one message; prints its id");
  send->add_option("--to", sa.to, "recipient ODS code")->required();
  send->add_option("--workflow", sa.workflow, "workflow, e.g. HOSPITAL_DISCHARGE")->required();
  send->add_option("--purpose", sa.purpose, "purpose of use, e.g. direct-care")->required();
  send->add_option("--idempotency-key", sa.key, "your key for safe retries");
  send->add_option("--content-type", sa.content_type, "payload content type (default: from the file name)");
  send->add_option("--local-reference", sa.local_reference, "your reference, echoed to the recipient");
  send->add_option("--justification", sa.justification, "why dissent is set aside (safeguarding override)");
  send->add_flag("--care-record", sa.care_record, "FILE is a carebroker.v1.CareRecord in JSON; send it canonical");
  send->add_option("FILE", sa.file, "payload file")->required();

  ReceiveArgs ra;
  auto* receive = app.add_subcommand("receive", "write messages into a folder, acknowledging each once written");
  receive->add_option("--out", ra.out_dir, "output folder")->required();
  receive->add_option("--max", ra.max, "stop after this many messages")->check(CLI::NonNegativeNumber);
  receive->add_option("--wait", ra.wait_s, "stop after this many seconds with no message (default 5)")
      ->check(CLI::NonNegativeNumber);

  std::vector<std::string> ack_ids;
  auto* ack = app.add_subcommand("ack", "acknowledge messages by id");
  ack->add_option("ID", ack_ids, "message ids")->required();

  std::string track_id;
  auto* track = app.add_subcommand("track", "show a message's status and times");
  track->add_option("ID", track_id, "message id")->required();

  auto* pol = app.add_subcommand("policy", "data-sharing agreements");
  pol->require_subcommand(1);
  std::string lint_dir;
  auto* lint = pol->add_subcommand("lint", "validate a folder of agreements (offline)");
  lint->add_option("DIR", lint_dir, "agreements folder")->required();
  auto* reload = pol->add_subcommand("reload", "reload the broker's agreements (operator role)");
  std::string test_dir, test_cases;
  auto* ptest = pol->add_subcommand("test", "run a table of requests with expected decisions (offline)");
  ptest->add_option("DIR", test_dir, "agreements folder")->required();
  ptest->add_option("CASES", test_cases, "YAML file of cases (schema carebroker.v1.PolicyCases)")->required();
  ExplainArgs ea;
  auto* explain = pol->add_subcommand("explain", "which agreement and flow decide one request, and why (offline)");
  explain->add_option("DIR", ea.dir, "agreements folder")->required();
  explain->add_option("--sender", ea.sender, "sender ODS code")->required();
  explain->add_option("--sender-kind", ea.sender_kind, "e.g. nhs-trust")->required();
  explain->add_option("--recipient", ea.recipient, "recipient ODS code")->required();
  explain->add_option("--recipient-kind", ea.recipient_kind, "e.g. local-authority")->required();
  explain->add_option("--workflow", ea.workflow, "e.g. HOSPITAL_DISCHARGE")->required();
  explain->add_option("--purpose", ea.purpose, "e.g. direct-care")->required();
  explain->add_flag("--opaque", ea.opaque, "the payload is not a care record");
  explain->add_option("--justification", ea.justification, "safeguarding override justification");
  explain->add_option("--date", ea.date, "UK day of the send, YYYY-MM-DD (default today)");
  explain->add_option("--record", ea.record, "a CareRecord in JSON: show what would be released and withheld");
  explain->add_flag("--opt-out", ea.opt_out, "the person has a national data opt-out");
  explain->add_option("--dissent", ea.dissent, "recorded dissent: PURPOSE or PURPOSE@ODS-or-kind (repeatable)");
  explain->add_option("--consent", ea.consent, "recorded consent: PURPOSE or PURPOSE@ODS-or-kind (repeatable)");

  ConsentArgs ca;
  auto* con = app.add_subcommand("consent", "a person's consent, dissent and national data opt-out");
  con->require_subcommand(1);
  auto* rec = con->add_subcommand("record", "record consent or dissent");
  auto* wd = con->add_subcommand("withdraw", "withdraw a standing directive");
  auto* oo = con->add_subcommand("opt-out", "set or clear the national data opt-out");
  auto* show = con->add_subcommand("show", "standing wishes and history");
  for (auto* c : {rec, wd, oo, show}) c->add_option("--nhs-number", ca.nhs, "NHS number (10 digits)")->required();
  for (auto* c : {rec, wd, oo}) {
    c->add_option("--source", ca.source, "where the wish was expressed")->required();
    c->add_option("--recorded-by", ca.recorded_by, "who recorded it")->required();
  }
  rec->add_flag("--consent", ca.consent, "record consent");
  rec->add_flag("--dissent", ca.dissent, "record dissent");
  rec->add_option("--purpose", ca.purpose, "purpose, e.g. direct-care")->required();
  rec->add_option("--scope-ods", ca.scope_ods, "only for this recipient organisation");
  rec->add_option("--scope-kind", ca.scope_kind, "only for this kind of organisation, e.g. local-authority");
  wd->add_option("--directive", ca.directive, "directive id")->required();
  oo->add_flag("--set", ca.on, "the person has opted out");
  oo->add_flag("--clear", ca.off, "the person's opt-out is withdrawn");

  ConvertArgs cv;
  auto* convert = app.add_subcommand("convert", "translate a file between formats offline, to check a mapping");
  std::vector<std::string> format_names;
  for (const auto& f : adapters::Formats()) format_names.emplace_back(f.name);
  convert->add_option("--from", cv.from, "format of FILE")->required()->check(CLI::IsMember(format_names));
  convert->add_option("--to", cv.to, "format to print")->required()->check(CLI::IsMember(format_names));
  convert->add_option("--sender", cv.sender, "ODS code for the envelope (FHIR MessageHeader, HL7 MSH, CLD LA Code)");
  convert->add_option("--recipient", cv.recipient, "ODS code for the envelope");
  convert->add_flag("--keep-invalid-nhs-number", cv.keep_invalid_nhs,
                    "keep an NHS number failing Modulus 11 (as an agreement accepting unverified identifiers would)");
  convert->add_option("FILE", cv.file, "input file")->required()->check(CLI::ExistingFile);

  std::string db_store;
  auto* db = app.add_subcommand("db", "the broker's store");
  db->require_subcommand(1);
  auto* migrate = db->add_subcommand("migrate", "bring the store's schema to this build's version (offline)");
  migrate->add_option("--store", db_store, "the SQLite file, or a PostgreSQL connection string (postgresql://...)")
      ->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e, out, err);
    return rc == 0 ? 0 : 2;
  }
  if (*lint) return DoLint(lint_dir, out, err);
  if (*convert) return DoConvert(cv, out, err);
  if (*migrate) return DoDbMigrate(db_store, out, err);
  if (*ptest) return DoPolicyTest(g, test_dir, test_cases, out, err);
  if (*explain) return DoExplain(ea, out, err);
  if (g.tls.cert.empty() || g.tls.key.empty() || g.tls.ca.empty()) {
    err << "carebrokerctl: --cert, --key and --ca (or CAREBROKER_CERT, _KEY, _CA) are required\n";
    return 2;
  }
  if (*send) return DoSend(g, sa, out, err);
  if (*receive) return DoReceive(g, ra, out, err);
  if (*ack) return DoAck(g, ack_ids, out, err);
  if (*track) return DoTrack(g, track_id, out, err);
  if (*reload) return DoReload(g, out, err);
  if (*con) {
    for (auto* c : {rec, wd, oo, show}) {
      if (*c) return DoConsent(g, c->get_name(), ca, out, err);
    }
  }
  return 2;
}

}  // namespace carebroker
