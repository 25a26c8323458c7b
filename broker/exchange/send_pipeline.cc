#include "broker/exchange/send_pipeline.h"

#include <chrono>
#include <optional>
#include <utility>
#include <vector>

#include "adapters/formats.h"
#include "audit/log.h"
#include "broker/exchange/intake.h"
#include "broker/exchange/submission.h"
#include "broker/store/mailbox_rules.h"
#include "core/log.h"
#include "core/reasons.h"
#include "core/shapes.h"
#include "core/status.h"
#include "core/time.h"

namespace carebroker {
namespace {

absl::Status AuditUnavailable() {
  return Error(absl::StatusCode::kUnavailable, reason::kAuditUnavailable,
               "the audit log cannot be written; nothing was accepted (retry later)");
}

absl::Status BudgetExhausted() {
  return Error(absl::StatusCode::kResourceExhausted, reason::kMemoryBudgetExhausted,
               "the broker is at its memory budget; retry shortly");
}

absl::Status ExecutorFull() {
  return Error(absl::StatusCode::kResourceExhausted, reason::kExecutorFull,
               "the broker's intake queue is full; retry shortly");
}

// A refusal of the send itself (its shape, size, recipient or format), which
// is recorded; not one for load or an unavailable store, which the sender
// retries and the metrics count.
bool IsRequestRefusal(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
      return true;
    case absl::StatusCode::kResourceExhausted:
      return ReasonOf(s) == reason::kMessageTooLarge;
    default:
      return false;
  }
}

}  // namespace

void SendPipeline::RecordRefusal(const OrgCode& sender, const RefusedSend& send, const absl::Status& why) {
  if (!IsRequestRefusal(why)) return;
  v1::AuditEntry e;
  e.set_actor(sender.str());
  e.set_actor_role("agency");
  e.set_sender(sender.str());
  // The caller's words only when well formed: a refused send may carry anything.
  if (IsOdsCodeShape(send.recipient)) e.set_recipient(send.recipient);
  if (IsWorkflowShape(send.workflow)) e.set_workflow(send.workflow);
  if (IsPurposeShape(send.purpose)) e.set_purpose(send.purpose);
  std::string reason = ReasonOf(why);
  e.add_reasons(reason.empty() ? reason::kInternal : reason);
  e.set_detail(absl::StrCat("send refused before any decision: ", absl::StatusCodeToString(why.code())));
  audit_.RecordRefusal(std::move(e), v1::AUDIT_EVENT_SEND_REFUSED);
}

void SendPipeline::Send(const OrgCode& sender, v1::SendRequest req, Done answer,
                        const std::shared_ptr<Executor::Serial>& serial, SendOptions options) {
  // Every answer is counted: refusals by reason, receipts by their latency.
  // At log level debug, a line each: ids, codes and the reason only.
  Done done = [this, sender, start = std::chrono::steady_clock::now(),
               answer = std::move(answer)](absl::StatusOr<v1::SendReceipt> r) mutable {
    const auto took = std::chrono::steady_clock::now() - start;
    if (r.ok()) {
      metrics_.send_to_commit.Observe(std::chrono::duration<double>(took).count());
      Log(LogLevel::kDebug, r->duplicate() ? "message.duplicate" : "message.accepted")
          .Str("message_id", r->message_id())
          .Str("sender", sender.str())
          .Str("recipient", r->recipient())
          .Str("flow", r->flow())
          .Ms("latency", absl::FromChrono(took));
    } else {
      std::string reason = ReasonOf(r.status());
      if (reason.empty()) reason = reason::kInternal;
      metrics_.refused.With({reason}).Inc();
      Log(LogLevel::kDebug, "message.refused")
          .Str("sender", sender.str())
          .Str("code", absl::StatusCodeToString(r.status().code()))
          .Str("reason", reason)
          .Ms("latency", absl::FromChrono(took));
    }
    std::move(answer)(std::move(r));
  };
  if (!audit_.healthy()) return std::move(done)(AuditUnavailable());
  if (options.chunks > 1 && adapters::FormatByContentType(req.content_type()).ok() &&
      !IsSubmissionContentType(req.content_type())) {
    absl::Status refused = InvalidArgument(reason::kChunkRangeInvalid,
                                           "a care record (HL7 v2, FHIR, council JSON) is decided as a whole: send it "
                                           "in one message; chunked messages carry CLD submissions, documents and "
                                           "files");
    RecordRefusal(sender, {req.recipient(), req.workflow(), req.purpose()}, refused);
    return std::move(done)(std::move(refused));
  }
  // A payload over the size limit is refused by intake before any parsing;
  // it holds no budget meanwhile.
  const uint64_t in = req.payload().size();
  const uint64_t limit = options.max_bytes != 0 ? options.max_bytes : config_.proto().limits().max_message_bytes();
  const uint64_t held = in <= limit ? in : 0;
  if (!budget_.TryAcquire(held)) return std::move(done)(BudgetExhausted());
  // The request and the callback live in `work`, shared with the task: a
  // refused task is dropped unrun, and the callback is then answered here.
  struct Work {
    OrgCode sender;
    v1::SendRequest req;
    SendOptions options;
    std::optional<Done> done;
  };
  auto work = std::make_shared<Work>(Work{sender, std::move(req), std::move(options), std::move(done)});
  const bool queued = executor_.TrySubmit(
      [this, held, work] {
        Intake(work->sender, std::move(work->req), std::move(work->options), held, *std::move(work->done));
      },
      serial);
  if (!queued) {
    budget_.Release(held);
    (*std::move(work->done))(ExecutorFull());
  }
}

