#include "broker/exchange/exchange_metrics.h"

namespace carebroker {

ExchangeMetrics::ExchangeMetrics(metrics::Registry& r)
    : accepted(r.AddCounters("carebroker_messages_accepted_total", "Messages stored for delivery, by workflow.",
                             {"workflow"})),
      refused(r.AddCounters("carebroker_sends_refused_total",
                            "Sends refused, by reason code (policy denials, malformed requests, capacity).",
                            {"reason"})),
      delivered(r.AddCounters("carebroker_messages_delivered_total",
                              "Deliveries written to Receive streams (redeliveries included), by workflow.",
                              {"workflow"})),
      acknowledged(r.AddCounters("carebroker_messages_acknowledged_total",
                                 "Acknowledgements made durable, by workflow (\"unknown\" for an id the stream did not "
                                 "deliver).",
                                 {"workflow"})),
      expired(r.AddCounters("carebroker_messages_expired_total",
                            "Messages not acknowledged within delivery.expiry (each gets a non-delivery report), by "
                            "workflow.",
                            {"workflow"})),
      withheld(r.AddCounters("carebroker_messages_withheld_total",
                             "Messages withheld at delivery because consent or an objection changed, by workflow and "
                             "reason.",
                             {"workflow", "reason"})),
      send_to_commit(r.AddHistogram("carebroker_send_to_commit_seconds",
                                    "From a send's arrival to its durable receipt (accepted sends).",
                                    metrics::LatencyBuckets())),
      send_to_delivery(r.AddHistogram("carebroker_send_to_delivery_seconds",
                                      "From a message's acceptance to its first write to a Receive stream.",
                                      metrics::LatencyBuckets())) {}

}  // namespace carebroker
