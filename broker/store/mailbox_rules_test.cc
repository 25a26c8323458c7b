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
  EXPECT_EQ(kHeld, 7);
  EXPECT_EQ(kCancelled, 8);
  EXPECT_EQ(*StatusOf(kWithheld), v1::MESSAGE_STATUS_WITHHELD);
  EXPECT_EQ(*StatusOf(kHeld), v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(*StatusOf(kAccepted), v1::MESSAGE_STATUS_ACCEPTED);
  EXPECT_EQ(*StatusOf(kUploading), v1::MESSAGE_STATUS_UPLOADING);
  EXPECT_THAT(StatusOf(0), HasReason("STORE_CORRUPT"));
  EXPECT_EQ(*StatusOf(kCancelled), v1::MESSAGE_STATUS_CANCELLED);
  EXPECT_THAT(StatusOf(9), HasReason("STORE_CORRUPT"));
  for (int state = 1; state <= 8; ++state) EXPECT_EQ(StateOf(*StatusOf(state)), state) << "a status filter's state";
  EXPECT_EQ(StateOf(v1::MESSAGE_STATUS_UNSPECIFIED), 0);
}

TEST(MailboxRulesTest, ARejectionHoldsOnlyWhatCanStillBeDelivered) {
  EXPECT_EQ(ClassifyReject(kAccepted, kT0 + absl::Hours(1), kT0), RejectOutcome::kHold);
  EXPECT_EQ(ClassifyReject(kDelivered, kT0 + absl::Hours(1), kT0), RejectOutcome::kHold);
  EXPECT_EQ(ClassifyReject(kDelivered, kT0, kT0), RejectOutcome::kUnchanged) << "past its expiry";
  for (State s : {kAcknowledged, kExpired, kWithheld, kHeld}) {
    EXPECT_EQ(ClassifyReject(s, kT0 + absl::Hours(1), kT0), RejectOutcome::kUnchanged) << s;
  }
  EXPECT_EQ(ClassifyReject(kUploading, kT0 + absl::Hours(1), kT0), RejectOutcome::kNotFound);
  EXPECT_EQ(ClassifyAck(kHeld), AckOutcome::kAcknowledge) << "its recipient took it after all";
  EXPECT_EQ(FetchStatus(kHeld, kT0 + absl::Hours(1), kT0), v1::MESSAGE_STATUS_HELD);
}

TEST(MailboxRulesTest, AWorkflowFilterIsAListTheStoresSearch) {
  google::protobuf::RepeatedPtrField<std::string> w;
  EXPECT_EQ(*WorkflowList(w), "");
  w.Add("REFERRAL");
  w.Add("HOSPITAL_DISCHARGE");
  EXPECT_EQ(*WorkflowList(w), ",REFERRAL,HOSPITAL_DISCHARGE,");
  w.Add("not,a workflow");
  EXPECT_THAT(WorkflowList(w), HasReason("WORKFLOW_INVALID"));
  google::protobuf::RepeatedPtrField<std::string> many;
  for (int i = 0; i <= kMaxWorkflowFilter; ++i) many.Add("W");
  EXPECT_THAT(WorkflowList(many), HasReason("WORKFLOW_INVALID"));
}

TEST(MailboxRulesTest, AnOperatorActsOnlyOnAHeldMessageWithItsBodyAndIsAudited) {
  const absl::Time expires = kT0 + absl::Hours(1);
  EXPECT_TRUE(CheckOperatorAction(kHeld, false, expires, kT0).ok());
  EXPECT_THAT(CheckOperatorAction(kHeld, true, expires, kT0), HasReason("MESSAGE_NOT_HELD")) << "body gone";
  EXPECT_THAT(CheckOperatorAction(kHeld, false, expires, expires), HasReason("MESSAGE_NOT_HELD")) << "past expiry";
  for (State s : {kAccepted, kDelivered, kAcknowledged, kExpired, kWithheld, kUploading, kCancelled}) {
    EXPECT_THAT(CheckOperatorAction(s, false, expires, kT0), HasReason("MESSAGE_NOT_HELD")) << s;
  }
  EXPECT_EQ(AfterAction(OperatorAction::kRelease), kAccepted);
  EXPECT_EQ(AfterAction(OperatorAction::kCancel), kCancelled);
  EXPECT_EQ(ClassifyAck(kCancelled), AckOutcome::kNotFound);
  const Row r{.id = MessageId("0123456789abcdef0123456789abcdef"), .sender = OrgCode("RR8"),
              .recipient = OrgCode("503")};
  const MessageEvent e = ActionEvent(r, OperatorAction{OperatorAction::kCancel, r.id, OrgCode("X26"), "INC1", kT0});
  EXPECT_EQ(e.event, v1::AUDIT_EVENT_OPERATOR_ACTION);
  EXPECT_EQ(e.reason, "CANCEL");
  EXPECT_EQ(e.actor, "X26");
  EXPECT_EQ(e.justification, "INC1");
  EXPECT_THAT(CheckQuery(MessageQuery{.max = 0}), HasReason("QUERY_INVALID"));
  EXPECT_TRUE(CheckQuery(MessageQuery{.max = 1000}).ok());
}

