#include "broker/client/client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>


#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "google/rpc/status.pb.h"

namespace carebroker {
namespace {


}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientTls& tls) {
  if (tls.target.empty()) return absl::InvalidArgumentError("no target given (host:port)");
  grpc::SslCredentialsOptions o;
  auto ca = ReadFileToString(tls.ca, "CA file");
  if (!ca.ok()) return ca.status();
  auto cert = ReadFileToString(tls.cert, "certificate file");
  if (!cert.ok()) return cert.status();
  auto key = ReadFileToString(tls.key, "key file");
  if (!key.ok()) return key.status();
  o.pem_root_certs = *ca;
  o.pem_cert_chain = *cert;
  o.pem_private_key = *key;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  // The broker is the one that knows its limits.max_message_bytes and refuses
  // a larger message with RESOURCE_EXHAUSTED; a client-side cap would refuse a
  // chunk of exactly that size once its envelope is added.
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(tls.target, grpc::SslCredentials(o), args);
}

std::string ErrorReason(const grpc::Status& s) {
  if (s.error_details().empty()) return "";
  google::rpc::Status st;
  if (!st.ParseFromString(s.error_details())) return "";
  for (const auto& any : st.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) return info.reason();
  }
  return "";
}

std::string StatusCodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::DO_NOT_USE: break;
  }
  return absl::StrCat("CODE_", static_cast<int>(c));
}

std::string DescribeStatus(const grpc::Status& s) {
  const std::string reason = ErrorReason(s);
  return absl::StrCat(StatusCodeName(s.error_code()), reason.empty() ? "" : " ", reason, ": ", s.error_message());
}

std::string ExtensionFor(const std::string& content_type) {
  if (content_type.find("hl7") != std::string::npos) return ".hl7";
  if (content_type.find("json") != std::string::npos) return ".json";
  if (content_type.find("csv") != std::string::npos) return ".csv";
  if (content_type.find("xml") != std::string::npos) return ".xml";
  if (content_type.find("protobuf") != std::string::npos) return ".pb";
  if (content_type.find("pdf") != std::string::npos) return ".pdf";
  return ".dat";
}

}  // namespace carebroker
