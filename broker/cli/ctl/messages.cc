#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/cli/ctl/commands.h"
#include "carebroker/v1/exchange.grpc.pb.h"
#include "carebroker/v1/record.pb.h"
#include "core/files.h"
#include "core/ids.h"
#include "core/status.h"
#include "core/vocabulary.h"
#include "google/protobuf/util/json_util.h"

namespace carebroker::ctl {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Guesses a content type from a file name; --content-type wins.
std::string GuessContentType(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".hl7" || ext == ".er7") return "x-application/hl7-v2+er7";
  if (ext == ".json") return "application/json";
  if (ext == ".fhir") return "application/fhir+json";
  if (ext == ".csv") return "text/csv";
  if (ext == ".xml") return "application/xml";
  if (ext == ".pb") return kCareRecordContentType;
  if (ext == ".pdf") return "application/pdf";
  return "application/octet-stream";
}

struct SendArgs {
  std::string to, workflow, purpose, key, content_type, local_reference, justification, file;
  bool care_record = false;  // FILE is a CareRecord in protobuf JSON; sent as canonical binary
  uint64_t chunk_mib = 4;    // a larger file goes by SendLarge in chunks of this size
};

int PrintReceipt(const Global& g, const v1::SendReceipt& r, std::ostream& out, std::ostream& err);

// Reads `file` from the start in chunks of `chunk` bytes, sending the first
// as `req`'s payload; each chunk's deadline is --timeout.
grpc::Status SendLargeFile(const Global& g, v1::Exchange::Stub& stub, v1::SendRequest req, const std::string& file,
                           uint64_t size, uint64_t chunk, v1::SendReceipt* r) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "cannot read the payload file " + file);
  const uint64_t chunks = (size + chunk - 1) / chunk;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(g.timeout_s * 1000 * static_cast<double>(chunks))));
  auto w = stub.SendLarge(&ctx, r);
  std::string buf;
  for (uint64_t n = 1; n <= chunks; ++n) {
    buf.resize(static_cast<size_t>(std::min(chunk, size - (n - 1) * chunk)));
    if (!in.read(buf.data(), static_cast<std::streamsize>(buf.size()))) {
      ctx.TryCancel();
      (void)w->Finish();
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the payload file " + file + " changed while it was read");
    }
    v1::LargeSendRequest m;
    if (n == 1) {
      req.set_payload(buf);
      *m.mutable_start()->mutable_request() = std::move(req);
      m.mutable_start()->set_chunks(static_cast<uint32_t>(chunks));
    } else {
      m.set_chunk(buf);
    }
    if (!w->Write(m)) break;  // the broker ended the call: Finish says why
  }
  w->WritesDone();
  return w->Finish();
}

int DoSend(const Global& g, const SendArgs& a, std::ostream& out, std::ostream& err) {
  v1::SendRequest req;
  req.set_recipient(a.to);
  req.set_workflow(a.workflow);
  req.set_purpose(a.purpose);
  req.set_idempotency_key(a.key);
  req.set_content_type(a.content_type.empty() ? GuessContentType(a.file) : a.content_type);
  req.set_local_reference(a.local_reference);
  req.set_justification(a.justification);
  std::error_code size_error;
  const uint64_t size = fs::file_size(a.file, size_error);
  const uint64_t chunk = a.chunk_mib << 20;
  const bool large = !size_error && !a.care_record && size > chunk;
  if (large && (size + chunk - 1) / chunk > 10000) {
    err << "carebrokerctl: " << a.file << " needs more than 10000 chunks: give a larger --chunk-mib\n";
    return 2;
  }
  if (!large) {
    auto payload = ReadFileToString(a.file, "payload file");
    if (!payload.ok()) {
      err << "carebrokerctl: " << payload.status().message() << "\n";
      return 2;
    }
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
  }
  auto stub = Connect<v1::Exchange>(g, err);
  if (!stub) return 2;
  v1::SendReceipt r;
  grpc::Status s;
  if (large) {
    s = SendLargeFile(g, *stub, std::move(req), a.file, size, chunk, &r);
  } else {
    grpc::ClientContext ctx;
    SetDeadline(ctx, g);
    s = stub->Send(&ctx, req, &r);
  }
  if (!s.ok()) return RpcFailed(err, s);
  return PrintReceipt(g, r, out, err);
}

