// The send pipeline: every front door (unary Send, SendStream, and the
// HTTPS MESH door) hands a caller's SendRequest here and is answered once,
// with a receipt when the message is durable or with the error. No gRPC.
//
// In order:
//   1. fail closed: a broker whose audit log cannot be written accepts
//      nothing (UNAVAILABLE AUDIT_UNAVAILABLE); a care record announced in
//      chunks (SendOptions::chunks, MESH or SendLarge) is refused, as it is
//      decided whole (INVALID_ARGUMENT CHUNK_RANGE_INVALID), except a CLD
//      submission, decided a row at a time (exchange/submission.h);
//   2. admission: the payload's bytes are taken from the memory budget
//      *before* any parsing (RESOURCE_EXHAUSTED MEMORY_BUDGET_EXHAUSTED);
//   3. the intake executor takes the CPU work, never the caller's thread
//      (RESOURCE_EXHAUSTED EXECUTOR_FULL when its queue is full);
//   4. intake (exchange/intake.h): parse, route, decide, minimise, render;
//      the budget is then trued up to the rendered payload's size; one
//      snapshot of the config and agreements in force decides it;
//   5. a policy denial's audit entry is made durable before the denial is
//      answered (UNAVAILABLE AUDIT_UNAVAILABLE when it cannot be);
//   6. a send refused for what it is (its shape, size, recipient or format;
//      not for load) is recorded as a SEND_REFUSED audit entry, without
//      waiting, rate-limited (AuditLog::RecordRefusal);
//   7. an admitted message is stored, reserved for direct delivery to a
//      Receive stream of the recipient that can take it now.
// The budget is released once the append completes, whatever its outcome.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "broker/config/config.h"
#include "broker/exchange/exchange_metrics.h"
#include "broker/exchange/executor.h"
#include "broker/exchange/mailboxes.h"
#include "broker/exchange/policy_gate.h"
#include "broker/store/store.h"
#include "carebroker/v1/exchange.pb.h"
#include "core/clock.h"
#include "core/types.h"

namespace carebroker {
namespace audit {
class AuditLog;
}

// What a front door may add to a send beyond the SendRequest.
struct SendOptions {
  // Stored with the message and handed to its recipient unchanged (the
  // MESH front door's pass-through headers; NewMessage::meta).
  std::string meta;
  // More than 1: the payload is the first of this many chunks (MESH); the
  // message waits, invisible, for the rest (Store::AppendChunk).
  uint32_t chunks = 1;
  // The payload's limit; 0: limits.max_message_bytes.
  uint64_t max_bytes = 0;
  // An operator's redirect or resend of an undelivered message
  // (NewMessage::replaces) that was decided for the person
  // `replaced_subject` ("" for none): the new send must be about the same
  // person, or it is refused FAILED_PRECONDITION MESSAGE_NOT_RESENDABLE
  // (a copy minimised to carry no NHS number cannot be decided again). The
  // wishes recorded under `replaced_consent_keys` (the original's local
  // identifiers, which its minimised copy may no longer carry) are
  // consulted as well.
  std::optional<OperatorAction> replaces;
  std::string replaced_subject;
  std::string replaced_consent_keys;
};

class SendPipeline {
 public:
  // Called exactly once, on the caller's thread (steps 1 to 3), an intake
  // thread or a store thread. It must not block.
  using Done = absl::AnyInvocable<void(absl::StatusOr<v1::SendReceipt>) &&>;

  // Every reference must outlive the pipeline and every send in flight.
  // `config` is the config at start, read for limits and delivery (keys only
  // a restart changes); intake reads what is in force from `policy`.
  SendPipeline(const Config& config, Store& store, Mailboxes& mailboxes, MemoryBudget& budget, const Clock& clock,
               PolicyGate& policy, audit::AuditLog& audit, Executor& executor, ExchangeMetrics& metrics)
      : config_(config),
        store_(store),
        mailboxes_(mailboxes),
        budget_(budget),
        clock_(clock),
        policy_(policy),
        audit_(audit),
        executor_(executor),
        metrics_(metrics) {}
  SendPipeline(const SendPipeline&) = delete;
  SendPipeline& operator=(const SendPipeline&) = delete;

  // Sends `req` from `sender` (a registered agency). Sends given the same
  // `serial` are taken in and reach the store in the order given.
  void Send(const OrgCode& sender, v1::SendRequest req, Done done,
            const std::shared_ptr<Executor::Serial>& serial = nullptr, SendOptions options = {});

  // Chunk 2 or later of a chunked message, from its sender (MESH chunk
  // upload, SendLarge): stored as sent, or for a CLD submission
  // (exchange/submission.h) read, decided and minimised a row at a time
  // on an intake thread first. Answered as Store::AppendChunk, plus the
  // submission's errors and RESOURCE_EXHAUSTED EXECUTOR_FULL.
  using ChunkDone = absl::AnyInvocable<void(absl::StatusOr<ChunkStored>) &&>;
  void SendChunk(ChunkUpload chunk, ChunkDone done);

  // A serial queue for one caller's sends (a stream's).
  std::shared_ptr<Executor::Serial> NewSerial() const { return executor_.NewSerial(); }

  // What a refused send named, as the caller gave it.
  struct RefusedSend {
    std::string recipient, workflow, purpose;
  };
  // Records `why`, a refusal of a send from `sender`, as step 6 says (a
  // front door's own refusals before the pipeline, too); nothing for a
  // refusal for load.
  void RecordRefusal(const OrgCode& sender, const RefusedSend& send, const absl::Status& why);

 private:
  void Intake(const OrgCode& sender, v1::SendRequest req, SendOptions options, uint64_t held, Done done);

  const Config& config_;
  Store& store_;
  Mailboxes& mailboxes_;
  MemoryBudget& budget_;
  const Clock& clock_;
  PolicyGate& policy_;
  audit::AuditLog& audit_;
  Executor& executor_;
  ExchangeMetrics& metrics_;
};

}  // namespace carebroker
