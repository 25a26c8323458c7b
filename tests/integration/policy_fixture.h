// The policy tests' broker: the shipped agreements (deploy/agreements)
// copied to a test folder, the CLD recipient's pseudonym key, the dev PKI's
// audit keys (a tree head every 4 entries), and clients as the trust (RR8),
// the council (503) and the GP practice's consent writer (Y06601).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "broker/client/client.h"
#include "carebroker/v1/consent.grpc.pb.h"
#include "tests/integration/harness.h"

namespace carebroker::testing {

namespace fs = std::filesystem;
constexpr const char* kNhs = kSyntheticNhs;
const std::string kX26Key(32, 'n');

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("policy");
    const fs::path& dir = dir_;
    agreements_ = dir / "agreements";
    fs::create_directories(agreements_);
    for (const auto& f : fs::directory_iterator(fs::path(std::getenv("CB_SOURCE_DIR")) / "deploy/agreements")) {
      fs::copy_file(f.path(), agreements_ / f.path().filename());
    }
    std::ofstream(dir / "x26.key") << kX26Key;
    fs::permissions(dir / "x26.key", fs::perms::owner_read | fs::perms::owner_write);
    broker_ = StartBroker(ConfigYaml((dir / "data").string(),
                                     absl::StrCat("policy:\n  agreements_dir: ", agreements_.string(),
                                                  "\n  pseudonym_keys: [{organisation: X26, file: ",
                                                  (dir / "x26.key").string(), "}]\n",
                                                  "audit: {signing_key: ", PkiDir(), "/audit-signing.key, subject_key: ",
                                                  PkiDir(), "/audit-subject.key, tree_head_every: 4}\n")),
                          &BrokerClock());
    ASSERT_NE(broker_, nullptr);
    trust_ = StubAs(*broker_, "RR8");
    council_ = StubAs(*broker_, "503");
    gp_consent_ = v1::Consent::NewStub(ChannelAs(*broker_, "Y06601"));
  }

  // The broker's clock: the system's, unless a test's fixture says otherwise.
  virtual const Clock& BrokerClock() { return SystemClock::Get(); }

  grpc::Status Send(v1::Exchange::Stub& stub, const v1::SendRequest& req, v1::SendReceipt* out = nullptr) {
    v1::SendReceipt r;
    grpc::Status s = Call(&v1::Exchange::Stub::Send, stub, req, &r);
    if (out != nullptr) *out = r;
    return s;
  }

  v1::Directive Record(v1::DirectiveKind kind, const std::string& purpose) {
    v1::RecordRequest req;
    req.set_nhs_number(kNhs);
    req.set_kind(kind);
    req.set_purpose(purpose);
    req.set_source("GP consultation");
    req.set_recorded_by("Dr Synthetic");
    v1::Directive d;
    grpc::Status s = Call(&v1::Consent::Stub::Record, *gp_consent_, req, &d);
    EXPECT_TRUE(s.ok()) << DescribeStatus(s);
    return d;
  }

  grpc::Status Withdraw(const v1::Directive& d, v1::Directive* out) {
    v1::WithdrawRequest w;
    w.set_nhs_number(kNhs);
    w.set_directive_id(d.id());
    w.set_source("letter");
    w.set_recorded_by("Dr Synthetic");
    return Call(&v1::Consent::Stub::Withdraw, *gp_consent_, w, out);
  }

  // The person objects to sharing for safeguarding (recorded by the GP);
  // the council sends the trust a safeguarding concern anyway, with a
  // justification: an override. The concern's message id.
  std::string SafeguardingOverride(const std::string& justification = "Section 42 enquiry: risk of serious harm") {
    Record(v1::DIRECTIVE_KIND_DISSENT, "safeguarding");
    v1::SendRequest concern = CareSend("RR8", "SAFEGUARDING_CONCERN", "safeguarding");
    concern.set_justification(justification);
    v1::SendReceipt r;
    grpc::Status s = Send(*council_, concern, &r);
    EXPECT_TRUE(s.ok()) << DescribeStatus(s);
    return r.message_id();
  }

  void OptOut(bool on) { EXPECT_EQ(SetNationalOptOut(*broker_, kNhs, on).national_opt_out(), on); }

  fs::path dir_, agreements_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<v1::Exchange::Stub> trust_, council_;
  std::unique_ptr<v1::Consent::Stub> gp_consent_;
};

}  // namespace carebroker::testing
