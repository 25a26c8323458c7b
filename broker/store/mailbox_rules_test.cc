#include "broker/store/mailbox_rules.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/ids.h"
#include "core/sha256.h"
#include "tests/testutil/testutil.h"

namespace carebroker::mailbox {
namespace {

using testing::HasReason;

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(MailboxRulesTest, StateCodesAreTheOnDiskFormat) {
  // Stored in every store and in the partial indexes: they never change.
  EXPECT_EQ(kAccepted, 1);
  EXPECT_EQ(kDelivered, 2);
  EXPECT_EQ(kAcknowledged, 3);
  EXPECT_EQ(kExpired, 4);
  EXPECT_EQ(kWithheld, 5);
  EXPECT_EQ(kUploading, 6);
  EXPECT_EQ(*StatusOf(kWithheld), v1::MESSAGE_STATUS_WITHHELD);
  EXPECT_EQ(*StatusOf(kAccepted), v1::MESSAGE_STATUS_ACCEPTED);
  EXPECT_EQ(*StatusOf(kUploading), v1::MESSAGE_STATUS_UPLOADING);
  EXPECT_THAT(StatusOf(0), HasReason("STORE_CORRUPT"));
  EXPECT_THAT(StatusOf(7), HasReason("STORE_CORRUPT"));
}

TEST(MailboxRulesTest, AChunkedMessageUploadsInOrderAndItsEntryWaitsForTheWhole) {
  NewMessage m = testing::TestMessage(OrgCode("RR8"), OrgCode("503"));
  m.chunks = 3;
  EXPECT_EQ(InitialState(m), kUploading);
  EXPECT_EQ(ClassifyAck(kUploading), AckOutcome::kNotFound);
  EXPECT_EQ(FetchStatus(kUploading, kT0 + absl::Hours(1), kT0), v1::MESSAGE_STATUS_UPLOADING);
  EXPECT_TRUE(CheckChunk(kUploading, 3, 1, 2, 3).ok());
  EXPECT_TRUE(CheckChunk(kUploading, 3, 2, 2, 3).ok()) << "a retried chunk";
  EXPECT_THAT(CheckChunk(kUploading, 3, 1, 3, 3), HasReason("CHUNK_RANGE_INVALID")) << "chunk 2 is missing";
  EXPECT_THAT(CheckChunk(kUploading, 3, 1, 2, 4), HasReason("CHUNK_RANGE_INVALID")) << "another total";
  EXPECT_THAT(CheckChunk(kUploading, 3, 1, 1, 3), HasReason("CHUNK_RANGE_INVALID")) << "chunk 1 is the send";
  EXPECT_THAT(CheckChunk(kUploading, 3, 3, 4, 3), HasReason("CHUNK_RANGE_INVALID"));
  EXPECT_THAT(CheckChunk(kAccepted, 3, 3, 3, 3), HasReason("CHUNKS_COMPLETE"));

  v1::AuditEntry e;
  e.set_event(v1::AUDIT_EVENT_SEND_ACCEPTED);
  e.set_message_id("m1");
  AuditRecord held{e.SerializeAsString(), "subject-hash", kT0};
  auto done = CompletedAudit(PackPendingAudit(held), Sha256("whole"), kT0 + absl::Minutes(5));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->subject, "subject-hash");
  EXPECT_EQ(done->at, kT0 + absl::Minutes(5));
  v1::AuditEntry back;
  ASSERT_TRUE(back.ParseFromString(done->entry));
  EXPECT_EQ(back.message_id(), "m1");
  EXPECT_EQ(back.payload_digest(), Sha256("whole"));
  EXPECT_THAT(CompletedAudit("no separator", Sha256("x"), kT0), HasReason("STORE_CORRUPT"));
}

TEST(MailboxRulesTest, AMessageStoredClaimedStartsDelivered) {
  NewMessage m = testing::TestMessage(OrgCode("RR8"), OrgCode("503"));
  EXPECT_EQ(InitialState(m), kAccepted);
  EXPECT_FALSE(StoredClaimedEvent(m).has_value());
  m.claim_token = 42;
  EXPECT_EQ(InitialState(m), kDelivered);
  auto e = StoredClaimedEvent(m);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->event, v1::AUDIT_EVENT_DELIVERED);
  EXPECT_EQ(e->delivery_count, 1u);
  m.kind = v1::MESSAGE_KIND_NON_DELIVERY_REPORT;
  EXPECT_FALSE(StoredClaimedEvent(m).has_value());  // reports are never reported on
}

