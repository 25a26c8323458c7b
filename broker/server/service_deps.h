// What every service of the broker borrows. The Broker owns each of these
// and the ServiceDeps itself, and they outlive every service and every
// reactor (the server is shut down first).
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "broker/config/config.h"
#include "broker/exchange/exchange_metrics.h"
#include "broker/exchange/mailboxes.h"
#include "broker/exchange/policy_gate.h"
#include "broker/exchange/send_pipeline.h"
#include "broker/server/identity.h"
#include "broker/store/store.h"
#include "carebroker/v1/policy.pb.h"
#include "core/clock.h"

namespace carebroker {
namespace audit {
class AuditLog;
}

struct ServiceDeps {
  // The config at start: read for the keys only a restart changes (limits,
  // delivery). What a reload changes (organisations, roles, keys, routing)
  // is read from policy.config().
  const Config& config;
  Store& store;
  Mailboxes& mailboxes;
  MemoryBudget& budget;
  const Clock& clock;
  IdentityCache& identities;
  std::atomic<int>& streams;  // open Receive, SendStream, SendLarge and Download streams
  PolicyGate& policy;
  audit::AuditLog& audit;
  SendPipeline& sends;
  ExchangeMetrics& metrics;
  // Reloads the config's reloadable part, the TLS files and the agreements
  // (Broker::Reload), on behalf of `actor`.
  std::function<absl::StatusOr<v1::ReloadResponse>(const std::string& actor)> reload;
};

}  // namespace carebroker
