#include "connect/connect.h"

#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "core/vocabulary.h"
#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "adapters/formats.h"
#include "adapters/hl7v2/adt.h"
#include "broker/client/client.h"
#include "core/shapes.h"
#include "core/time.h"
#include "core/files.h"
#include "core/status.h"
#include "core/yaml/yaml_proto.h"
#include "core/log.h"
#include "connect/mllp.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kDefaultMaxFrame = 1 << 20;
constexpr uint32_t kDefaultMaxConnections = 16;

std::string Resolve(const std::string& base, const std::string& p) {
  return p.empty() || fs::path(p).is_absolute() ? p : (fs::path(base) / p).string();
}

// A printable key for one send: the same message to the same target gives
// the same key, so a hospital's retry is a duplicate, not a second message.
std::string IdempotencyKey(const std::string& facility, const std::string& control_id, const std::string& target) {
  std::string key = absl::StrCat("mllp:", facility, ":", control_id, ":", target);
  for (char& c : key) {
    if (c < 0x21 || c > 0x7e) c = '_';
  }
  return key.substr(0, 128);
}

// outbound.for_good: the defaults, and what an entry may be.
constexpr const char* kWebhookForGood[] = {"400-407", "409-428", "430-499"};
constexpr const char* kMllpForGood[] = {"AE", "CR"};
constexpr const char* kMllpAnswers[] = {"AE", "AR", "CE", "CR"};
constexpr absl::string_view kNothingForGood = "none";
// RejectRequest.text's bound (exchange.proto).
constexpr size_t kMaxRejectionText = 256;

// An HTTP status range "400-407", or one status "404".
bool ParseStatusRange(absl::string_view entry, int* lo, int* hi) {
  const size_t dash = entry.find('-');
  if (!absl::SimpleAtoi(entry.substr(0, dash), lo)) return false;
  if (dash == absl::string_view::npos) {
    *hi = *lo;
  } else if (!absl::SimpleAtoi(entry.substr(dash + 1), hi)) {
    return false;
  }
  return *lo >= 300 && *hi <= 599 && *lo <= *hi;
}

absl::Status CheckForGood(v1::ConnectOutbound& o) {
  if (o.to_case() == v1::ConnectOutbound::kDirectory || o.to_case() == v1::ConnectOutbound::TO_NOT_SET) {
    return o.for_good().empty() ? absl::OkStatus()
                                : absl::InvalidArgumentError("only a webhook or an MLLP peer answers: not for a folder");
  }
  const bool webhook = o.has_webhook();
  if (o.for_good().empty()) {
    if (webhook) {
      for (const char* e : kWebhookForGood) o.add_for_good(e);
    } else {
      for (const char* e : kMllpForGood) o.add_for_good(e);
    }
    return absl::OkStatus();
  }
  for (const std::string& e : o.for_good()) {
    if (e == kNothingForGood) {
      if (o.for_good_size() > 1) return absl::InvalidArgumentError("none stands alone");
      continue;
    }
    int lo, hi;
    if (webhook && !ParseStatusRange(e, &lo, &hi)) {
      return absl::InvalidArgumentError(absl::StrCat("'", e, "': an HTTP status (300-599) or a range, e.g. 400-407"));
    }
    if (!webhook && absl::c_find(kMllpAnswers, e) == std::end(kMllpAnswers)) {
      return absl::InvalidArgumentError(absl::StrCat("'", e, "': an ACK code that refuses (AE, AR, CE or CR)"));
    }
  }
  return absl::OkStatus();
}

