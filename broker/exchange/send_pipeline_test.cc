// The send pipeline against real parts: a SQLite store in a temporary
// folder, the audit log with the dev PKI's keys, the agreements in
// tests/agreements, and a real intake executor. Only time is fake.
#include "broker/exchange/send_pipeline.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "audit/log.h"
#include "broker/store/sqlite_store.h"
#include "broker/store/store_sync.h"
#include "core/time.h"
#include "core/vocabulary.h"
#include "tests/testutil/testutil.h"

namespace carebroker {
namespace {

using testing::HasReason;

class SendPipelineTest : public ::testing::Test {
 protected:
  // `threads` and `queue` size the intake executor.
  void Start(int threads = 2, size_t queue = 1000) {
    const std::string dir = testing::TempDir("send-pipeline");
    auto c = ParseConfig(
        testing::ConfigYaml(dir, "limits: {max_message_bytes: 4096, memory_budget_bytes: 8192}\n"), "t.yaml", dir, {});
    ASSERT_TRUE(c.ok()) << c.status();
    config_ = *c;
    auto store = OpenSqliteStore(config_->sqlite_path());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    budget_ = std::make_unique<MemoryBudget>(config_->proto().limits().memory_budget_bytes());
    gate_ = std::make_unique<PolicyGate>(config_);
    ASSERT_TRUE(gate_->Reload().ok());
    auto audit = audit::AuditLog::Open({.signing_key_pem = config_->audit_signing_pem(),
                                        .subject_key = config_->audit_subject_key(),
                                        .tree_head_every = 1000,
                                        .tree_head_interval = absl::Hours(1)},
                                       *store_, clock_);
    ASSERT_TRUE(audit.ok()) << audit.status();
    audit_ = *std::move(audit);
    executor_ = std::make_unique<Executor>(threads, queue);
    pipeline_ = std::make_unique<SendPipeline>(*config_, *store_, mailboxes_, *budget_, clock_, *gate_, *audit_,
                                               *executor_, metrics_);
  }
  void TearDown() override {
    executor_.reset();  // every accepted send has been taken in
    if (store_) store_->Close();
  }

  static v1::SendRequest Request(const std::string& ref = "ref-1") {
    v1::SendRequest r;
    r.set_recipient("503");
    r.set_workflow("HOSPITAL_DISCHARGE");
    r.set_purpose("direct-care");
    r.set_content_type("application/json");
    r.set_local_reference(ref);
    r.set_payload("{\"synthetic\":true}");
    return r;
  }

  // Sends and returns a future of the answer.
  std::future<absl::StatusOr<v1::SendReceipt>> SendAsync(v1::SendRequest r,
                                                         const std::shared_ptr<Executor::Serial>& serial = nullptr) {
    auto p = std::make_shared<std::promise<absl::StatusOr<v1::SendReceipt>>>();
    auto f = p->get_future();
    pipeline_->Send(
        OrgCode("RR8"), std::move(r), [p](absl::StatusOr<v1::SendReceipt> a) { p->set_value(std::move(a)); }, serial);
    return f;
  }
  absl::StatusOr<v1::SendReceipt> SendNow(v1::SendRequest r) { return SendAsync(std::move(r)).get(); }