int PrintReceipt(const Global& g, const v1::SendReceipt& r, std::ostream& out, std::ostream& err) {
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

// Downloads delivery `d` into dir/name through a hidden part file, renamed
// once whole. The broker's status, or INTERNAL naming the folder when the
// file cannot be written (the part file is then removed).
grpc::Status DownloadToFile(const Global& g, v1::Exchange::Stub& stub, const v1::Delivery& d, const fs::path& dir,
                            const std::string& name) {
  const fs::path part = dir / ("." + name + ".part");
  std::ofstream file(part, std::ios::binary | std::ios::trunc);
  if (!file) return grpc::Status(grpc::StatusCode::INTERNAL, "cannot write into " + dir.string());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(g.timeout_s * 1000 * std::max(1u, d.chunks()))));
  v1::DownloadRequest req;
  req.set_message_id(d.message_id());
  auto r = stub.Download(&ctx, req);
  v1::DownloadResponse resp;
  bool written = true;
  while (r->Read(&resp)) {
    if (resp.has_data()) written = written && static_cast<bool>(file.write(resp.data().data(), resp.data().size()));
  }
  grpc::Status s = r->Finish();
  file.close();
  written = written && !file.fail();
  if (s.ok() && written) {
    std::error_code ec;
    fs::rename(part, dir / name, ec);
    if (!ec) return s;
  }
  fs::remove(part);
  if (!s.ok()) return s;
  return grpc::Status(grpc::StatusCode::INTERNAL, "cannot write into " + dir.string());
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
  auto stub = Connect<v1::Exchange>(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  auto stream = stub->Receive(&ctx);

  absl::Mutex mu;  // guards writes on the stream and the two below
  bool closed = false;
  absl::Time last = absl::Now();
  auto close_writes = [&]() {  // caller holds mu
    if (!closed) {
      closed = true;
      stream->WritesDone();
    }
  };

  v1::ReceiveRequest open;
  open.mutable_open()->set_max_in_flight(a.max > 0 ? std::min(a.max, 100) : 100);
  open.mutable_open()->set_large_messages(true);  // downloaded below
  if (!stream->Write(open)) return RpcFailed(err, stream->Finish());

  // Ends the stream after `wait` seconds with no delivery.
  std::thread idle([&]() {
    absl::MutexLock l(&mu);
    const absl::Duration wait = absl::Seconds(a.wait_s);
    while (!closed) {
      if (mu.AwaitWithDeadline(absl::Condition(&closed), last + wait)) break;
      if (absl::Now() >= last + wait) close_writes();
    }
  });

  int count = 0;
  bool local_error = false;
  json messages = json::array();
  v1::DeliveryBatch batch;
  while (stream->Read(&batch)) {
    absl::MutexLock l(&mu);
    last = absl::Now();
    for (const v1::Delivery& d : batch.deliveries()) {
      if (closed) break;  // not acknowledged: redelivered later
      const std::string body_name = d.message_id() + ExtensionFor(d.content_type());
      if (d.chunks() > 1) {  // a large message: its payload comes by Download
        if (grpc::Status got = DownloadToFile(g, *stub, d, dir, body_name); !got.ok()) {
          err << "carebrokerctl: " << d.message_id() << " not downloaded (" << DescribeStatus(got)
              << "); message left unacknowledged\n";
          local_error = true;
          close_writes();
          break;
        }
      } else if (!WriteFileAtomically(dir.string(), body_name, d.payload())) {
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
    absl::MutexLock l(&mu);
    closed = true;  // wakes the idle thread
  }
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
  auto stub = Connect<v1::Exchange>(g, err);
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

struct RejectArgs {
  std::string id, code, text;
};

int DoReject(const Global& g, const RejectArgs& a, std::ostream& out, std::ostream& err) {
  auto stub = Connect<v1::Exchange>(g, err);
  if (!stub) return 2;
  v1::RejectRequest req;
  req.set_message_id(a.id);
  req.set_code(a.code);
  req.set_text(a.text);
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::RejectResponse r;
  grpc::Status s = stub->Reject(&ctx, req, &r);
  if (!s.ok()) return RpcFailed(err, s);
  const std::string status = StatusName(r.status());
  if (g.json()) {
    out << json{{"message_id", a.id}, {"status", status}}.dump() << "\n";
  } else {
    out << a.id << " " << status << "\n";
  }
  return r.status() == v1::MESSAGE_STATUS_HELD ? 0 : 1;
}

int DoTrack(const Global& g, const std::string& id, const std::string& key, std::ostream& out, std::ostream& err) {
  if (id.empty() == key.empty()) {
    err << "carebrokerctl: track takes a message ID or --key, one of the two\n";
    return 2;
  }
  auto stub = Connect<v1::Exchange>(g, err);
  if (!stub) return 2;
  v1::TrackRequest req;
  req.set_message_id(id);
  req.set_idempotency_key(key);
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::TrackResponse r;
  grpc::Status s = stub->Track(&ctx, req, &r);
  if (!s.ok()) return RpcFailed(err, s);
  const std::string status = StatusName(r.status());
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
         {"withheld_reason", r.withheld_reason()},
         {"held_at", Rfc3339(r.held_at())},
         {"held_reason", r.held_reason()},
         {"rejection_code", r.rejection_code()},
         {"rejection_text", r.rejection_text()},
         {"replaces", r.replaces()},
         {"replaced_by", r.replaced_by()}};
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

}  // namespace

void AddMessageCommands(CLI::App& app, Run& run) {
  auto sa = std::make_shared<SendArgs>();
  auto* send = app.add_subcommand("send", "send one message; prints its id");
  send->add_option("--to", sa->to, "recipient ODS code")->required();
  send->add_option("--workflow", sa->workflow, "workflow, e.g. HOSPITAL_DISCHARGE")->required();
  send->add_option("--purpose", sa->purpose, "purpose of use, e.g. direct-care")->required();
  send->add_option("--idempotency-key", sa->key, "your key for safe retries");
  send->add_option("--content-type", sa->content_type, "payload content type (default: from the file name)");
  send->add_option("--local-reference", sa->local_reference, "your reference, echoed to the recipient");
  send->add_option("--justification", sa->justification, "why dissent is set aside (safeguarding override)");
  send->add_flag("--care-record", sa->care_record, "FILE is a carebroker.v1.CareRecord in JSON; send it canonical");
  send->add_option("--chunk-mib", sa->chunk_mib,
                   "a file larger than this many MiB goes in chunks of this size (SendLarge; default 4, at most 32)")
      ->check(CLI::Range(1, 32));
  send->add_option("FILE", sa->file, "payload file")->required();
  send->callback([&run, sa] { run.Online([&run, sa] { return DoSend(run.g, *sa, run.out, run.err); }); });

  auto ra = std::make_shared<ReceiveArgs>();
  auto* receive = app.add_subcommand("receive", "write messages into a folder, acknowledging each once written");
  receive->add_option("--out", ra->out_dir, "output folder")->required();
  receive->add_option("--max", ra->max, "stop after this many messages")->check(CLI::NonNegativeNumber);
  receive->add_option("--wait", ra->wait_s, "stop after this many seconds with no message (default 5)")
      ->check(CLI::NonNegativeNumber);
  receive->callback([&run, ra] { run.Online([&run, ra] { return DoReceive(run.g, *ra, run.out, run.err); }); });

  auto ack_ids = std::make_shared<std::vector<std::string>>();
  auto* ack = app.add_subcommand("ack", "acknowledge messages by id");
  ack->add_option("ID", *ack_ids, "message ids")->required();
  ack->callback([&run, ack_ids] { run.Online([&run, ack_ids] { return DoAck(run.g, *ack_ids, run.out, run.err); }); });

  auto ra_reject = std::make_shared<RejectArgs>();
  auto* reject = app.add_subcommand(
      "reject", "refuse a message for good: it is held, never delivered again, and its sender is told");
  reject->add_option("ID", ra_reject->id, "message id")->required();
  reject->add_option("--code", ra_reject->code, "your reason code, e.g. UNKNOWN_PATIENT (shown to the sender)")
      ->required();
  reject->add_option("--text", ra_reject->text, "a line for the sender (no patient data)");
  reject->callback(
      [&run, ra_reject] { run.Online([&run, ra_reject] { return DoReject(run.g, *ra_reject, run.out, run.err); }); });

  auto track_id = std::make_shared<std::string>();
  auto track_key = std::make_shared<std::string>();
  auto* track = app.add_subcommand("track", "show a message's status and times");
  track->add_option("ID", *track_id, "message id");
  track->add_option("--key", *track_key, "instead of ID: the idempotency key you sent the message with");
  track->callback([&run, track_id, track_key] {
    run.Online([&run, track_id, track_key] { return DoTrack(run.g, *track_id, *track_key, run.out, run.err); });
  });
}

}  // namespace carebroker::ctl