// Whether the output's answer refuses the message for good.
bool ForGood(const v1::ConnectOutbound& o, const DeliveryAnswer& a) {
  if (a.for_good) return true;
  absl::string_view code = a.code;
  if (code.empty()) return false;  // no answer: may pass later
  int status = 0;
  const bool http = absl::ConsumePrefix(&code, "HTTP_") && absl::SimpleAtoi(code, &status);
  for (const std::string& e : o.for_good()) {
    int lo, hi;
    if (http ? ParseStatusRange(e, &lo, &hi) && status >= lo && status <= hi : e == code) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<v1::ConnectConfig> ParseConnectConfig(absl::string_view yaml, absl::string_view file,
                                                     const std::string& base_dir) {
  v1::ConnectConfig c;
  YamlLines lines;
  if (absl::Status s = YamlToProto(yaml, file, &c, &lines); !s.ok()) return s;
  auto err = [&](const std::string& key, absl::string_view why) {
    const auto it = lines.find(key);
    return ConfigInvalid(it == lines.end() ? absl::StrCat(file, ": ", key) : absl::StrCat(file, ":", it->second, ": ", key),
                         why);
  };
  auto* b = c.mutable_broker();
  if (b->target().empty()) return err("broker.target", "required: host:port of the broker");
  if (!c.log().level().empty() && !LogLevelFromName(c.log().level()).ok()) {
    return err("log.level", "debug, info, warning or error");
  }
  for (auto [key, field] : {std::pair{"broker.cert", b->mutable_cert()}, std::pair{"broker.key", b->mutable_key()},
                            std::pair{"broker.ca", b->mutable_ca()}}) {
    if (field->empty()) return err(key, "required (PEM file)");
    *field = Resolve(base_dir, *field);
    if (!fs::exists(*field)) return err(key, absl::StrCat("cannot read ", *field));
  }
  if (!c.has_mllp() && c.outbound().to_case() == v1::ConnectOutbound::TO_NOT_SET) {
    return err("mllp", "nothing to do: configure mllp (inbound), outbound, or both");
  }
  if (c.has_mllp()) {
    auto* m = c.mutable_mllp();
    if (m->listen().empty()) return err("mllp.listen", "required: host:port, e.g. 127.0.0.1:2575");
    if (m->max_frame_bytes() == 0) m->set_max_frame_bytes(kDefaultMaxFrame);
    if (m->max_connections() == 0) m->set_max_connections(kDefaultMaxConnections);
    if (m->workflows().empty()) return err("mllp.workflows", "required: ADT event to workflow, e.g. {A03: HOSPITAL_DISCHARGE}");
    for (const auto& [event, workflow] : m->workflows()) {
      if (!IsWorkflowShape(workflow)) return err(absl::StrCat("mllp.workflows.", event), "not a workflow (UPPER_SNAKE)");
    }
    if (!IsPurposeShape(m->purpose())) return err("mllp.purpose", "required: e.g. direct-care");
    if (m->recipients().empty() && m->routes().empty()) {
      return err("mllp.recipients", "name recipients (ODS codes) or routes (council-of-residence, registered-gp)");
    }
    for (const std::string& r : m->recipients()) {
      if (!IsOdsCodeShape(r)) return err("mllp.recipients", "ODS codes: 3-10 upper-case letters or digits");
    }
    for (const std::string& r : m->routes()) {
      if (r != kRouteCouncilOfResidence && r != kRouteRegisteredGp) {
        return err("mllp.routes", "council-of-residence or registered-gp");
      }
    }
  }
  auto* o = c.mutable_outbound();
  if (o->to_case() == v1::ConnectOutbound::kDirectory) {
    o->set_directory(Resolve(base_dir, o->directory()));
    std::error_code ec;
    fs::create_directories(o->directory(), ec);
    if (!fs::is_directory(o->directory())) return err("outbound.directory", "cannot create or use the folder");
  }
  if (o->to_case() == v1::ConnectOutbound::kMllpPeer && o->mllp_peer().find(':') == std::string::npos) {
    return err("outbound.mllp_peer", "expected host:port");
  }
  if (o->has_webhook()) {
    auto* w = o->mutable_webhook();
    if (w->url().empty()) return err("outbound.webhook.url", "required: https://host[:port]/path");
    if (absl::Status s = CheckWebhookUrl(w->url()); !s.ok()) return err("outbound.webhook.url", s.message());
    if (w->cert().empty() != w->key().empty()) {
      return err(w->cert().empty() ? "outbound.webhook.cert" : "outbound.webhook.key",
                 "cert and key go together (mutual TLS)");
    }
    for (auto [key, field] : {std::pair{"outbound.webhook.ca", w->mutable_ca()},
                              std::pair{"outbound.webhook.cert", w->mutable_cert()},
                              std::pair{"outbound.webhook.key", w->mutable_key()},
                              std::pair{"outbound.webhook.authorization_file", w->mutable_authorization_file()}}) {
      *field = Resolve(base_dir, *field);
      if (!field->empty() && !fs::exists(*field)) return err(key, absl::StrCat("cannot read ", *field));
    }
  }
  if (absl::Status s = CheckForGood(*o); !s.ok()) return err("outbound.for_good", s.message());
  return c;
}

absl::StatusOr<v1::ConnectConfig> LoadConnectConfig(const std::string& path) {
  auto text = ReadFileToString(path, "config");
  if (!text.ok()) return text.status();
  return ParseConnectConfig(*text, path, fs::absolute(path).parent_path().string());
}

absl::StatusOr<std::unique_ptr<Connect>> Connect::Start(const v1::ConnectConfig& config) {
  std::unique_ptr<Connect> c(new Connect(config));
  const auto& b = config.broker();
  auto channel = MakeChannel({b.target(), b.cert(), b.key(), b.ca()});
  if (!channel.ok()) return channel.status();
  c->stub_ = v1::Exchange::NewStub(*channel);
  if (config.has_mllp()) {
    auto fd = mllp::Listen(config.mllp().listen(), &c->mllp_port_);
    if (!fd.ok()) return fd.status();
    c->listen_fd_ = *fd;
    c->acceptor_ = std::thread([p = c.get()] { p->AcceptLoop(); });
  }
  if (config.outbound().has_webhook()) {
    auto w = Webhook::Create(config.outbound().webhook(), &c->stopping_);
    if (!w.ok()) return w.status();
    c->webhook_ = *std::move(w);
  }
  if (config.outbound().to_case() != v1::ConnectOutbound::TO_NOT_SET) {
    c->outbound_ = std::thread([p = c.get()] { p->OutboundLoop(); });
  }
  return c;
}

Connect::~Connect() { Stop(); }

void Connect::Stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  {
    absl::MutexLock l(&mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    if (receive_ctx_ != nullptr) receive_ctx_->TryCancel();
  }
  if (acceptor_.joinable()) acceptor_.join();
  if (outbound_.joinable()) outbound_.join();
  std::vector<std::thread> workers;
  {
    absl::MutexLock l(&mu_);
    workers.swap(workers_);
  }
  for (auto& t : workers) t.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void Connect::AcceptLoop() {
  while (!stopping_) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_) return;
      continue;
    }
    if (connections_.load() >= static_cast<int>(config_.mllp().max_connections())) {
      ::close(fd);  // over the limit: the sender's engine reconnects later
      continue;
    }
    ++connections_;
    absl::MutexLock l(&mu_);
    open_fds_.push_back(fd);
    workers_.emplace_back([this, fd] { ServeConnection(fd); });
  }
}