  FakeClock clock_{absl::FromUnixSeconds(1'800'000'000)};
  std::shared_ptr<const Config> config_;
  std::unique_ptr<Store> store_;
  Mailboxes mailboxes_;
  std::unique_ptr<MemoryBudget> budget_;
  std::unique_ptr<PolicyGate> gate_;
  std::unique_ptr<audit::AuditLog> audit_;
  std::unique_ptr<Executor> executor_;
  metrics::Registry registry_;
  ExchangeMetrics metrics_{registry_};
  std::unique_ptr<SendPipeline> pipeline_;
};

TEST_F(SendPipelineTest, StoresTheMessageAndAnswersWithItsReceipt) {
  Start();
  auto r = SendNow(Request());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message_id().size(), 32u);
  EXPECT_FALSE(r->duplicate());
  EXPECT_FALSE(r->agreement_id().empty());
  auto t = TrackSync(*store_, OrgCode("RR8"), MessageId(r->message_id()));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->recipient.str(), "503");
  EXPECT_EQ(t->local_reference, "ref-1");
  EXPECT_EQ(budget_->used(), 0u);  // released once durable
  EXPECT_EQ(metrics_.accepted.With({"HOSPITAL_DISCHARGE"}).value(), 1u);
  EXPECT_EQ(metrics_.send_to_commit.Cumulative().back(), 1u);
  // A repeat of the same idempotent send is answered, not counted again.
  v1::SendRequest keyed = Request("ref-2");
  keyed.set_idempotency_key("key-1");
  ASSERT_TRUE(SendNow(keyed).ok());
  auto again = SendNow(keyed);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->duplicate());
  EXPECT_EQ(metrics_.accepted.With({"HOSPITAL_DISCHARGE"}).value(), 2u);
}

TEST_F(SendPipelineTest, TakesTheMemoryBudgetBeforeAnyParsing) {
  Start();
  v1::SendRequest bad = Request();
  bad.set_content_type(kCareRecordContentType);
  bad.set_payload(std::string(100, '\xff'));  // not a CareRecord
  budget_->ForceAcquire(8192);                // the budget is spent
  EXPECT_THAT(SendNow(bad), HasReason("MEMORY_BUDGET_EXHAUSTED"));
  EXPECT_EQ(budget_->used(), 8192u);
  budget_->Release(8192);
  // With room, the same request reaches intake, which refuses the payload.
  EXPECT_THAT(SendNow(bad), HasReason("PAYLOAD_MALFORMED"));
  EXPECT_EQ(budget_->used(), 0u);
}

TEST_F(SendPipelineTest, AnOversizedPayloadIsRefusedAsTooLargeNotForBudget) {
  Start();
  v1::SendRequest big = Request();
  big.set_payload(std::string(5000, 'x'));  // over max_message_bytes (4096)
  budget_->ForceAcquire(8192);
  EXPECT_THAT(SendNow(big), HasReason("MESSAGE_TOO_LARGE"));
  budget_->Release(8192);
}

TEST_F(SendPipelineTest, AFullExecutorAnswersExecutorFullAndQueuesNothing) {
  Start(/*threads=*/1, /*queue=*/1);
  absl::Notification started, release;
  ASSERT_TRUE(executor_->TrySubmit([&] {
    started.Notify();
    release.WaitForNotification();
  }));
  started.WaitForNotification();
  auto first = SendAsync(Request("ref-queued"));  // waits for the one thread
  auto refused = SendNow(Request("ref-refused"));
  EXPECT_THAT(refused, HasReason("EXECUTOR_FULL"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(budget_->used(), Request().payload().size());  // only the queued send holds budget
  release.Notify();
  auto r = first.get();
  ASSERT_TRUE(r.ok()) << r.status();
  auto claimed = ClaimSync(*store_, ClaimRequest{OrgCode("503"), 10, clock_.Now(), clock_.Now() + absl::Minutes(1), 7});
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 1u);  // the refused send was not stored
  EXPECT_EQ((*claimed)[0].local_reference, "ref-queued");
}

TEST_F(SendPipelineTest, SendsOnOneSerialReachTheStoreInTheirOrder) {
  Start(/*threads=*/4);
  auto serial = pipeline_->NewSerial();
  std::vector<std::future<absl::StatusOr<v1::SendReceipt>>> answers;
  constexpr int kSends = 100;
  for (int i = 0; i < kSends; ++i) answers.push_back(SendAsync(Request(absl::StrCat("ref-", i)), serial));
  for (auto& a : answers) ASSERT_TRUE(a.get().ok());
  auto claimed =
      ClaimSync(*store_, ClaimRequest{OrgCode("503"), 1000, clock_.Now(), clock_.Now() + absl::Minutes(1), 7});
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), static_cast<size_t>(kSends));
  for (int i = 0; i < kSends; ++i) EXPECT_EQ((*claimed)[i].local_reference, absl::StrCat("ref-", i));
}

TEST_F(SendPipelineTest, ADenialIsDurableInTheAuditLogBeforeItIsAnswered) {
  Start();
  v1::SendRequest r = Request();
  r.set_workflow("NOT_IN_ANY_AGREEMENT");
  const uint64_t before = audit_->size();
  auto denied = SendNow(r);
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied, HasReason("NO_AGREEMENT"));
  EXPECT_EQ(metrics_.refused.With({"NO_AGREEMENT"}).value(), 1u);
  EXPECT_EQ(metrics_.send_to_commit.Cumulative().back(), 0u) << "refusals are not latency samples";
  auto rows = ReadAuditSync(*store_, AuditRead{before, 10, "", false});
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  v1::AuditEntry e;
  ASSERT_TRUE(e.ParseFromString((*rows)[0].entry));
  EXPECT_EQ(e.event(), v1::AUDIT_EVENT_SEND_DENIED);
  EXPECT_EQ(budget_->used(), 0u);
}

}  // namespace
}  // namespace carebroker
