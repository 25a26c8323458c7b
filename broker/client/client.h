// Client-side helpers shared by carebrokerctl, the tests and the benchmark:
// a mutual-TLS channel from PEM files, and readable errors from statuses.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/support/status.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace carebroker {

struct ClientTls {
  std::string target;  // host:port
  std::string cert;    // client certificate (PEM file)
  std::string key;     // client key (PEM file)
  std::string ca;      // CA that signed the broker's certificate (PEM file)
};

// A channel that presents the client certificate and verifies the broker's.
// INVALID_ARGUMENT when a file cannot be read.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientTls& tls);

// The file name extension for a delivered payload of `content_type`:
// .hl7, .json, .csv, .xml, .pb, or .dat for anything else.
std::string ExtensionFor(const std::string& content_type);

// The google.rpc.ErrorInfo reason carried by `s`, or "".
std::string ErrorReason(const grpc::Status& s);

// "CODE REASON: message", e.g. "FAILED_PRECONDITION UNKNOWN_RECIPIENT: ...".
std::string DescribeStatus(const grpc::Status& s);

// The canonical name of a gRPC status code, e.g. "PERMISSION_DENIED".
std::string StatusCodeName(grpc::StatusCode c);

}  // namespace carebroker