TEST(MailboxRulesTest, ARepeatedKeyAnswersTheFirstReceiptOnlyForTheSamePayload) {
  NewMessage retry = testing::TestMessage(OrgCode("RR8"), OrgCode("503"), "k", "same");
  const MessageId first = NewMessageId(kT0);
  auto same = RepeatedKey(first, kT0, Sha256("same"), retry);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->id, first);
  EXPECT_EQ(same->accepted_at, kT0);
  EXPECT_TRUE(same->duplicate);
  auto other = RepeatedKey(first, kT0, Sha256("different"), retry);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(other, HasReason("IDEMPOTENCY_KEY_REUSED"));
}

TEST(MailboxRulesTest, AnAckIsClassifiedByTheMessagesState) {
  EXPECT_EQ(ClassifyAck(kAccepted), AckOutcome::kAcknowledge);
  EXPECT_EQ(ClassifyAck(kDelivered), AckOutcome::kAcknowledge);
  EXPECT_EQ(ClassifyAck(kAcknowledged), AckOutcome::kAlreadyAcked);
  EXPECT_EQ(ClassifyAck(kExpired), AckOutcome::kExpired);
  EXPECT_EQ(ClassifyAck(kWithheld), AckOutcome::kNotFound);
  AckResult r;
  const MessageId a("a"), b("b"), c("c"), d("d");
  Report(AckOutcome::kAcknowledge, a, r);
  Report(AckOutcome::kAlreadyAcked, b, r);
  Report(AckOutcome::kExpired, c, r);
  Report(AckOutcome::kNotFound, d, r);
  EXPECT_THAT(r.acknowledged, ::testing::ElementsAre(a, b));
  EXPECT_THAT(r.expired, ::testing::ElementsAre(c));
  EXPECT_THAT(r.not_found, ::testing::ElementsAre(d));
}

TEST(MailboxRulesTest, AnExpiredDataMessageIsRecordedAndReportedToItsSender) {
  Row e{.id = NewMessageId(kT0),
        .sender = OrgCode("RR8"),
        .recipient = OrgCode("503"),
        .workflow = "HOSPITAL_DISCHARGE",
        .purpose = "direct-care",
        .subject = "9434765919",
        .kind = v1::MESSAGE_KIND_DATA,
        .local_reference = "ref-9",
        .accepted_at = kT0};
  const SweepRequest req{kT0 + absl::Hours(121), kT0, absl::Hours(120), 100};
  ExpiryPlan plan = PlanExpiry(e, req);
  ASSERT_TRUE(plan.event.has_value());
  EXPECT_EQ(plan.event->event, v1::AUDIT_EVENT_EXPIRED);
  EXPECT_EQ(plan.event->nhs_number, "9434765919");
  ASSERT_TRUE(plan.report.has_value());
  EXPECT_EQ(plan.report->recipient.str(), "RR8");  // back to the sender
  EXPECT_EQ(plan.report->kind, v1::MESSAGE_KIND_NON_DELIVERY_REPORT);

  e.sender = OrgCode("");  // no one to report to: recorded, not reported
  plan = PlanExpiry(e, req);
  EXPECT_TRUE(plan.event.has_value());
  EXPECT_FALSE(plan.report.has_value());

  e.sender = OrgCode("RR8");
  e.kind = v1::MESSAGE_KIND_NON_DELIVERY_REPORT;  // a report that expired: neither
  plan = PlanExpiry(e, req);
  EXPECT_FALSE(plan.event.has_value());
  EXPECT_FALSE(plan.report.has_value());
}

TEST(MailboxRulesTest, SweepsAreBounded) {
  bool more = false;
  EXPECT_EQ(SweepBatch(3, 10, more), 3);
  EXPECT_FALSE(more);
  EXPECT_EQ(SweepBatch(10, 10, more), 10);
  EXPECT_FALSE(more);
  EXPECT_EQ(SweepBatch(11, 10, more), 10);
  EXPECT_TRUE(more);
}

}  // namespace
}  // namespace carebroker::mailbox