TEST(MailboxRulesTest, OnlyAHeldOrExpiredMessageWithItsBodyIsRedirectedOrResentOnce) {
  EXPECT_TRUE(CheckReplaceable(kHeld, false, "", "RR8").ok());
  EXPECT_TRUE(CheckReplaceable(kExpired, false, "", "RR8").ok());
  for (State s : {kAccepted, kDelivered, kAcknowledged, kWithheld, kUploading, kCancelled}) {
    EXPECT_THAT(CheckReplaceable(s, false, "", "RR8"), HasReason("MESSAGE_NOT_RESENDABLE")) << s;
  }
  EXPECT_THAT(CheckReplaceable(kExpired, true, "", "RR8"), HasReason("MESSAGE_NOT_RESENDABLE")) << "past retention";
  const absl::Status again = CheckReplaceable(kHeld, true, "fedcba9876543210fedcba9876543210", "RR8");
  EXPECT_THAT(again, HasReason("MESSAGE_NOT_RESENDABLE"));
  EXPECT_THAT(std::string(again.message()), ::testing::HasSubstr("fedcba9876543210fedcba9876543210"))
      << "names its replacement";
  EXPECT_THAT(CheckReplaceable(kExpired, false, "", ""), HasReason("MESSAGE_NOT_RESENDABLE")) << "a report";

  const Row r{.id = MessageId("0123456789abcdef0123456789abcdef"), .sender = OrgCode("RR8"),
              .recipient = OrgCode("503")};
  NewMessage m;
  m.id = MessageId("fedcba9876543210fedcba9876543210");
  m.recipient = OrgCode("511");
  const MessageEvent e =
      ActionEvent(r, OperatorAction{OperatorAction::kRedirect, r.id, OrgCode("X26"), "INC2", kT0}, &m);
  EXPECT_EQ(e.reason, "REDIRECT");
  EXPECT_EQ(e.id, r.id) << "the entry is about the original";
  EXPECT_EQ(e.detail, "as message fedcba9876543210fedcba9876543210 to 511");
  EXPECT_EQ(ActionEvent(r, OperatorAction{OperatorAction::kResend, r.id, OrgCode("X26"), "INC3", kT0}).reason,
            "RESEND");
}

TEST(MailboxRulesTest, ARejectionsCodeAndTextAreBounded) {
  EXPECT_TRUE(CheckRejection("AE", "").ok());
  EXPECT_TRUE(CheckRejection("HTTP_400", "the webhook answered HTTP 400").ok());
  EXPECT_TRUE(CheckRejection("ITK.1-2", "caf\xc3\xa9").ok());
  EXPECT_TRUE(CheckRejection(std::string(32, 'A'), std::string(256, 'x')).ok());
  EXPECT_THAT(CheckRejection("", "text"), HasReason("REJECTION_INVALID"));
  EXPECT_THAT(CheckRejection(std::string(33, 'A'), ""), HasReason("REJECTION_INVALID"));
  EXPECT_THAT(CheckRejection("A E", ""), HasReason("REJECTION_INVALID"));
  EXPECT_THAT(CheckRejection("AE", std::string(257, 'x')), HasReason("REJECTION_INVALID"));
  EXPECT_THAT(CheckRejection("AE", "two\nlines"), HasReason("REJECTION_INVALID"));
}

TEST(MailboxRulesTest, MaxAttemptsCountsOnlyDeliveriesOfTheirOwn) {
  EXPECT_FALSE(Spent(9, 10));
  EXPECT_TRUE(Spent(10, 10));
  EXPECT_FALSE(Spent(1000, 0)) << "0: no limit";
  EXPECT_FALSE(CountsAsDelivery(true, kT0 + absl::Seconds(1), kT0)) << "a download under a live claim";
  EXPECT_TRUE(CountsAsDelivery(true, kT0, kT0)) << "the claim has lapsed";
  EXPECT_TRUE(CountsAsDelivery(false, kT0 + absl::Seconds(1), kT0));
}

TEST(MailboxRulesTest, AHeldMessageIsRecordedAndReportedWithTheRecipientsCode) {
  Row r{.id = MessageId("0123456789abcdef0123456789abcdef"),
        .sender = OrgCode("RR8"),
        .recipient = OrgCode("503"),
        .workflow = "HOSPITAL_DISCHARGE",
        .purpose = "direct-care",
        .local_reference = "ref-1",
        .accepted_at = kT0};
  const Hold h = HoldFor(Rejection{OrgCode("503"), r.id, "AE", "segment missing", kT0});
  const MessageEvent e = HeldEvent(r, h, kT0 + absl::Seconds(1));
  EXPECT_EQ(e.event, v1::AUDIT_EVENT_HELD);
  EXPECT_EQ(e.reason, "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(e.code, "AE");
  auto report = HeldReport(r, h, kT0 + absl::Seconds(1), absl::Hours(120));
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->recipient, OrgCode("RR8"));
  EXPECT_EQ(report->expires_at, kT0 + absl::Seconds(1) + absl::Hours(120));
  v1::NonDeliveryReport ndr;
  ASSERT_TRUE(ndr.ParseFromString(report->payload));
  EXPECT_EQ(ndr.reason(), "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(ndr.rejection_code(), "AE");
  EXPECT_EQ(ndr.rejection_text(), "segment missing");
  EXPECT_EQ(MaxAttemptsHold().reason, "MAX_ATTEMPTS_REACHED");
  r.kind = v1::MESSAGE_KIND_NON_DELIVERY_REPORT;
  EXPECT_FALSE(HeldReport(r, h, kT0, absl::Hours(1)).has_value()) << "reports are never reported on";
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
