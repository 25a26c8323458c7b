#include "broker/exchange/intake.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "broker/core/status.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker {
namespace {

class IntakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("cb-intake-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    for (const char* f : {"c", "k", "a"}) std::ofstream(dir_ / f) << "x";
    auto c = ParseConfig(R"(listen: 127.0.0.1:1
data_dir: d
tls: {cert: c, key: k, ca: a}
limits: {max_message_bytes: 100, memory_budget_bytes: 1000}
organisations:
  - {ods: RR8, name: Leeds, kind: nhs_trust}
  - {ods: "503", name: Lincolnshire, kind: local_authority}
)",
                         "t.yaml", dir_.string(), {});
    ASSERT_TRUE(c.ok()) << c.status();
    config_ = *c;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static v1::SendRequest Good() {
    v1::SendRequest r;
    r.set_recipient("503");
    r.set_workflow("HOSPITAL_DISCHARGE");
    r.set_purpose("direct-care");
    r.set_idempotency_key("k-1");
    r.set_content_type("application/json");
    r.set_payload("{}");
    return r;
  }
  absl::Status Check(const v1::SendRequest& r) { return Admit(*config_, OrgCode("RR8"), r, t0_).status(); }

  std::filesystem::path dir_;
  std::shared_ptr<const Config> config_;
  absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(IntakeTest, BuildsTheMessage) {
  auto m = Admit(*config_, OrgCode("RR8"), Good(), t0_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->sender.str(), "RR8");
  EXPECT_EQ(m->recipient.str(), "503");
  EXPECT_EQ(m->accepted_at, t0_);
  EXPECT_EQ(m->expires_at, t0_ + absl::Hours(120));
  EXPECT_EQ(m->digest, Sha256("{}"));
  EXPECT_EQ(m->kind, v1::MESSAGE_KIND_DATA);
}

TEST_F(IntakeTest, EveryBadFieldHasItsReason) {
  struct Case {
    void (*mutate)(v1::SendRequest&);
    absl::StatusCode code;
    const char* reason;
  } cases[] = {
      {[](auto& r) { r.set_recipient(""); }, absl::StatusCode::kInvalidArgument, "RECIPIENT_INVALID"},
      {[](auto& r) { r.set_recipient("999"); }, absl::StatusCode::kFailedPrecondition, "UNKNOWN_RECIPIENT"},
      {[](auto& r) { r.set_workflow(""); }, absl::StatusCode::kInvalidArgument, "WORKFLOW_INVALID"},
      {[](auto& r) { r.set_workflow("Discharge"); }, absl::StatusCode::kInvalidArgument, "WORKFLOW_INVALID"},
      {[](auto& r) { r.set_workflow("DISCHARGE_"); }, absl::StatusCode::kInvalidArgument, "WORKFLOW_INVALID"},
      {[](auto& r) { r.set_purpose("direct_care"); }, absl::StatusCode::kInvalidArgument, "PURPOSE_INVALID"},
      {[](auto& r) { r.set_purpose("direct--care"); }, absl::StatusCode::kInvalidArgument, "PURPOSE_INVALID"},
      {[](auto& r) { r.set_idempotency_key("tab\there"); }, absl::StatusCode::kInvalidArgument,
       "IDEMPOTENCY_KEY_INVALID"},
      {[](auto& r) { r.set_content_type("text/\x01"); }, absl::StatusCode::kInvalidArgument, "CONTENT_TYPE_INVALID"},
      {[](auto& r) { r.set_local_reference(std::string(129, 'r')); }, absl::StatusCode::kInvalidArgument,
       "LOCAL_REFERENCE_INVALID"},
      {[](auto& r) { r.set_justification(std::string(4097, 'j')); }, absl::StatusCode::kInvalidArgument,
       "JUSTIFICATION_INVALID"},
      {[](auto& r) { r.set_payload(""); }, absl::StatusCode::kInvalidArgument, "PAYLOAD_EMPTY"},
      {[](auto& r) { r.set_payload(std::string(101, 'x')); }, absl::StatusCode::kResourceExhausted,
       "MESSAGE_TOO_LARGE"},
  };
  for (const auto& c : cases) {
    v1::SendRequest r = Good();
    c.mutate(r);
    absl::Status s = Check(r);
    EXPECT_EQ(s.code(), c.code) << c.reason;
    EXPECT_EQ(ReasonOf(s), c.reason);
  }
  v1::SendRequest exact = Good();
  exact.set_payload(std::string(100, 'x'));
  EXPECT_TRUE(Check(exact).ok());
}

TEST_F(IntakeTest, CanonicalPayloadIsParsedAndItsNhsNumberChecked) {
  v1::SendRequest r = Good();
  r.set_content_type(kCareRecordContentType);
  v1::CareRecord rec;
  rec.mutable_person()->set_nhs_number("9000000009");
  r.set_payload(rec.SerializeAsString());
  EXPECT_TRUE(Check(r).ok());
  rec.mutable_person()->set_nhs_number("9000000015");
  r.set_payload(rec.SerializeAsString());
  absl::Status s = Check(r);
  EXPECT_EQ(ReasonOf(s), "NHS_NUMBER_INVALID");
  EXPECT_EQ(std::string(s.message()).find("9000000015"), std::string::npos) << "patient data in an error";
  r.set_payload("\x0a\xff");
  EXPECT_EQ(ReasonOf(Check(r)), "PAYLOAD_MALFORMED");
}

TEST(Shapes, WorkflowsAndPurposes) {
  EXPECT_TRUE(IsWorkflowShape("HOSPITAL_DISCHARGE"));
  EXPECT_TRUE(IsWorkflowShape("CLD_RETURN"));
  EXPECT_TRUE(IsWorkflowShape("A1"));
  EXPECT_FALSE(IsWorkflowShape("_A"));
  EXPECT_FALSE(IsWorkflowShape(std::string(65, 'A')));
  EXPECT_TRUE(IsPurposeShape("direct-care"));
  EXPECT_TRUE(IsPurposeShape("safeguarding"));
  EXPECT_FALSE(IsPurposeShape("-care"));
  EXPECT_FALSE(IsPurposeShape("care-"));
  EXPECT_FALSE(IsPurposeShape("Care"));
}

}  // namespace
}  // namespace carebroker
