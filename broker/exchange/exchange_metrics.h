// What the exchange counts, for Prometheus (core/metrics.h). Labels are
// workflows and reason codes; nothing about a person is ever a label.
#pragma once

#include "core/metrics.h"

namespace carebroker {

struct ExchangeMetrics {
  explicit ExchangeMetrics(metrics::Registry& r);

  metrics::Family<metrics::Counter>& accepted;   // {workflow}: sends stored
  metrics::Family<metrics::Counter>& refused;    // {reason}: sends refused, policy denials included
  metrics::Family<metrics::Counter>& delivered;  // {workflow}: deliveries written to Receive streams
  metrics::Family<metrics::Counter>& acknowledged;  // {workflow}: acks made durable
  metrics::Family<metrics::Counter>& expired;    // {workflow}: not acknowledged in time (delivery.expiry)
  metrics::Family<metrics::Counter>& withheld;   // {workflow, reason}: withheld at delivery (consent changed)
  metrics::Histogram& send_to_commit;            // seconds from a send's arrival to its durable receipt
  metrics::Histogram& send_to_delivery;          // seconds from acceptance to the first write to a stream
};

}  // namespace carebroker