void Connect::ServeConnection(int fd) {
  mllp::Deframer deframer(config_.mllp().max_frame_bytes());
  char buf[16384];
  std::vector<std::string> frames;
  while (!stopping_) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    frames.clear();
    const absl::Status s = deframer.Feed(absl::string_view(buf, static_cast<size_t>(n)), &frames);
    bool ok = true;
    for (const std::string& f : frames) {
      if (!(ok = mllp::WriteAll(fd, mllp::Frame(Handle(f))))) break;
    }
    if (!ok) break;
    if (!s.ok()) {
      // Out of step or too large: answer what can be answered, then hang up.
      const std::string ack = hl7::MakeAck(deframer.partial(), hl7::AckCode::kReject, {"100", std::string(s.message())},
                                           absl::Now(), absl::StrCat("CONNECT-", ++ack_counter_));
      mllp::WriteAll(fd, mllp::Frame(ack));
      break;
    }
  }
  {
    absl::MutexLock l(&mu_);
    std::erase(open_fds_, fd);
  }
  ::close(fd);
  --connections_;
}

std::string Connect::Handle(const std::string& er7) {
  const std::string ack_id = absl::StrCat("CONNECT-", ++ack_counter_);
  auto answer = [&](hl7::AckCode code, hl7::AckError e = {}) { return hl7::MakeAck(er7, code, e, absl::Now(), ack_id); };
  auto message = hl7::Message::Parse(er7);
  if (!message.ok()) return answer(hl7::AckCode::kError, hl7::AckErrorFor(message.status()));
  const hl7::Segment& msh = message->msh();
  const std::string trigger = absl::AsciiStrToUpper(msh.Get(9, 2));
  const auto& m = config_.mllp();
  const auto wf = m.workflows().find(trigger);
  if (wf == m.workflows().end()) {
    if (m.accept_unmapped_events()) return answer(hl7::AckCode::kAccept);
    return answer(hl7::AckCode::kError, {"201", "this connect forwards no workflow for this event"});
  }
  std::vector<std::pair<std::string, bool>> targets;  // (target, is a route)
  for (const std::string& r : m.recipients()) targets.emplace_back(r, false);
  for (const std::string& r : m.routes()) targets.emplace_back(r, true);
  // What the ACK says is what happened: AA when a copy was stored, with a
  // warning (ERR severity W) for each recipient or route refused; AE only
  // when none was; AR when the broker did not commit one, so the sender
  // resends (each copy's idempotency key makes those already stored
  // duplicates, not new messages).
  int stored = 0;
  std::vector<hl7::AckError> refused;
  for (const auto& [target, is_route] : targets) {
    v1::SendRequest req;
    (is_route ? *req.mutable_route() : *req.mutable_recipient()) = target;
    req.set_workflow(wf->second);
    req.set_purpose(m.purpose());
    req.set_content_type(std::string(adapters::InfoOf(adapters::Format::kHl7v2).content_type));
    req.set_payload(er7);
    req.set_idempotency_key(IdempotencyKey(msh.Get(4), msh.Get(10), target));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     absl::ToChronoMilliseconds(DurationOr(config_.broker().timeout(), absl::Seconds(10))));
    v1::SendReceipt receipt;
    const grpc::Status s = stub_->Send(&ctx, req, &receipt);
    if (s.ok()) {
      ++stored;
      continue;
    }
    switch (s.error_code()) {
      case grpc::StatusCode::UNAVAILABLE:
      case grpc::StatusCode::DEADLINE_EXCEEDED:
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
      case grpc::StatusCode::INTERNAL:
      case grpc::StatusCode::UNKNOWN:
      case grpc::StatusCode::CANCELLED:
        return answer(hl7::AckCode::kReject, {"207", absl::StrCat("the broker did not commit the message (",
                                                                  StatusCodeName(s.error_code()), "); resend later")});
      default: {
        // The table 0357 code as for a local refusal; MSA-3 is the broker's reason and message (never patient data).
        const std::string reason = ErrorReason(s);
        hl7::AckError e = hl7::AckErrorFor(
            Error(static_cast<absl::StatusCode>(s.error_code()), reason, s.error_message()));
        e.text = absl::StrCat(is_route ? "route " : "recipient ", target, ": ", reason, ": ", s.error_message())
                     .substr(0, 400);
        refused.push_back(std::move(e));
      }
    }
  }
  if (stored == 0 && !refused.empty()) {
    return hl7::MakeAckWithErrors(er7, hl7::AckCode::kError, refused, absl::Now(), ack_id);
  }
  for (hl7::AckError& e : refused) e.severity = "W";
  return hl7::MakeAckWithErrors(er7, hl7::AckCode::kAccept, refused, absl::Now(), ack_id);
}