void SendPipeline::Intake(const OrgCode& sender, v1::SendRequest req, SendOptions options, uint64_t held,
                          Done done) {
  AuditRecord denial;
  // One snapshot of what is in force decides the whole message, across a
  // reload.
  const std::shared_ptr<const PolicyGate::InForce> in_force = policy_.in_force();
  RefusedSend named{req.recipient(), req.workflow(), req.purpose()};  // for a refusal's entry
  absl::StatusOr<Admitted> admitted = Admit(*in_force->config, *in_force->policy, policy_.consent(), audit_.entries(),
                                            sender, std::move(req), clock_.Now(), &denial, options.max_bytes,
                                            options.chunks, options.replaced_consent_keys);
  if (!admitted.ok()) {
    budget_.Release(held);
    if (denial.empty()) {
      RecordRefusal(sender, named, admitted.status());
      return std::move(done)(admitted.status());
    }
    std::vector<AuditRecord> records;
    records.push_back(std::move(denial));
    store_.AppendAudit(std::move(records), [denied = admitted.status(), done = std::move(done)](
                                               absl::StatusOr<uint64_t> r) mutable {
      std::move(done)(r.ok() ? denied : AuditUnavailable());
    });
    return;
  }
  if (options.replaces && admitted->message.subject != options.replaced_subject) {
    budget_.Release(held);
    return std::move(done)(Error(absl::StatusCode::kFailedPrecondition, reason::kMessageNotResendable,
                                 "the stored copy does not name the person it was decided for, so it cannot be "
                                 "decided again; its sender must send it again"));
  }
  // The rendered payload is what stays in memory until the commit.
  const uint64_t out = admitted->message.payload.size();
  if (out > held && !budget_.TryAcquire(out - held)) {
    budget_.Release(held);
    return std::move(done)(BudgetExhausted());
  }
  if (out < held) budget_.Release(held - out);

  v1::SendReceipt receipt;
  FillReceipt(*admitted, &receipt);
  NewMessage m = std::move(admitted->message);
  m.meta = std::move(options.meta);
  m.chunks = options.chunks;
  m.replaces = std::move(options.replaces);
  const OrgCode recipient = m.recipient;
  std::string workflow = m.workflow;
  // A Receive stream of the recipient that can take the message now gets
  // it stored already claimed by that stream and handed over after the
  // commit, with no claim query and no second trip through the store. (Not
  // the first chunk of a chunked message: it is delivered once complete.)
  Subscriber* direct = m.chunks > 1 ? nullptr : mailboxes_.ReserveDirect(recipient, workflow, &m.claim_token);
  std::optional<StoredDelivery> delivery;
  if (direct != nullptr) {
    m.visible_until = m.accepted_at + config_.visibility_timeout();
    delivery.emplace(StoredDelivery{m.id, m.sender, m.workflow, m.purpose, m.content_type, m.local_reference, m.kind,
                                    m.payload, m.accepted_at, 1, m.subject, m.consent_check, m.consent_keys});
  }
  const bool chunked = m.chunks > 1;
  std::vector<NewMessage> batch;
  batch.push_back(std::move(m));
  store_.Append(std::move(batch), [this, recipient, direct, chunked, out, workflow = std::move(workflow),
                                   delivery = std::move(delivery),
                                   receipt = std::move(receipt), done = std::move(done)](auto r) mutable {
    absl::StatusOr<AppendReceipt> one = r.ok() ? std::move((*r)[0]) : absl::StatusOr<AppendReceipt>(r.status());
    if (chunked) {
      // Not claimable until its last chunk: no stream waits on it.
    } else if (direct == nullptr) {
      mailboxes_.EndStoredSend(recipient);
    } else if (one.ok() && !one->duplicate) {
      delivery->seq = one->seq;
      direct->Deliver(*std::move(delivery));
    } else {
      direct->CancelReservation();
    }
    budget_.Release(out);
    if (!one.ok()) return std::move(done)(one.status());
    if (!one->duplicate) metrics_.accepted.With({workflow}).Inc();
    receipt.set_message_id(one->id.str());
    *receipt.mutable_accepted_at() = ToTimestamp(one->accepted_at);
    receipt.set_duplicate(one->duplicate);
    std::move(done)(std::move(receipt));
  });
}

