// The MESH front door: NHS England's MESH API (v2, and v1 response shapes
// where Accept asks for them) on an HTTPS listener with mutual TLS, as the
// send pipeline's third caller. docs/mesh.md has every operation, what
// carebroker answers and where it differs from MESH.
//
// Every request is identified twice, as MESH and carebroker each require:
// the client certificate names the organisation (as on the gRPC listener),
// and the NHSMESH Authorization token proves the mailbox (its password and
// the environment's shared secret, within two hours, once: tokens are
// recorded in the store, so replicas sharing PostgreSQL refuse a token any
// of them accepted). A mailbox of another organisation is 403 and an
// audited refusal.
//
// Sends go through the SendPipeline exactly as gRPC sends do: decided by
// the agreements and the person's recorded wishes, minimised, rendered in
// the recipient's format and audited. A message is addressed to a mailbox
// (mex-to) and stored for its organisation; the mex-* headers MESH passes
// through (subject, filename, local id, partner id, checksum and flags)
// travel with it as the message's metadata. Downloads re-check consent as a
// Receive stream does, and a non-delivery report reaches the sender's
// mailbox as a MESH REPORT message.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "broker/http/http_server.h"
#include "core/types.h"

namespace carebroker {
class Store;
class SendPipeline;
class PolicyGate;
class IdentityCache;
class Clock;
struct ExchangeMetrics;
namespace audit {
class AuditLog;
}

namespace mesh {

struct ServiceDeps {
  Store& store;
  SendPipeline& sends;
  PolicyGate& policy;  // the config in force (mailboxes, workflows, secrets) and the consent book
  audit::AuditLog& audit;
  IdentityCache& identities;
  const Clock& clock;
  ExchangeMetrics& metrics;
};

class MeshService {
 public:
  explicit MeshService(ServiceDeps deps) : d_(deps) {}

  // The listener's handler: answers every request exactly once, possibly
  // from a store or intake thread.
  void Handle(http::HttpRequest request, http::Reply reply) ABSL_LOCKS_EXCLUDED(mu_);

  // Shutdown: later requests are answered 503 at once, and this waits (up
  // to `timeout`) until every request taken has been answered, so none is
  // still on its way into the send pipeline or the store. False on timeout.
  bool Drain(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Call;
  void Route(std::shared_ptr<Call> call);
  void Authorised(std::shared_ptr<Call> call);
  void Handshake(std::shared_ptr<Call> call);
  void ListInbox(std::shared_ptr<Call> call, bool count_only);
  void Download(std::shared_ptr<Call> call, const std::string& id, int chunk, bool head);
  // The pieces of chunk `chunk` after `first` (piece 0), read as asked.
  std::function<void(http::PieceSink)> ChunkPieces(std::shared_ptr<Call> call, MessageId id, uint32_t chunk,
                                                   std::string first);
  void Acknowledge(std::shared_ptr<Call> call, const std::string& id);
  void Send(std::shared_ptr<Call> call);
  void UploadChunk(std::shared_ptr<Call> call, const std::string& id, const std::string& number);
  void Track(std::shared_ptr<Call> call);
  void EndpointLookup(std::shared_ptr<Call> call, const std::string& ods, const std::string& workflow);
  void WorkflowSearch(std::shared_ptr<Call> call, const std::string& workflow);

  // Answers 403 and audits the refusal (naming the caller when identified).
  void Refuse(Call& call, const absl::Status& why, bool identified);
  void Finished() ABSL_LOCKS_EXCLUDED(mu_);

  ServiceDeps d_;
  absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace mesh
}  // namespace carebroker