void Connect::OutboundLoop() {
  const auto& o = config_.outbound();
  absl::Duration backoff = DurationOr(o.retry_backoff(), absl::Seconds(1));
  const absl::Duration first_backoff = backoff;
  int peer_fd = -1;
  while (!stopping_) {
    absl::Duration wait = backoff;
    grpc::ClientContext ctx;
    {
      absl::MutexLock l(&mu_);
      if (stopping_) break;
      receive_ctx_ = &ctx;
    }
    auto stream = stub_->Receive(&ctx);
    v1::ReceiveRequest open;
    // One at a time, as the output takes them: a message handed over and
    // not yet tried would be charged a delivery attempt (delivery.
    // max_attempts) each time a failure ends the stream, and held with the
    // one that failed.
    open.mutable_open()->set_max_in_flight(1);
    bool healthy = stream->Write(open);
    v1::DeliveryBatch batch;
    while (healthy && stream->Read(&batch)) {
      for (const v1::Delivery& d : batch.deliveries()) {
        const DeliveryAnswer answer = Deliver(d, &peer_fd);
        if (!answer.delivered && ForGood(o, answer)) {
          // Refused for good: the broker holds it and tells its sender; the next goes out.
          Log(LogLevel::kWarning, "delivery.rejected")
              .Str("message_id", d.message_id())
              .Str("code", answer.code)
              .Str("reason", answer.reason)
              .Msg("refused for good; rejected to the broker, which holds it");
          v1::ReceiveRequest reject;
          reject.mutable_reject()->set_message_id(d.message_id());
          reject.mutable_reject()->set_code(answer.code);
          reject.mutable_reject()->set_text(answer.reason.substr(0, kMaxRejectionText));
          if (!stream->Write(reject)) {
            healthy = false;
            break;
          }
          ++rejected_;
          continue;
        }
        if (!answer.delivered) {
          // Left unacknowledged: the broker redelivers it.
          healthy = false;
          wait = std::max(backoff, answer.retry_after);
          Log(LogLevel::kWarning, "delivery.retry")
              .Str("message_id", d.message_id())
              .Str("reason", answer.reason)
              .Ms("retry_in", wait)
              .Msg("not delivered; the broker redelivers it");
          break;
        }
        v1::ReceiveRequest ack;
        ack.set_ack(d.message_id());
        if (!stream->Write(ack)) {
          healthy = false;
          break;
        }
        ++delivered_;
        backoff = first_backoff;
      }
    }
    ctx.TryCancel();
    (void)stream->Finish();
    {
      absl::MutexLock l(&mu_);
      receive_ctx_ = nullptr;
    }
    // Wait before reopening, in small steps so Stop() is prompt.
    for (absl::Time until = absl::Now() + wait; !stopping_ && absl::Now() < until;) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    backoff = std::min(backoff * 2, absl::Seconds(60));
  }
  if (peer_fd >= 0) ::close(peer_fd);
}

