// Receive: one organisation's deliveries on a stream, with acks on the same
// stream. Deliveries come from claims on the store (oldest first) and, once
// a claim has drained the mailbox, directly from sends as they commit
// (Subscriber::Reserve). At most max_in_flight unacknowledged deliveries
// are out at once; unacknowledged ones go back to the mailbox when the
// stream ends. Each delivery is checked against consent again (PolicyGate::
// CheckAtDelivery) and withheld for good when the person's wishes changed.
#pragma once

#include <grpcpp/support/server_callback.h>

#include "broker/server/identity.h"
#include "broker/server/service_deps.h"
#include "carebroker/v1/exchange.pb.h"

namespace carebroker {

// A reactor for an authorised agency `id` whose stream has been counted
// (EnterStream); it deletes itself when done.
grpc::ServerBidiReactor<v1::ReceiveRequest, v1::DeliveryBatch>* NewReceiveReactor(const ServiceDeps& d, Identity id);

}  // namespace carebroker
