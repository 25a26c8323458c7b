#include "broker/server/grpc_status.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "broker/client/client.h"
#include "core/status.h"
#include "broker/server/identity.h"

namespace carebroker {
namespace {

TEST(GrpcStatus, EveryCodeMapsToItself) {
  const std::pair<absl::StatusCode, grpc::StatusCode> all[] = {
      {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
      {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
      {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
      {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
  };
  for (auto [a, g] : all) {
    grpc::Status s = ToGrpcStatus(Error(a, "SOME_REASON", "detail"));
    EXPECT_EQ(s.error_code(), g) << static_cast<int>(a);
    EXPECT_EQ(s.error_message(), "detail");
    EXPECT_EQ(ErrorReason(s), "SOME_REASON");
    v1::Error e = ToStreamError(Error(a, "SOME_REASON", "detail"));
    EXPECT_EQ(e.code(), static_cast<int>(g));
    EXPECT_EQ(e.reason(), "SOME_REASON");
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(GrpcStatus, InternalErrorsAreGeneric) {
  grpc::Status s = ToGrpcStatus(absl::InternalError("row 17 of patient 9434765919 broke"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(s.error_message(), "internal error");
  EXPECT_EQ(ErrorReason(s), "INTERNAL");
  s = ToGrpcStatus(absl::UnknownError("secret"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(s.error_message(), "internal error");
  EXPECT_EQ(ToStreamError(absl::InternalError("secret")).message(), "internal error");
}

TEST(GrpcStatus, NoReasonMeansNoDetails) {
  grpc::Status s = ToGrpcStatus(absl::NotFoundError("x"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(s.error_details().empty());
}

std::string Pem(const std::string& name) {
  const char* pki = std::getenv("CB_TEST_PKI");
  EXPECT_NE(pki, nullptr) << "run through ctest";
  std::ifstream in(std::string(pki ? pki : "") + "/" + name + ".crt");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Identity, FromDevCertificates) {
  auto rr8 = IdentityFromPem(Pem("RR8"));
  ASSERT_TRUE(rr8.ok()) << rr8.status();
  EXPECT_EQ(rr8->org.str(), "RR8");
  EXPECT_EQ(rr8->role, Role::kAgency);
  auto gp = IdentityFromPem(Pem("Y06601"));
  EXPECT_EQ(gp->org.str(), "Y06601");
  auto ig = IdentityFromPem(Pem("ig-officer"));
  EXPECT_EQ(ig->org.str(), "503");
  EXPECT_EQ(ig->role, Role::kIgOfficer);
  EXPECT_EQ(IdentityFromPem(Pem("operator"))->role, Role::kOperator);
}

TEST(Identity, CertificatesWithoutIdentityAreRefused) {
  // The server certificate names no ODS code.
  auto s = IdentityFromPem(Pem("server"));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ReasonOf(s.status()), "CERTIFICATE_IDENTITY_INVALID");
  EXPECT_EQ(IdentityFromPem("not a certificate").status().code(), absl::StatusCode::kUnauthenticated);
  IdentityCache cache;
  EXPECT_TRUE(cache.Get(Pem("503")).ok());
  EXPECT_EQ(cache.Get(Pem("503"))->org.str(), "503");
}

}  // namespace
}  // namespace carebroker