namespace {
// An MLLP peer's refusal: its ACK code and, when the ACK has an ERR segment,
// the HL7 error code (ERR-3, table 0357) in the text; never ERR's free
// text, which may name the patient.
DeliveryAnswer MllpRefusal(const std::string& ack_code, const hl7::Segment* err) {
  DeliveryAnswer a;
  if (absl::c_find(kMllpAnswers, ack_code) == std::end(kMllpAnswers)) {
    a.reason = "the MLLP peer's ACK code is not one HL7 defines";
    return a;  // not an answer for_good can name: may pass later
  }
  a.code = ack_code;
  a.reason = absl::StrCat("the MLLP peer answered ", ack_code);
  const std::string error = err != nullptr ? err->Get(3) : "";
  if (!error.empty() && error.size() <= 5 && absl::c_all_of(error, absl::ascii_isdigit)) {
    absl::StrAppend(&a.reason, " (HL7 error ", error, ")");
  }
  return a;
}
}  // namespace

DeliveryAnswer Connect::Deliver(const v1::Delivery& d, int* peer_fd) {
  const auto& o = config_.outbound();
  if (o.to_case() == v1::ConnectOutbound::kWebhook) return webhook_->Post(d);
  if (o.to_case() == v1::ConnectOutbound::kDirectory) {
    if (WriteFileAtomically(o.directory(), d.message_id() + ExtensionFor(d.content_type()), d.payload())) {
      return {.delivered = true};
    }
    return {.reason = "cannot write to the outbound folder"};
  }
  // An MLLP peer: the message must be HL7 v2, and the peer must answer AA (or CA).
  if (adapters::FormatByContentType(d.content_type()).value_or(adapters::Format::kCanonical) != adapters::Format::kHl7v2) {
    // Stored in its format already: a config change would not help this one.
    return {.code = "NOT_HL7V2",
            .for_good = true,
            .reason = "not HL7 v2: set `receives: hl7v2` for this organisation in the broker's config"};
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (*peer_fd < 0) {
      auto fd = mllp::Dial(o.mllp_peer(), absl::Seconds(10));
      if (!fd.ok()) return {.reason = "the MLLP peer cannot be reached"};
      *peer_fd = *fd;
    }
    if (mllp::WriteAll(*peer_fd, mllp::Frame(d.payload()))) {
      auto ack = mllp::ReadFrame(*peer_fd, 1 << 20, absl::Seconds(30));
      if (ack.ok()) {
        auto m = hl7::Message::Parse(*ack);
        const hl7::Segment* msa = m.ok() ? m->Find("MSA") : nullptr;
        if (msa != nullptr && (msa->Get(1) == "AA" || msa->Get(1) == "CA")) return {.delivered = true};
        if (msa == nullptr) return {.reason = "the MLLP peer's ACK has no MSA"};
        return MllpRefusal(msa->Get(1), m->Find("ERR"));
      }
    }
    ::close(*peer_fd);  // a stale connection: dial again once
    *peer_fd = -1;
  }
  return {.reason = "the MLLP peer did not answer"};
}

}  // namespace carebroker
