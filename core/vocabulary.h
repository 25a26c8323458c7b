// The names that travel on the wire and that every layer agrees on: content
// types, the broker's own workflow, routing targets. The reason codes are in
// core/reasons.h.
#pragma once

namespace carebroker {

// The content type of a canonical CareRecord payload. Payloads in the other
// formats of adapters/formats.h (HL7 v2, FHIR, council JSON, CLD) are read
// into a CareRecord too; any other content type is opaque.
inline constexpr char kCareRecordContentType[] = "application/x-protobuf; proto=carebroker.v1.CareRecord";

// A NonDeliveryReport payload, and the workflow the broker sends it under
// (no sender may use it).
inline constexpr char kNdrContentType[] = "application/x-protobuf; proto=carebroker.v1.NonDeliveryReport";
inline constexpr char kNdrWorkflow[] = "NON_DELIVERY_REPORT";

// Routing targets a sender may give instead of a recipient.
inline constexpr char kRouteCouncilOfResidence[] = "council-of-residence";
inline constexpr char kRouteRegisteredGp[] = "registered-gp";

}  // namespace carebroker