void SendPipeline::SendChunk(ChunkUpload chunk, ChunkDone done) {
  const OrgCode sender = chunk.sender;
  const MessageId id = chunk.id;
  store_.ReadChunkProgress(sender, id, [this, chunk = std::move(chunk), done = std::move(done)](
                                           absl::StatusOr<ChunkProgress> at) mutable {
    if (!at.ok()) return std::move(done)(at.status());
    if (at->progress.empty()) return store_.AppendChunk(std::move(chunk), std::move(done));  // carried as sent
    // A chunk already taken is refused before it is read (the store would
    // refuse it after).
    if (auto s = mailbox::CheckSubmissionChunk(true, true, at->received, at->received, static_cast<int>(chunk.n));
        !s.ok()) {
      return std::move(done)(s);
    }
    // A CLD submission's chunk: minimised on an intake thread, then stored
    // if nothing moved the submission on meanwhile.
    struct Work {
      ChunkUpload chunk;
      ChunkProgress at;
      std::optional<ChunkDone> done;
    };
    auto work = std::make_shared<Work>(Work{std::move(chunk), *std::move(at), std::move(done)});
    const bool queued = executor_.TrySubmit([this, work] {
      ChunkUpload& c = work->chunk;
      ChunkDone answer = *std::move(work->done);
      v1::SubmissionProgress progress;
      if (!progress.ParseFromString(work->at.progress)) {
        return std::move(answer)(Error(absl::StatusCode::kInternal, reason::kStoreCorrupt,
                                     "a CLD submission's progress cannot be read"));
      }
      const std::shared_ptr<const PolicyGate::InForce> in_force = policy_.in_force();
      const bool last = c.n == c.total;
      auto rows = MinimiseSubmissionChunk({*in_force->config, *in_force->policy, policy_.consent(), audit_.entries(),
                                           c.sender, OrgCode(progress.recipient()), c.id, clock_.Now()},
                                          c.data, c.n, last, &progress);
      if (!rows.ok()) return std::move(answer)(rows.status());
      c.data = std::move(rows->rows);
      c.row_audit = std::move(rows->row_audit);
      c.after = work->at.received;
      if (last) c.audit_patch = SubmissionAuditPatch(progress).SerializeAsString();
      c.progress = progress.SerializeAsString();
      store_.AppendChunk(std::move(c), std::move(answer));
    });
    if (!queued) (*std::move(work->done))(ExecutorFull());
  });
}

}  // namespace carebroker
