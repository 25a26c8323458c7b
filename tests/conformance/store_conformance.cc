#include "tests/conformance/store_conformance.h"

#include <atomic>
#include <thread>

#include <gmock/gmock.h>

#include "core/vocabulary.h"
#include "absl/synchronization/mutex.h"
#include "core/ids.h"
#include "core/status.h"
#include "audit/merkle.h"
#include "broker/store/mailbox_rules.h"
#include "broker/store/store_sync.h"
#include "tests/testutil/testutil.h"

namespace carebroker {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using testing::HasReason;

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);
const OrgCode kTrust("RR8"), kCouncil("503"), kGp("Y06601");

NewMessage Msg(const OrgCode& from, const OrgCode& to, std::string key = "", std::string payload = "",
               absl::Time at = kT0) {
  return testing::TestMessage(from, to, std::move(key), std::move(payload), at);
}

std::unique_ptr<Store> Open(const std::string& instance) {
  auto s = StoreConformance::GetParam().open(instance);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

std::string Instance() {
  std::string n = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  for (char& c : n) {
    if (c == '/') c = '_';
  }
  return n;
}

ClaimRequest Claim(const OrgCode& who, int max, absl::Time now = kT0, ClaimToken token = 7) {
  return ClaimRequest{who, max, now, now + absl::Seconds(30), token};
}

MessageId AppendOne(Store& s, NewMessage m) {
  auto r = AppendSync(s, {std::move(m)});
  EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)[0].ok()) << (*r)[0].status();
  return (*r)[0]->id;
}

TEST_P(StoreConformance, AppendClaimAckTrack) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil, "k1", "payload-1");
  const MessageId id = m.id;
  auto r = AppendSync(*store, {m});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_THAT(*r, SizeIs(1));
  EXPECT_EQ((*r)[0]->id, id);
  EXPECT_FALSE((*r)[0]->duplicate);
  EXPECT_EQ((*r)[0]->accepted_at, kT0);

  auto t = TrackSync(*store, kTrust, id);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_ACCEPTED);
  EXPECT_EQ(t->recipient, kCouncil);
  EXPECT_EQ(t->expires_at, kT0 + absl::Hours(120));

  auto c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(1)));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].id, id);
  EXPECT_EQ((*c)[0].payload, "payload-1");
  EXPECT_EQ((*c)[0].sender, kTrust);
  EXPECT_EQ((*c)[0].workflow, "HOSPITAL_DISCHARGE");
  EXPECT_EQ((*c)[0].local_reference, m.local_reference);
  EXPECT_EQ((*c)[0].delivery_count, 1u);

  t = TrackSync(*store, kCouncil, id);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(t->first_delivered_at, kT0 + absl::Seconds(1));

  auto a = AckSync(*store, kCouncil, {id}, kT0 + absl::Seconds(2));
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->acknowledged, ElementsAre(id));
  t = TrackSync(*store, kTrust, id);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_ACKNOWLEDGED);
  EXPECT_EQ(t->acknowledged_at, kT0 + absl::Seconds(2));

  // Acknowledged messages are never claimed again, even after visibility.
  c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Hours(1)));
  EXPECT_THAT(*c, IsEmpty());
}

TEST_P(StoreConformance, ClaimsOldestFirstAndOnlyOwnMailbox) {
  auto store = Open(Instance());
  std::vector<MessageId> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(AppendOne(*store, Msg(kTrust, kCouncil, "", "", kT0 + absl::Milliseconds(i))));
  AppendOne(*store, Msg(kTrust, kGp));
  auto c = ClaimSync(*store, Claim(kCouncil, 3, kT0 + absl::Seconds(1)));
  ASSERT_THAT(*c, SizeIs(3));
  EXPECT_EQ((*c)[0].id, ids[0]);
  EXPECT_EQ((*c)[1].id, ids[1]);
  EXPECT_EQ((*c)[2].id, ids[2]);
  c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(1)));
  ASSERT_THAT(*c, SizeIs(2));
  EXPECT_EQ((*c)[0].id, ids[3]);
  // The sender's mailbox has nothing.
  EXPECT_THAT(*ClaimSync(*store, Claim(kTrust, 10, kT0 + absl::Seconds(1))), IsEmpty());
}

// Metrics read each mailbox's backlog: waiting and delivered-unacknowledged
// messages count, acknowledged ones do not; the age is the oldest's.
TEST_P(StoreConformance, MailboxStatsCountTheBacklogPerRecipient) {
  auto store = Open(Instance());
  EXPECT_THAT(*AwaitStore<std::vector<MailboxStat>>([&](auto cb) { store->MailboxStats(std::move(cb)); }), IsEmpty());
  std::vector<MessageId> council;
  for (int i = 0; i < 3; ++i) council.push_back(AppendOne(*store, Msg(kTrust, kCouncil, "", "", kT0 + absl::Seconds(i))));
  AppendOne(*store, Msg(kTrust, kGp, "", "", kT0 + absl::Seconds(5)));
  ASSERT_THAT(*ClaimSync(*store, Claim(kCouncil, 2, kT0 + absl::Seconds(10))), SizeIs(2));
  ASSERT_TRUE(AckSync(*store, kCouncil, {council[0]}, kT0 + absl::Seconds(11)).ok());
  auto stats = AwaitStore<std::vector<MailboxStat>>([&](auto cb) { store->MailboxStats(std::move(cb)); });
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_THAT(*stats, SizeIs(2));
  EXPECT_EQ((*stats)[0].recipient, kCouncil);
  EXPECT_EQ((*stats)[0].depth, 2u) << "one delivered and unacknowledged, one waiting";
  EXPECT_EQ((*stats)[0].oldest_accepted_at, kT0 + absl::Seconds(1));
  EXPECT_EQ((*stats)[1].recipient, kGp);
  EXPECT_EQ((*stats)[1].depth, 1u);
  EXPECT_EQ((*stats)[1].oldest_accepted_at, kT0 + absl::Seconds(5));
}

TEST_P(StoreConformance, IdempotentRetryStoresNothingNew) {
  auto store = Open(Instance());
  NewMessage first = Msg(kTrust, kCouncil, "adt-123", "same");
  const MessageId first_id = AppendOne(*store, first);
  NewMessage retry = Msg(kTrust, kCouncil, "adt-123", "same", kT0 + absl::Minutes(5));
  auto r = AppendSync(*store, {retry});
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)[0].ok());
  EXPECT_TRUE((*r)[0]->duplicate);
  EXPECT_EQ((*r)[0]->id, first_id);
  EXPECT_EQ((*r)[0]->accepted_at, kT0);
  EXPECT_EQ(TrackSync(*store, kTrust, retry.id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(*ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Hours(1))), SizeIs(1));

  // The same key from another sender is a different message.
  auto other = AppendSync(*store, {Msg(kGp, kCouncil, "adt-123", "same")});
  EXPECT_FALSE((*other)[0]->duplicate);
}

TEST_P(StoreConformance, IdempotencyKeyReusedForDifferentPayloadIsRefused) {
  auto store = Open(Instance());
  AppendOne(*store, Msg(kTrust, kCouncil, "adt-9", "one"));
  auto r = AppendSync(*store, {Msg(kTrust, kCouncil, "adt-9", "two"), Msg(kTrust, kCouncil, "adt-10", "three")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReasonOf((*r)[0].status()), "IDEMPOTENCY_KEY_REUSED");
  EXPECT_TRUE((*r)[1].ok());  // one bad item does not fail its neighbours
}

TEST_P(StoreConformance, DuplicateKeysWithinOneBatch) {
  auto store = Open(Instance());
  auto r = AppendSync(*store, {Msg(kTrust, kCouncil, "k", "p"), Msg(kTrust, kCouncil, "k", "p")});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)[0]->duplicate);
  EXPECT_TRUE((*r)[1]->duplicate);
  EXPECT_EQ((*r)[0]->id, (*r)[1]->id);
}

TEST_P(StoreConformance, UnackedDeliveryReturnsAfterVisibilityTimeout) {
  auto store = Open(Instance());
  const MessageId id = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_THAT(*ClaimSync(*store, Claim(kCouncil, 10, kT0)), SizeIs(1));
  // Hidden while the claim lasts...
  EXPECT_THAT(*ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(29))), IsEmpty());
  // ...and redelivered after it.
  auto c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(31)));
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].id, id);
  EXPECT_EQ((*c)[0].delivery_count, 2u);
}

TEST_P(StoreConformance, ReleaseMakesClaimedMessagesVisibleAtOnce) {
  auto store = Open(Instance());
  const MessageId id = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_THAT(*ClaimSync(*store, Claim(kCouncil, 10, kT0, /*token=*/42)), SizeIs(1));
  // Another token cannot release it.
  EXPECT_EQ(*ReleaseSync(*store, kCouncil, 43, {id}, kT0 + absl::Seconds(1)), 0);
  EXPECT_EQ(*ReleaseSync(*store, kCouncil, 42, {id}, kT0 + absl::Seconds(1)), 1);
  auto c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(1)));
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].id, id);
}

TEST_P(StoreConformance, TrackByKeyFindsTheSendersMessageOnly) {
  auto store = Open(Instance());
  const MessageId id = AppendOne(*store, Msg(kTrust, kCouncil, "ref-42"));
  AppendOne(*store, Msg(kCouncil, kTrust, "ref-42"));  // the same key from another sender
  auto t = TrackByKeySync(*store, kTrust, "ref-42");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->id, id);
  EXPECT_EQ(t->recipient, kCouncil);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_ACCEPTED);
  t = TrackByKeySync(*store, kGp, "ref-42");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound) << "a key is the sender's own";
  t = TrackByKeySync(*store, kTrust, "ref-43");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
}

TEST_P(StoreConformance, AnIdempotencyKeyPastItsWindowStartsANewMessage) {
  auto store = Open(Instance());
  const MessageId first = AppendOne(*store, Msg(kTrust, kCouncil, "ref-7", "first"));
  NewMessage retry = Msg(kTrust, kCouncil, "ref-7", "first", kT0 + absl::Hours(1));
  retry.key_since = kT0;  // within the window: the first message's receipt
  auto r = AppendSync(*store, {retry});
  ASSERT_TRUE((*r)[0].ok()) << (*r)[0].status();
  EXPECT_TRUE((*r)[0]->duplicate);
  EXPECT_EQ((*r)[0]->id, first);

  NewMessage later = Msg(kTrust, kCouncil, "ref-7", "another", kT0 + absl::Hours(800));
  later.key_since = kT0 + absl::Hours(80);  // the window has passed the first message
  r = AppendSync(*store, {later});
  ASSERT_TRUE((*r)[0].ok()) << (*r)[0].status();
  EXPECT_FALSE((*r)[0]->duplicate) << "a new message, even with another payload";
  EXPECT_EQ((*r)[0]->id, later.id);
  EXPECT_EQ(TrackByKeySync(*store, kTrust, "ref-7")->id, later.id);
  EXPECT_EQ(TrackSync(*store, kTrust, first)->status, v1::MESSAGE_STATUS_ACCEPTED) << "the first is still there";
  EXPECT_EQ(TrackByKeySync(*store, kTrust, "ref-7", kT0 + absl::Hours(900)).status().code(),
            absl::StatusCode::kNotFound) << "past the window, Track by key finds nothing";
  auto c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Hours(800)));  // the first has expired by now
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].id, later.id);
  EXPECT_EQ((*c)[0].payload, "another");
}

TEST_P(StoreConformance, HideKeepsAClaimedMessageHiddenLongerAndNothingElse) {
  auto store = Open(Instance());
  const MessageId id = AppendOne(*store, Msg(kTrust, kCouncil));
  const MessageId unclaimed = AppendOne(*store, Msg(kTrust, kCouncil, "k2"));
  ASSERT_THAT(*ClaimSync(*store, Claim(kCouncil, 1, kT0)), SizeIs(1));  // hidden to kT0 + 30 s
  EXPECT_TRUE(*HideSync(*store, kCouncil, id, kT0 + absl::Seconds(50)));
  EXPECT_TRUE(*HideSync(*store, kCouncil, id, kT0 + absl::Seconds(40))) << "never shortens the claim";
  EXPECT_FALSE(*HideSync(*store, kTrust, id, kT0 + absl::Seconds(90))) << "another organisation's message";
  EXPECT_FALSE(*HideSync(*store, kCouncil, unclaimed, kT0 + absl::Seconds(90))) << "a message no one claimed";
  auto c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(45)));
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].id, unclaimed) << "the hidden one stays hidden past its first timeout";
  c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(51)));
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].id, id);
  EXPECT_EQ((*c)[0].delivery_count, 2u);
  ASSERT_TRUE(AckSync(*store, kCouncil, {id}, kT0 + absl::Seconds(52)).ok());
  EXPECT_FALSE(*HideSync(*store, kCouncil, id, kT0 + absl::Seconds(99))) << "an acknowledged message";
}

TEST_P(StoreConformance, AppendAlreadyClaimedDeliversToThatClaimOnly) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil);
  m.claim_token = 99;
  m.visible_until = kT0 + absl::Seconds(30);
  const MessageId id = AppendOne(*store, m);
  auto t = TrackSync(*store, kTrust, id);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(t->delivery_count, 1u);
  EXPECT_EQ(t->first_delivered_at, kT0);
  // Hidden from every other claim while the stream holds it...
  EXPECT_THAT(*ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(1), /*token=*/5)), IsEmpty());
  // ...released by its own token only, and then claimable as a redelivery.
  EXPECT_EQ(*ReleaseSync(*store, kCouncil, 5, {id}, kT0 + absl::Seconds(2)), 0);
  EXPECT_EQ(*ReleaseSync(*store, kCouncil, 99, {id}, kT0 + absl::Seconds(2)), 1);
  auto c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(2), 5));
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].delivery_count, 2u);
  EXPECT_THAT(AckSync(*store, kCouncil, {id}, kT0 + absl::Seconds(3))->acknowledged, ElementsAre(id));
}

TEST_P(StoreConformance, AlreadyClaimedMessageReturnsAfterVisibilityTimeout) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil);
  m.claim_token = 99;
  m.visible_until = kT0 + absl::Seconds(30);
  const MessageId id = AppendOne(*store, m);
  auto c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Seconds(31), 5));
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].id, id);
}

TEST_P(StoreConformance, OtherOrganisationsCannotAckOrTrack) {
  auto store = Open(Instance());
  const MessageId id = AppendOne(*store, Msg(kTrust, kCouncil));
  auto a = AckSync(*store, kGp, {id}, kT0);
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->not_found, ElementsAre(id));
  EXPECT_THAT(a->acknowledged, IsEmpty());
  // The sender cannot ack on the recipient's behalf either.
  EXPECT_THAT(AckSync(*store, kTrust, {id}, kT0)->not_found, ElementsAre(id));
  auto t = TrackSync(*store, kGp, id);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReasonOf(t.status()), "MESSAGE_NOT_FOUND");
  EXPECT_EQ(TrackSync(*store, kTrust, MessageId("0123456789abcdef0123456789abcdef")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(StoreConformance, AckIsIdempotent) {
  auto store = Open(Instance());
  const MessageId id = AppendOne(*store, Msg(kTrust, kCouncil));
  EXPECT_THAT(AckSync(*store, kCouncil, {id}, kT0)->acknowledged, ElementsAre(id));
  EXPECT_THAT(AckSync(*store, kCouncil, {id}, kT0 + absl::Seconds(5))->acknowledged, ElementsAre(id));
  EXPECT_EQ(TrackSync(*store, kCouncil, id)->acknowledged_at, kT0);
}

TEST_P(StoreConformance, ExpiryCreatesNonDeliveryReportForSender) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil);
  const MessageId id = AppendOne(*store, m);
  const MessageId acked = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_TRUE(AckSync(*store, kCouncil, {acked}, kT0).ok());

  // Not yet due.
  auto s = SweepSync(*store, SweepRequest{kT0 + absl::Hours(119), kT0 - absl::Hours(1), absl::Hours(120), 100});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->expired, 0);

  const absl::Time later = kT0 + absl::Hours(121);
  s = SweepSync(*store, SweepRequest{later, kT0 - absl::Hours(1), absl::Hours(120), 100});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->expired, 1);
  EXPECT_EQ(s->reports, 1);
  EXPECT_EQ(s->expired_by_workflow, (std::map<std::string, int>{{"HOSPITAL_DISCHARGE", 1}}));

  auto t = TrackSync(*store, kTrust, id);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_EXPIRED);
  EXPECT_EQ(t->expired_at, later);
  EXPECT_EQ(TrackSync(*store, kTrust, acked)->status, v1::MESSAGE_STATUS_ACKNOWLEDGED);
  // The recipient can no longer receive it; a late ack says so.
  EXPECT_THAT(*ClaimSync(*store, Claim(kCouncil, 10, later)), IsEmpty());
  EXPECT_THAT(AckSync(*store, kCouncil, {id}, later)->expired, ElementsAre(id));

  // The sender's mailbox has the report.
  auto c = ClaimSync(*store, Claim(kTrust, 10, later));
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].kind, v1::MESSAGE_KIND_NON_DELIVERY_REPORT);
  EXPECT_EQ((*c)[0].workflow, kNdrWorkflow);
  EXPECT_EQ((*c)[0].content_type, kNdrContentType);
  v1::NonDeliveryReport ndr;
  ASSERT_TRUE(ndr.ParseFromString((*c)[0].payload));
  EXPECT_EQ(ndr.message_id(), id.str());
  EXPECT_EQ(ndr.recipient(), "503");
  EXPECT_EQ(ndr.local_reference(), m.local_reference);
  EXPECT_EQ(ndr.reason(), "NOT_ACKNOWLEDGED_BEFORE_EXPIRY");

  // A report that expires in turn makes no report of its own.
  s = SweepSync(*store, SweepRequest{later + absl::Hours(121), kT0 - absl::Hours(1), absl::Hours(120), 100});
  EXPECT_EQ(s->expired, 1);
  EXPECT_EQ(s->reports, 0);
}

TEST_P(StoreConformance, PurgeRemovesAcknowledgedBodiesAfterRetentionKeepsTracking) {
  auto store = Open(Instance());
  const MessageId old_id = AppendOne(*store, Msg(kTrust, kCouncil));
  const MessageId new_id = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_TRUE(AckSync(*store, kCouncil, {old_id}, kT0).ok());
  ASSERT_TRUE(AckSync(*store, kCouncil, {new_id}, kT0 + absl::Hours(48)).ok());
  auto s = SweepSync(*store, SweepRequest{kT0 + absl::Hours(50), kT0 + absl::Hours(24), absl::Hours(120), 100});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->purged, 1);
  auto t = TrackSync(*store, kTrust, old_id);
  EXPECT_TRUE(t->body_purged);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_ACKNOWLEDGED);
  EXPECT_FALSE(TrackSync(*store, kTrust, new_id)->body_purged);
}

TEST_P(StoreConformance, SweepIsBoundedAndReportsMore) {
  auto store = Open(Instance());
  std::vector<NewMessage> batch;
  for (int i = 0; i < 5; ++i) batch.push_back(Msg(kTrust, kCouncil));
  ASSERT_TRUE(AppendSync(*store, std::move(batch)).ok());
  const absl::Time later = kT0 + absl::Hours(200);
  auto s = SweepSync(*store, SweepRequest{later, kT0, absl::Hours(120), 3});
  EXPECT_EQ(s->expired, 3);
  EXPECT_TRUE(s->more);
  s = SweepSync(*store, SweepRequest{later, kT0, absl::Hours(120), 3});
  EXPECT_EQ(s->expired, 2);
  EXPECT_FALSE(s->more);
}

TEST_P(StoreConformance, ArrivalListenerHearsCommittedRecipients) {
  auto store = Open(Instance());
  absl::Mutex mu;
  std::vector<std::string> heard;
  store->SetArrivalListener([&](const OrgCode& o) {
    absl::MutexLock l(&mu);
    heard.push_back(o.str());
  });
  ASSERT_TRUE(AppendSync(*store, {Msg(kTrust, kCouncil), Msg(kTrust, kGp)}).ok());
  absl::MutexLock l(&mu);
  EXPECT_THAT(heard, ::testing::UnorderedElementsAre("503", "Y06601"));
}

TEST_P(StoreConformance, DataSurvivesReopen) {
  const std::string name = Instance();
  MessageId delivered, waiting;
  {
    auto store = Open(name);
    delivered = AppendOne(*store, Msg(kTrust, kCouncil, "a", "payload-a"));
    waiting = AppendOne(*store, Msg(kTrust, kCouncil, "b"));
    ASSERT_THAT(*ClaimSync(*store, Claim(kCouncil, 1, kT0)), SizeIs(1));
  }
  auto store = Open(name);
  // Idempotency keys survive, so retries after a restart are still safe.
  auto r = AppendSync(*store, {Msg(kTrust, kCouncil, "a", "payload-a")});
  ASSERT_TRUE((*r)[0].ok()) << (*r)[0].status();
  EXPECT_TRUE((*r)[0]->duplicate);
  EXPECT_EQ((*r)[0]->id, delivered);
  EXPECT_EQ(TrackSync(*store, kTrust, waiting)->status, v1::MESSAGE_STATUS_ACCEPTED);
  EXPECT_EQ(TrackSync(*store, kTrust, delivered)->status, v1::MESSAGE_STATUS_DELIVERED);
}

TEST_P(StoreConformance, SubjectAndConsentCheckReachTheClaim) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil);
  m.subject = "9434765919";
  m.consent_check = 0b1101;
  AppendOne(*store, std::move(m));
  AppendOne(*store, Msg(kTrust, kCouncil));
  auto got = ClaimSync(*store, Claim(kCouncil, 10));
  ASSERT_THAT(*got, SizeIs(2));
  EXPECT_EQ((*got)[0].subject, "9434765919");
  EXPECT_EQ((*got)[0].consent_check, 0b1101u);
  EXPECT_EQ((*got)[1].subject, "");
  EXPECT_EQ((*got)[1].consent_check, 0u);
}

TEST_P(StoreConformance, ThePersonsLocalIdentifierKeysReachTheClaimBesideTheNhsNumber) {
  auto store = Open(Instance());
  NewMessage both = Msg(kTrust, kCouncil);
  both.subject = "9434765919";
  both.consent_keys = "RR8|MRN-0042\n503|SC-12345";
  both.consent_check = 0b1101;
  NewMessage local_only = Msg(kTrust, kCouncil);
  local_only.consent_keys = "RR8|MRN-0043";
  local_only.consent_check = 0b1101;
  AppendOne(*store, std::move(both));
  const MessageId untraced = AppendOne(*store, std::move(local_only));
  auto got = ClaimSync(*store, Claim(kCouncil, 10));
  ASSERT_THAT(*got, SizeIs(2));
  EXPECT_EQ((*got)[0].subject, "9434765919") << "the NHS number alone, as audit entries and redirects use it";
  EXPECT_EQ((*got)[0].consent_keys, "RR8|MRN-0042\n503|SC-12345");
  EXPECT_EQ((*got)[1].subject, "");
  EXPECT_EQ((*got)[1].consent_keys, "RR8|MRN-0043");
  // Withheld like any other; the keys go with the subject.
  EXPECT_EQ(*WithholdSync(*store, kCouncil, {untraced}, "CONSENT_DISSENT", kT0), 1);
  EXPECT_EQ(TrackSync(*store, kTrust, untraced)->status, v1::MESSAGE_STATUS_WITHHELD);
}

TEST_P(StoreConformance, WithheldMessagesAreNeverDeliveredAndTrackSaysWhy) {
  auto store = Open(Instance());
  const MessageId waiting = AppendOne(*store, Msg(kTrust, kCouncil));
  const MessageId claimed = AppendOne(*store, Msg(kTrust, kCouncil));
  const MessageId acked = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_THAT(*ClaimSync(*store, Claim(kCouncil, 3)), SizeIs(3));
  ASSERT_THAT(AckSync(*store, kCouncil, {acked}, kT0)->acknowledged, ElementsAre(acked));
  ASSERT_EQ(*ReleaseSync(*store, kCouncil, 7, {waiting}, kT0), 1);
  // Only the recipient's own, not yet acknowledged messages can be withheld.
  EXPECT_EQ(*WithholdSync(*store, kGp, {waiting}, "CONSENT_DISSENT", kT0), 0);
  EXPECT_EQ(*WithholdSync(*store, kCouncil, {waiting, claimed, acked}, "CONSENT_DISSENT", kT0 + absl::Seconds(1)), 2);
  EXPECT_THAT(*ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Hours(1))), IsEmpty());
  auto t = TrackSync(*store, kTrust, claimed);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_WITHHELD);
  EXPECT_EQ(t->withheld_reason, "CONSENT_DISSENT");
  EXPECT_EQ(t->withheld_at, kT0 + absl::Seconds(1));
  EXPECT_TRUE(t->body_purged);
  EXPECT_EQ(TrackSync(*store, kTrust, acked)->status, v1::MESSAGE_STATUS_ACKNOWLEDGED);
  EXPECT_THAT(AckSync(*store, kCouncil, {waiting}, kT0)->not_found, ElementsAre(waiting));
  // Each sender hears of it: a non-delivery report with the reason, living
  // as long as the message would have.
  auto reports = ClaimSync(*store, Claim(kTrust, 10, kT0 + absl::Seconds(2)));
  ASSERT_THAT(*reports, SizeIs(2));
  for (const StoredDelivery& r : *reports) {
    EXPECT_EQ(r.kind, v1::MESSAGE_KIND_NON_DELIVERY_REPORT);
    v1::NonDeliveryReport ndr;
    ASSERT_TRUE(ndr.ParseFromString(r.payload));
    EXPECT_EQ(ndr.reason(), "CONSENT_DISSENT");
    EXPECT_TRUE(ndr.message_id() == waiting.str() || ndr.message_id() == claimed.str());
  }
  ASSERT_THAT(AckSync(*store, kTrust, {(*reports)[0].id, (*reports)[1].id}, kT0 + absl::Seconds(3))->acknowledged,
              SizeIs(2));
  // Withheld messages do not expire into non-delivery reports.
  SweepRequest sweep{kT0 + absl::Hours(200), kT0, absl::Hours(120)};
  EXPECT_EQ(SweepSync(*store, sweep)->expired, 0);
}

// The non-delivery reports waiting in `who`'s mailbox, claimed and acknowledged.
std::vector<v1::NonDeliveryReport> TakeReports(Store& store, const OrgCode& who, absl::Time now) {
  std::vector<v1::NonDeliveryReport> out;
  auto reports = ClaimSync(store, Claim(who, 100, now, /*token=*/77));
  EXPECT_TRUE(reports.ok()) << reports.status();
  std::vector<MessageId> ids;
  for (const StoredDelivery& r : *reports) {
    EXPECT_EQ(r.kind, v1::MESSAGE_KIND_NON_DELIVERY_REPORT);
    EXPECT_TRUE(out.emplace_back().ParseFromString(r.payload));
    ids.push_back(r.id);
  }
  if (!ids.empty()) {
    EXPECT_TRUE(AckSync(store, who, ids, now).ok());
  }
  return out;
}

TEST_P(StoreConformance, ARejectedMessageIsHeldNeverDeliveredAgainAndItsSenderIsTold) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil, "ref-9", "body-9");
  const MessageId id = AppendOne(*store, m);
  const MessageId behind = AppendOne(*store, Msg(kTrust, kCouncil));
  const MessageId acked = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_THAT(*ClaimSync(*store, Claim(kCouncil, 3)), SizeIs(3));
  ASSERT_THAT(AckSync(*store, kCouncil, {acked}, kT0)->acknowledged, ElementsAre(acked));

  const absl::Time at = kT0 + absl::Seconds(5);
  auto r = RejectSync(*store, Rejection{kCouncil, id, "AE", "segment PID missing", at});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, v1::MESSAGE_STATUS_HELD);
  // Only the recipient may reject; other states are answered unchanged.
  EXPECT_EQ(RejectSync(*store, Rejection{kTrust, id, "AE", "", at}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(RejectSync(*store, Rejection{kGp, behind, "AE", "", at}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*RejectSync(*store, Rejection{kCouncil, acked, "AE", "", at}), v1::MESSAGE_STATUS_ACKNOWLEDGED);
  EXPECT_EQ(*RejectSync(*store, Rejection{kCouncil, id, "AE", "again", at}), v1::MESSAGE_STATUS_HELD);

  auto t = TrackSync(*store, kTrust, id);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(t->held_reason, "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(t->rejection_code, "AE");
  EXPECT_EQ(t->rejection_text, "segment PID missing") << "the second reject changed nothing";
  EXPECT_EQ(t->held_at, at);
  EXPECT_FALSE(t->body_purged) << "kept for an operator's release";
  EXPECT_EQ(TrackByKeySync(*store, kTrust, "ref-9")->status, v1::MESSAGE_STATUS_HELD);

  // Never claimed, fetched or listed again; what waited behind it still is.
  auto c = ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Minutes(5)));
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].id, behind);
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, id, kT0 + absl::Minutes(5), true})->status,
            v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(InboxSync(*store, InboxQuery{kCouncil, 0, 10, kT0 + absl::Minutes(5)})->total, 1u);

  // One report to the sender, with the recipient's code and text.
  auto reports = TakeReports(*store, kTrust, kT0 + absl::Minutes(6));
  ASSERT_THAT(reports, SizeIs(1));
  EXPECT_EQ(reports[0].message_id(), id.str());
  EXPECT_EQ(reports[0].reason(), "REJECTED_BY_RECIPIENT");
  EXPECT_EQ(reports[0].rejection_code(), "AE");
  EXPECT_EQ(reports[0].rejection_text(), "segment PID missing");
  EXPECT_EQ(reports[0].local_reference(), m.local_reference);

  // At its expiry a held message is not expired again (no second report);
  // its body is kept until retention (for a resend), its tracking for ever.
  auto swept = SweepSync(*store, SweepRequest{kT0 + absl::Hours(200), kT0, absl::Hours(120)});
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(swept->expired, 1) << "only the one behind it";
  t = TrackSync(*store, kTrust, id);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_HELD);
  EXPECT_FALSE(t->body_purged);
  ASSERT_TRUE(SweepSync(*store, SweepRequest{kT0 + absl::Hours(200), kT0 + absl::Hours(120), absl::Hours(120)}).ok());
  t = TrackSync(*store, kTrust, id);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_HELD);
  EXPECT_TRUE(t->body_purged) << "past retention";
  auto after = TakeReports(*store, kTrust, kT0 + absl::Hours(201));
  ASSERT_THAT(after, SizeIs(1));
  EXPECT_EQ(after[0].message_id(), behind.str());
}

TEST_P(StoreConformance, AHeldMessageMayStillBeAcknowledged) {
  auto store = Open(Instance());
  const MessageId id = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_EQ(*RejectSync(*store, Rejection{kCouncil, id, "HTTP_400", "", kT0}), v1::MESSAGE_STATUS_HELD);
  EXPECT_THAT(AckSync(*store, kCouncil, {id}, kT0 + absl::Seconds(1))->acknowledged, ElementsAre(id));
  EXPECT_EQ(TrackSync(*store, kTrust, id)->status, v1::MESSAGE_STATUS_ACKNOWLEDGED);
}

TEST_P(StoreConformance, AMessageDeliveredMaxAttemptsTimesIsHeldAndDoesNotBlockTheMailbox) {
  auto store = Open(Instance());
  const MessageId poison = AppendOne(*store, Msg(kTrust, kCouncil));
  auto claim = [&](absl::Time now) {
    ClaimRequest req = Claim(kCouncil, 10, now);
    req.max_attempts = 2;
    return ClaimSync(*store, req);
  };
  ASSERT_THAT(*claim(kT0), SizeIs(1));
  auto second = claim(kT0 + absl::Seconds(31));
  ASSERT_THAT(*second, SizeIs(1));
  EXPECT_EQ((*second)[0].delivery_count, 2u);
  const MessageId next = AppendOne(*store, Msg(kTrust, kCouncil, "", "", kT0 + absl::Seconds(40)));
  // The third attempt holds it, and the message behind it goes out.
  auto third = claim(kT0 + absl::Seconds(62));
  ASSERT_TRUE(third.ok()) << third.status();
  ASSERT_THAT(*third, SizeIs(1));
  EXPECT_EQ((*third)[0].id, next);
  auto t = TrackSync(*store, kTrust, poison);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(t->held_reason, "MAX_ATTEMPTS_REACHED");
  EXPECT_EQ(t->rejection_code, "");
  EXPECT_EQ(t->delivery_count, 2u);
  EXPECT_EQ(t->held_at, kT0 + absl::Seconds(62));
  ASSERT_THAT(AckSync(*store, kCouncil, {next}, kT0 + absl::Seconds(63))->acknowledged, ElementsAre(next));
  EXPECT_THAT(*claim(kT0 + absl::Hours(1)), IsEmpty());
  auto reports = TakeReports(*store, kTrust, kT0 + absl::Hours(1));
  ASSERT_THAT(reports, SizeIs(1));
  EXPECT_EQ(reports[0].reason(), "MAX_ATTEMPTS_REACHED");
  EXPECT_EQ(reports[0].message_id(), poison.str());
  EXPECT_EQ(reports[0].rejection_code(), "");

  // Downloads count too.
  const MessageId fetched = AppendOne(*store, Msg(kTrust, kCouncil));
  FetchRequest f{kCouncil, fetched, kT0 + absl::Hours(2), true};
  f.max_attempts = 1;
  EXPECT_EQ(FetchSync(*store, f)->status, v1::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(FetchSync(*store, f)->status, v1::MESSAGE_STATUS_HELD);
  EXPECT_EQ(TrackSync(*store, kTrust, fetched)->held_reason, "MAX_ATTEMPTS_REACHED");
}

TEST_P(StoreConformance, ADownloadUnderALiveClaimIsPartOfThatDelivery) {
  auto store = Open(Instance());
  const MessageId id = AppendOne(*store, Msg(kTrust, kCouncil, "", "body"));
  ASSERT_THAT(*ClaimSync(*store, Claim(kCouncil, 1, kT0)), SizeIs(1));  // hidden to kT0 + 30 s
  FetchRequest f{kCouncil, id, kT0 + absl::Seconds(10), true};
  f.max_attempts = 1;
  auto got = FetchSync(*store, f);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status, v1::MESSAGE_STATUS_DELIVERED) << "not a second attempt, so not held";
  EXPECT_EQ(got->delivery.payload, "body");
  EXPECT_EQ(got->delivery.delivery_count, 1u);
  EXPECT_EQ(TrackSync(*store, kTrust, id)->delivery_count, 1u);
  // Once the claim has lapsed, a download is a delivery of its own.
  f.now = kT0 + absl::Seconds(31);
  f.max_attempts = 0;
  EXPECT_EQ(FetchSync(*store, f)->delivery.delivery_count, 2u);
}

TEST_P(StoreConformance, MailboxStatsCountHeldMessagesApart) {
  auto store = Open(Instance());
  const MessageId held = AppendOne(*store, Msg(kTrust, kGp));
  ASSERT_EQ(*RejectSync(*store, Rejection{kGp, held, "AE", "", kT0}), v1::MESSAGE_STATUS_HELD);
  AppendOne(*store, Msg(kGp, kCouncil, "", "", kT0 + absl::Seconds(3)));
  auto stats = MailboxStatsSync(*store);
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_THAT(*stats, SizeIs(3));  // in code order: the council, the trust (the report), the GP
  EXPECT_EQ((*stats)[1].recipient, kTrust);
  EXPECT_EQ((*stats)[2].recipient, kGp);
  EXPECT_EQ((*stats)[2].depth, 0u);
  EXPECT_EQ((*stats)[2].held, 1u);
  EXPECT_EQ((*stats)[2].oldest_accepted_at, absl::InfinitePast()) << "no backlog";
  EXPECT_EQ((*stats)[0].recipient, kCouncil);
  EXPECT_EQ((*stats)[0].held, 0u);
  EXPECT_EQ((*stats)[0].oldest_accepted_at, kT0 + absl::Seconds(3));
}

TEST_P(StoreConformance, FindMessagesFiltersEveryMailboxByMetadataAPageAtATime) {
  auto store = Open(Instance());
  NewMessage a = Msg(kTrust, kCouncil, "", "0123456789");
  a.local_reference = "ADT-1";
  const MessageId to_council = AppendOne(*store, a);
  const MessageId to_gp = AppendOne(*store, Msg(kTrust, kGp, "", "", kT0 + absl::Minutes(1)));
  const MessageId from_gp = AppendOne(*store, Msg(kGp, kCouncil, "", "", kT0 + absl::Minutes(2)));
  ASSERT_EQ(*RejectSync(*store, Rejection{kCouncil, from_gp, "UNKNOWN_PATIENT", "", kT0 + absl::Minutes(3)}),
            v1::MESSAGE_STATUS_HELD);
  auto ids = [&](MessageQuery q) {
    std::vector<MessageId> out;
    auto r = FindMessagesSync(*store, q);
    EXPECT_TRUE(r.ok()) << r.status();
    for (const MessageSummary& m : *r) out.push_back(m.id);
    return out;
  };
  EXPECT_THAT(ids(MessageQuery{.sender = kTrust}), ElementsAre(to_council, to_gp));
  EXPECT_THAT(ids(MessageQuery{.recipient = kCouncil}), ElementsAre(to_council, from_gp));
  EXPECT_THAT(ids(MessageQuery{.status = v1::MESSAGE_STATUS_HELD}), ElementsAre(from_gp));
  EXPECT_THAT(ids(MessageQuery{.from = kT0 + absl::Seconds(30), .until = kT0 + absl::Minutes(2)}), ElementsAre(to_gp));
  EXPECT_THAT(ids(MessageQuery{.local_reference = "ADT-1"}), ElementsAre(to_council));
  EXPECT_THAT(ids(MessageQuery{.workflow = "NO_SUCH_WORKFLOW"}), IsEmpty());
  // Pages: the next starts after the last seq of the one before.
  auto first = FindMessagesSync(*store, MessageQuery{.sender = kTrust, .max = 1});
  ASSERT_THAT(*first, SizeIs(1));
  EXPECT_THAT(ids(MessageQuery{.sender = kTrust, .max = 1, .after_seq = (*first)[0].seq}), ElementsAre(to_gp));
  // Metadata: times, states, reasons and sizes, never content.
  const MessageSummary& m = (*first)[0];
  EXPECT_EQ(m.recipient, kCouncil);
  EXPECT_EQ(m.local_reference, "ADT-1");
  EXPECT_EQ(m.status, v1::MESSAGE_STATUS_ACCEPTED);
  EXPECT_EQ(m.accepted_at, kT0);
  EXPECT_EQ(m.bytes, 10u);
  auto held = FindMessagesSync(*store, MessageQuery{.status = v1::MESSAGE_STATUS_HELD});
  EXPECT_EQ((*held)[0].reason, "REJECTED_BY_RECIPIENT");
  EXPECT_EQ((*held)[0].rejection_code, "UNKNOWN_PATIENT");
  EXPECT_EQ(FindMessagesSync(*store, MessageQuery{.max = 1001}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreConformance, AnOperatorReleasesOrCancelsOnlyAHeldMessageWithItsBody) {
  auto store = Open(Instance());
  const MessageId poison = AppendOne(*store, Msg(kTrust, kCouncil, "", "body-p"));
  auto claim = [&](absl::Time now) {
    ClaimRequest req = Claim(kCouncil, 10, now);
    req.max_attempts = 1;
    return ClaimSync(*store, req);
  };
  ASSERT_THAT(*claim(kT0), SizeIs(1));
  ASSERT_THAT(*claim(kT0 + absl::Seconds(31)), IsEmpty());  // held: max attempts
  const OperatorAction release{OperatorAction::kRelease, poison, OrgCode("X26"), "consumer fixed (INC0001)",
                               kT0 + absl::Minutes(1)};
  ASSERT_EQ(*ActOnSync(*store, release), v1::MESSAGE_STATUS_ACCEPTED);
  auto t = TrackSync(*store, kTrust, poison);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_ACCEPTED);
  EXPECT_EQ(t->held_reason, "");
  // Delivered again, its attempts counted afresh; the count stays the truth.
  auto again = claim(kT0 + absl::Minutes(1));
  ASSERT_THAT(*again, SizeIs(1));
  EXPECT_EQ((*again)[0].payload, "body-p");
  EXPECT_EQ((*again)[0].delivery_count, 2u);
  EXPECT_EQ(ActOnSync(*store, release).status().code(), absl::StatusCode::kFailedPrecondition) << "not held now";
  EXPECT_THAT(ActOnSync(*store, release).status(), HasReason("MESSAGE_NOT_HELD"));

  const MessageId rejected = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_EQ(*RejectSync(*store, Rejection{kCouncil, rejected, "AE", "", kT0}), v1::MESSAGE_STATUS_HELD);
  OperatorAction cancel{OperatorAction::kCancel, rejected, OrgCode("X26"), "sender asked (INC0002)", kT0};
  ASSERT_EQ(*ActOnSync(*store, cancel), v1::MESSAGE_STATUS_CANCELLED);
  t = TrackSync(*store, kTrust, rejected);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_CANCELLED);
  EXPECT_TRUE(t->body_purged);
  EXPECT_THAT(AckSync(*store, kCouncil, {rejected}, kT0)->not_found, ElementsAre(rejected));
  EXPECT_THAT(ActOnSync(*store, cancel).status(), HasReason("MESSAGE_NOT_HELD"));
  cancel.id = MessageId("0123456789abcdef0123456789abcdef");
  EXPECT_EQ(ActOnSync(*store, cancel).status().code(), absl::StatusCode::kNotFound);

  // Held past its expiry: its body is kept for a resend, but it is not
  // released (nor cancelled) as it stands.
  const MessageId late = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_EQ(*RejectSync(*store, Rejection{kCouncil, late, "AE", "", kT0}), v1::MESSAGE_STATUS_HELD);
  ASSERT_TRUE(SweepSync(*store, SweepRequest{kT0 + absl::Hours(200), kT0, absl::Hours(120)}).ok());
  OperatorAction too_late = release;
  too_late.id = late;
  too_late.now = kT0 + absl::Hours(200);
  EXPECT_THAT(ActOnSync(*store, too_late).status(), HasReason("MESSAGE_NOT_HELD"));
  too_late.kind = OperatorAction::kCancel;
  EXPECT_THAT(ActOnSync(*store, too_late).status(), HasReason("MESSAGE_NOT_HELD"));
}

TEST_P(StoreConformance, AnOperatorRedirectsOrResendsAHeldOrExpiredMessageOnceWhileItsBodyIsKept) {
  auto store = Open(Instance());
  const OrgCode kOperator("X26");
  NewMessage first = Msg(kTrust, kCouncil, "", "body-h");
  first.subject = "9434765919";
  first.meta = R"({"mex-subject":"discharge"})";
  const MessageId held = AppendOne(*store, first);
  ASSERT_EQ(*RejectSync(*store, Rejection{kCouncil, held, "AE", "", kT0}), v1::MESSAGE_STATUS_HELD);

  // What a new send of it needs, as stored.
  auto u = ReadUndeliveredSync(*store, held);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->id, held);
  EXPECT_EQ(u->sender, kTrust);
  EXPECT_EQ(u->recipient, kCouncil);
  EXPECT_EQ(u->workflow, first.workflow);
  EXPECT_EQ(u->purpose, first.purpose);
  EXPECT_EQ(u->content_type, first.content_type);
  EXPECT_EQ(u->local_reference, first.local_reference);
  EXPECT_EQ(u->subject, "9434765919");
  EXPECT_EQ(u->meta, first.meta);
  EXPECT_EQ(u->payload, "body-h");
  EXPECT_EQ(u->status, v1::MESSAGE_STATUS_HELD);

  // Redirected to the GP: stored, the original's body deleted, each linked.
  const absl::Time at = kT0 + absl::Minutes(1);
  NewMessage redirect = Msg(kTrust, kGp, "", "body-r", at);
  redirect.replaces = OperatorAction{OperatorAction::kRedirect, held, kOperator, "wrong council (INC1)", at};
  auto r = AppendSync(*store, {redirect});
  ASSERT_TRUE(r.ok() && (*r)[0].ok()) << (r.ok() ? (*r)[0].status() : r.status());
  auto t = TrackSync(*store, kTrust, held);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_HELD);
  EXPECT_TRUE(t->body_purged);
  EXPECT_EQ(t->replaced_by, redirect.id);
  EXPECT_EQ(TrackSync(*store, kGp, redirect.id)->replaces, held);
  auto c = ClaimSync(*store, Claim(kGp, 10, at));
  ASSERT_THAT(*c, SizeIs(1));
  EXPECT_EQ((*c)[0].payload, "body-r");
  auto found = FindMessagesSync(*store, MessageQuery{.recipient = kCouncil, .status = v1::MESSAGE_STATUS_HELD});
  ASSERT_THAT(*found, SizeIs(1));
  EXPECT_EQ((*found)[0].replaced_by, redirect.id);
  EXPECT_EQ((*found)[0].bytes, 0u);
  auto stats = MailboxStatsSync(*store);  // not in the for: the StatusOr would die before the loop
  ASSERT_TRUE(stats.ok()) << stats.status();
  for (const MailboxStat& m : *stats) {
    EXPECT_NE(m.recipient, kCouncil) << "the council holds nothing now";
  }
  ASSERT_THAT(AckSync(*store, kGp, {redirect.id}, at)->acknowledged, SizeIs(1));
  ASSERT_THAT(TakeReports(*store, kTrust, at), SizeIs(1)) << "the rejection's";

  // Once only: a second replacement stores nothing; the original is not released either.
  NewMessage twice = Msg(kTrust, kGp, "", "body-2", at);
  twice.replaces = redirect.replaces;
  r = AppendSync(*store, {twice});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT((*r)[0].status(), HasReason("MESSAGE_NOT_RESENDABLE"));
  EXPECT_EQ(TrackSync(*store, kGp, twice.id).status().code(), absl::StatusCode::kNotFound) << "nothing stored";
  EXPECT_THAT(ReadUndeliveredSync(*store, held).status(), HasReason("MESSAGE_NOT_RESENDABLE"));
  EXPECT_THAT(ActOnSync(*store, OperatorAction{OperatorAction::kRelease, held, kOperator, "x", at}).status(),
              HasReason("MESSAGE_NOT_HELD"));

  // An expired message keeps its body until retention, and is resent to its recipient.
  const MessageId expired = AppendOne(*store, Msg(kTrust, kCouncil, "", "body-e"));
  const MessageId old = AppendOne(*store, Msg(kTrust, kCouncil, "", "body-o"));
  const MessageId waiting = AppendOne(*store, Msg(kTrust, kCouncil, "", "body-w", kT0 + absl::Hours(100)));
  const absl::Time later = kT0 + absl::Hours(121);
  ASSERT_EQ(SweepSync(*store, SweepRequest{later, kT0, absl::Hours(120)})->expired, 2);
  t = TrackSync(*store, kTrust, expired);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_EXPIRED);
  EXPECT_FALSE(t->body_purged) << "kept for a resend";
  u = ReadUndeliveredSync(*store, expired);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->payload, "body-e");
  EXPECT_EQ(u->status, v1::MESSAGE_STATUS_EXPIRED);
  NewMessage resend = Msg(kTrust, kCouncil, "", "body-e", later);
  resend.replaces = OperatorAction{OperatorAction::kResend, expired, kOperator, "council back up (INC2)", later};
  r = AppendSync(*store, {resend});
  ASSERT_TRUE(r.ok() && (*r)[0].ok());
  EXPECT_EQ(TrackSync(*store, kTrust, expired)->replaced_by, resend.id);
  EXPECT_EQ(TrackSync(*store, kTrust, resend.id)->replaces, expired);
  EXPECT_EQ(TrackSync(*store, kTrust, resend.id)->status, v1::MESSAGE_STATUS_ACCEPTED);

  // Not replaceable: one still waiting, an unknown id, one past retention.
  EXPECT_THAT(ReadUndeliveredSync(*store, waiting).status(), HasReason("MESSAGE_NOT_RESENDABLE"));
  const MessageId unknown("0123456789abcdef0123456789abcdef");
  EXPECT_EQ(ReadUndeliveredSync(*store, unknown).status().code(), absl::StatusCode::kNotFound);
  NewMessage orphan = Msg(kTrust, kCouncil, "", "", later);
  orphan.replaces = OperatorAction{OperatorAction::kResend, unknown, kOperator, "x", later};
  r = AppendSync(*store, {orphan});
  EXPECT_EQ((*r)[0].status().code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(SweepSync(*store, SweepRequest{later + absl::Hours(1), later, absl::Hours(120)})->purged, 3)
      << "old, and the redirect and the report acknowledged at kT0 + 1 min";
  EXPECT_TRUE(TrackSync(*store, kTrust, old)->body_purged);
  EXPECT_THAT(ReadUndeliveredSync(*store, old).status(), HasReason("MESSAGE_NOT_RESENDABLE"));
}

TEST_P(StoreConformance, AClaimWithAWorkflowFilterTakesOnlyThoseWorkflows) {
  auto store = Open(Instance());
  NewMessage referral = Msg(kTrust, kCouncil);
  referral.workflow = "REFERRAL";
  const MessageId r = AppendOne(*store, referral);
  const MessageId d = AppendOne(*store, Msg(kTrust, kCouncil));  // HOSPITAL_DISCHARGE
  NewMessage other = Msg(kTrust, kCouncil);
  other.workflow = "HOSPITAL";  // a prefix of another: not matched by it
  const MessageId o = AppendOne(*store, other);
  ClaimRequest req = Claim(kCouncil, 10);
  req.workflows = ",REFERRAL,HOSPITAL_DISCHARGE,";
  auto c = ClaimSync(*store, req);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_THAT(*c, SizeIs(2));
  EXPECT_EQ((*c)[0].id, r);
  EXPECT_EQ((*c)[1].id, d);
  req.workflows = "";
  auto rest = ClaimSync(*store, req);
  ASSERT_THAT(*rest, SizeIs(1));
  EXPECT_EQ((*rest)[0].id, o);
}

TEST_P(StoreConformance, InboxListsUnacknowledgedMessagesInPagesWithATotal) {
  auto store = Open(Instance());
  std::vector<MessageId> ids;
  for (int i = 0; i < 5; ++i) {
    NewMessage m = Msg(kTrust, kCouncil);
    if (i == 0) m.meta = R"({"mex-to":"503HC001"})";
    ids.push_back(AppendOne(*store, m));
  }
  AppendOne(*store, Msg(kTrust, kGp));  // another organisation's
  NewMessage late = Msg(kTrust, kCouncil);
  late.expires_at = kT0 + absl::Seconds(10);
  AppendOne(*store, late);
  ASSERT_THAT(AckSync(*store, kCouncil, {ids[1]}, kT0)->acknowledged, ElementsAre(ids[1]));
  ASSERT_EQ(*WithholdSync(*store, kCouncil, {ids[2]}, "CONSENT_DISSENT", kT0), 1);
  // Claimed (delivered, unacknowledged) messages stay listed.
  ASSERT_THAT(*ClaimSync(*store, Claim(kCouncil, 1)), SizeIs(1));

  const absl::Time now = kT0 + absl::Minutes(1);  // `late` is past its expiry
  auto page = InboxSync(*store, InboxQuery{kCouncil, 0, 2, now});
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->total, 3u);
  ASSERT_THAT(page->entries, SizeIs(2));
  EXPECT_EQ(page->entries[0].id, ids[0]);
  EXPECT_EQ(page->entries[1].id, ids[3]);
  EXPECT_EQ(page->entries[0].workflow, "HOSPITAL_DISCHARGE");
  EXPECT_EQ(page->entries[0].meta, R"({"mex-to":"503HC001"})");
  EXPECT_EQ(page->entries[1].meta, "");
  auto next = InboxSync(*store, InboxQuery{kCouncil, page->entries[1].seq, 2, now});
  ASSERT_THAT(next->entries, SizeIs(1));
  EXPECT_EQ(next->entries[0].id, ids[4]);
  EXPECT_EQ(InboxSync(*store, InboxQuery{kGp, 0, 10, now})->total, 1u);
  EXPECT_EQ(InboxSync(*store, InboxQuery{kCouncil, 0, 0, now}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreConformance, FetchByIdDeliversOnlyTheRecipientsOwnAndSaysWhenItIsGone) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil, "", "body-1");
  m.meta = R"({"mex-subject":"Discharge"})";
  const MessageId id = AppendOne(*store, m);
  const MessageId acked = AppendOne(*store, Msg(kTrust, kCouncil));
  ASSERT_THAT(AckSync(*store, kCouncil, {acked}, kT0)->acknowledged, ElementsAre(acked));

  // HEAD: metadata only, no delivery counted.
  auto head = FetchSync(*store, FetchRequest{kCouncil, id, kT0, false, false});
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, v1::MESSAGE_STATUS_ACCEPTED);
  EXPECT_EQ(head->delivery.payload, "");
  EXPECT_EQ(head->delivery.meta, m.meta);
  EXPECT_EQ(head->delivery.delivery_count, 0u);

  auto got = FetchSync(*store, FetchRequest{kCouncil, id, kT0 + absl::Seconds(1), true});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status, v1::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(got->delivery.payload, "body-1");
  EXPECT_EQ(got->delivery.sender, kTrust);
  EXPECT_EQ(got->delivery.delivery_count, 1u);
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, id, kT0 + absl::Seconds(2), true})->delivery.delivery_count,
            2u);
  // A message sent whole is one piece.
  auto whole = FetchSync(*store, FetchRequest{kCouncil, id, kT0, false, true, 1, 0});
  EXPECT_EQ(whole->delivery.payload, "body-1");
  EXPECT_FALSE(whole->more);
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, id, kT0, false, true, 1, 1}).status().code(),
            absl::StatusCode::kNotFound);
  auto t = TrackSync(*store, kTrust, id);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_DELIVERED);
  EXPECT_EQ(t->first_delivered_at, kT0 + absl::Seconds(1));

  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, acked, kT0, true})->status, v1::MESSAGE_STATUS_ACKNOWLEDGED);
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, id, kT0 + absl::Hours(121), true})->status,
            v1::MESSAGE_STATUS_EXPIRED);
  // Another organisation's message, or none, is not found (ids reveal nothing).
  EXPECT_EQ(FetchSync(*store, FetchRequest{kGp, id, kT0, true}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, MessageId("nope"), kT0, true}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(StoreConformance, AChunkedMessageIsInvisibleUntilItsLastChunkThenReadAChunkAtATime) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil, "", "chunk-one;");
  m.chunks = 3;
  v1::AuditEntry accepted;
  accepted.set_event(v1::AUDIT_EVENT_SEND_ACCEPTED);
  accepted.set_message_id(m.id.str());
  accepted.SerializeToString(&m.audit.entry);
  m.audit.at = kT0;
  const MessageId id = AppendOne(*store, m);
  const uint64_t entries_before = ReadAuditSync(*store, {.from = 0, .max = 1000})->size();
  EXPECT_EQ(TrackSync(*store, kTrust, id)->status, v1::MESSAGE_STATUS_UPLOADING);
  EXPECT_EQ(InboxSync(*store, InboxQuery{kCouncil, 0, 10, kT0})->total, 0u);
  EXPECT_THAT(*ClaimSync(*store, Claim(kCouncil, 10)), IsEmpty());
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, id, kT0, true})->status, v1::MESSAGE_STATUS_UPLOADING);
  EXPECT_THAT(AckSync(*store, kCouncil, {id}, kT0)->not_found, ElementsAre(id));

  auto chunk = [&](const OrgCode& who, uint32_t n, uint32_t total, std::string data) {
    return AwaitStore<ChunkStored>([&](auto cb) {
      store->AppendChunk(ChunkUpload{who, id, n, total, std::move(data), kT0 + absl::Seconds(n)}, std::move(cb));
    });
  };
  // Only the sender, in order, with the total announced.
  EXPECT_EQ(chunk(kCouncil, 2, 3, "x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(chunk(kTrust, 3, 3, "x"), HasReason("CHUNK_RANGE_INVALID"));
  EXPECT_THAT(chunk(kTrust, 2, 4, "x"), HasReason("CHUNK_RANGE_INVALID"));
  auto two = chunk(kTrust, 2, 3, "chunk-two-first-try;");
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_FALSE(two->complete);
  // Over one stored piece, so it is read back in two.
  const std::string two_bytes = std::string(mailbox::kPieceBytes, 'b') + "chunk-two;";
  ASSERT_TRUE(chunk(kTrust, 2, 3, two_bytes).ok()) << "a retried chunk replaces the first try";
  EXPECT_EQ(InboxSync(*store, InboxQuery{kCouncil, 0, 10, kT0})->total, 0u) << "still uploading";
  auto three = chunk(kTrust, 3, 3, "chunk-three");
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_TRUE(three->complete);
  EXPECT_THAT(chunk(kTrust, 3, 3, "again"), HasReason("CHUNKS_COMPLETE"));

  // Now in the inbox; a claim that takes chunked messages hands it over
  // without its payload, which is read a chunk, or a piece, at a time.
  EXPECT_EQ(InboxSync(*store, InboxQuery{kCouncil, 0, 10, kT0 + absl::Minutes(1)})->total, 1u);
  EXPECT_THAT(*ClaimSync(*store, Claim(kCouncil, 10, kT0 + absl::Minutes(1))), IsEmpty())
      << "not to a claim of messages sent whole";
  ClaimRequest large = Claim(kCouncil, 10, kT0 + absl::Minutes(1));
  large.chunked = true;
  auto claimed = ClaimSync(*store, large);
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].id, id);
  EXPECT_EQ((*claimed)[0].chunks, 3u);
  EXPECT_EQ((*claimed)[0].payload, "");
  auto first = FetchSync(*store, FetchRequest{kCouncil, id, kT0 + absl::Minutes(1), true, true, 1});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->delivery.chunks, 3u);
  EXPECT_EQ(first->delivery.payload, "chunk-one;");
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, id, kT0, false, true, 2})->delivery.payload, two_bytes);
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, id, kT0, false, true, 3})->delivery.payload, "chunk-three");
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, id, kT0, false, true, 4}).status().code(),
            absl::StatusCode::kNotFound);
  auto piece = [&](uint32_t n, int p) { return FetchSync(*store, FetchRequest{kCouncil, id, kT0, false, true, n, p}); };
  auto p0 = piece(2, 0), p1 = piece(2, 1);
  ASSERT_TRUE(p0.ok() && p1.ok());
  EXPECT_EQ(p0->delivery.payload, two_bytes.substr(0, mailbox::kPieceBytes));
  EXPECT_TRUE(p0->more);
  EXPECT_EQ(p1->delivery.payload, "chunk-two;");
  EXPECT_FALSE(p1->more);
  EXPECT_EQ(piece(2, 2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(piece(3, 0)->delivery.payload, "chunk-three");
  EXPECT_FALSE(piece(3, 0)->more);
  // The accepted entry was held until the last chunk, then written with
  // the digest of the whole payload.
  auto rows = ReadAuditSync(*store, {.from = 0, .max = 1000});
  ASSERT_EQ(rows->size(), entries_before + 1);
  v1::AuditEntry written;
  ASSERT_TRUE(written.ParseFromString(rows->back().entry));
  EXPECT_EQ(written.message_id(), id.str());
  EXPECT_EQ(written.payload_digest(), Sha256("chunk-one;" + two_bytes + "chunk-three"));
  EXPECT_EQ(TrackSync(*store, kTrust, id)->status, v1::MESSAGE_STATUS_DELIVERED);
  ASSERT_THAT(AckSync(*store, kCouncil, {id}, kT0 + absl::Minutes(2))->acknowledged, ElementsAre(id));
  // Past retention its chunks go, as a body sent whole does.
  EXPECT_GT((*FindMessagesSync(*store, MessageQuery{.sender = kTrust}))[0].bytes, mailbox::kPieceBytes);
  ASSERT_EQ(SweepSync(*store, SweepRequest{kT0 + absl::Hours(1), kT0 + absl::Minutes(2), absl::Hours(120)})->purged, 1);
  EXPECT_TRUE(TrackSync(*store, kTrust, id)->body_purged);
  EXPECT_EQ((*FindMessagesSync(*store, MessageQuery{.sender = kTrust}))[0].bytes, 0u);
}

TEST_P(StoreConformance, AChunkedMessagesRedirectGetsItsOtherChunksCopiedAndIsCompleteAtOnce) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil, "", "first;");
  m.chunks = 3;
  const MessageId id = AppendOne(*store, m);
  const std::string big = std::string(mailbox::kPieceBytes, 's') + "second;";
  for (uint32_t n : {2u, 3u}) {
    auto c = AwaitStore<ChunkStored>([&](auto cb) {
      store->AppendChunk(ChunkUpload{kTrust, id, n, 3, n == 2 ? big : "third", kT0}, std::move(cb));
    });
    ASSERT_TRUE(c.ok()) << c.status();
  }
  ASSERT_EQ(*RejectSync(*store, Rejection{kCouncil, id, "AE", "", kT0}), v1::MESSAGE_STATUS_HELD);
  auto u = ReadUndeliveredSync(*store, id);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->chunks, 3u);
  EXPECT_EQ(u->payload, "first;") << "the first chunk only";

  NewMessage redirect = Msg(kTrust, kGp, "", u->payload, kT0 + absl::Minutes(1));
  redirect.chunks = 3;
  v1::AuditEntry accepted;
  accepted.set_event(v1::AUDIT_EVENT_SEND_ACCEPTED);
  accepted.set_message_id(redirect.id.str());
  accepted.SerializeToString(&redirect.audit.entry);
  redirect.audit.at = redirect.accepted_at;
  redirect.replaces = OperatorAction{OperatorAction::kRedirect, id, OrgCode("X26"), "INC3", redirect.accepted_at};
  auto r = AppendSync(*store, {redirect});
  ASSERT_TRUE(r.ok() && (*r)[0].ok()) << (r.ok() ? (*r)[0].status() : r.status());

  // Complete and claimable at once, every chunk as the original had it.
  EXPECT_EQ(TrackSync(*store, kGp, redirect.id)->status, v1::MESSAGE_STATUS_ACCEPTED);
  ClaimRequest large = Claim(kGp, 10, kT0 + absl::Minutes(1));
  large.chunked = true;
  auto claimed = ClaimSync(*store, large);
  ASSERT_THAT(*claimed, SizeIs(1));
  EXPECT_EQ((*claimed)[0].chunks, 3u);
  const absl::Time at = kT0 + absl::Minutes(2);
  EXPECT_EQ(FetchSync(*store, FetchRequest{kGp, redirect.id, at, false, true, 1})->delivery.payload, "first;");
  EXPECT_EQ(FetchSync(*store, FetchRequest{kGp, redirect.id, at, false, true, 2})->delivery.payload, big);
  EXPECT_EQ(FetchSync(*store, FetchRequest{kGp, redirect.id, at, false, true, 3})->delivery.payload, "third");
  auto rows = ReadAuditSync(*store, {.from = 0, .max = 1000});
  ASSERT_FALSE(rows->empty());
  v1::AuditEntry written;
  ASSERT_TRUE(written.ParseFromString(rows->back().entry));
  EXPECT_EQ(written.message_id(), redirect.id.str());
  EXPECT_EQ(written.payload_digest(), Sha256("first;" + big + "third")) << "of the whole, as at any last chunk";
  // The original's chunks are gone.
  auto t = TrackSync(*store, kTrust, id);
  EXPECT_TRUE(t->body_purged);
  EXPECT_EQ(t->replaced_by, redirect.id);
  EXPECT_EQ((*FindMessagesSync(*store, MessageQuery{.recipient = kCouncil}))[0].bytes, 0u);
}

TEST_P(StoreConformance, ASubmissionsProgressAdvancesOnceAChunkAndItsPatchCompletesTheEntry) {
  auto store = Open(Instance());
  // A row's entry, as the chunk carrying the row gives it.
  auto row_entry = [](const std::string& detail, const std::string& subject) {
    v1::AuditEntry e;
    e.set_event(v1::AUDIT_EVENT_ROW_RELEASED);
    e.set_detail(detail);
    e.set_subject(subject);
    AuditRecord r;
    e.SerializeToString(&r.entry);
    r.subject = subject;
    r.at = kT0;
    return r;
  };
  NewMessage m = Msg(kTrust, kCouncil, "", "header,rows-1;");
  m.chunks = 3;
  m.progress = "after-1";
  m.row_audit = {row_entry("row 2", "s2"), row_entry("row 3", "s3")};
  v1::AuditEntry accepted;
  accepted.set_event(v1::AUDIT_EVENT_SEND_ACCEPTED);
  accepted.set_message_id(m.id.str());
  accepted.set_detail("CLD submission: decided and minimised row by row; CLD out");
  accepted.SerializeToString(&m.audit.entry);
  m.audit.at = kT0;
  const MessageId id = AppendOne(*store, m);
  auto progress = [&] {
    return AwaitStore<ChunkProgress>([&](auto cb) { store->ReadChunkProgress(kTrust, id, std::move(cb)); });
  };
  auto at = progress();
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(at->received, 1u);
  EXPECT_EQ(at->progress, "after-1");
  EXPECT_EQ(AwaitStore<ChunkProgress>([&](auto cb) { store->ReadChunkProgress(kCouncil, id, std::move(cb)); })
                .status()
                .code(),
            absl::StatusCode::kNotFound)
      << "only its sender's";
  // The first chunk's rows are entries at once; its SEND_ACCEPTED waits.
  auto details = [&] {
    std::vector<std::string> out;
    auto rows = ReadAuditSync(*store, {.from = 0, .max = 1000});
    EXPECT_TRUE(rows.ok()) << rows.status();
    for (const AuditRow& r : rows.ok() ? *rows : std::vector<AuditRow>()) {
      v1::AuditEntry e;
      EXPECT_TRUE(e.ParseFromString(r.entry));
      out.push_back(e.detail());
    }
    return out;
  };
  EXPECT_THAT(details(), ElementsAre("row 2", "row 3"));
  EXPECT_EQ(ReadAuditSync(*store, {.from = 0, .max = 10, .subject = "s3"})->size(), 1u) << "found by its person";
  auto chunk = [&](uint32_t n, std::string data, std::string progress_after, uint32_t after, std::string patch = "") {
    return AwaitStore<ChunkStored>([&](auto cb) {
      ChunkUpload c{kTrust, id, n, 3, std::move(data), kT0 + absl::Seconds(n)};
      c.progress = std::move(progress_after);
      c.after = after;
      c.audit_patch = std::move(patch);
      c.row_audit = {row_entry(absl::StrCat("row of chunk ", n, " after ", after), "s")};
      store->AppendChunk(std::move(c), std::move(cb));
    });
  };
  EXPECT_THAT(chunk(2, "rows-2;", "", 1), HasReason("CHUNK_RANGE_INVALID")) << "a submission's chunk has progress";
  ASSERT_TRUE(chunk(2, "rows-2;", "after-2", 1).ok());
  EXPECT_THAT(chunk(2, "rows-2 again;", "after-2b", 2), HasReason("CHUNK_SUPERSEDED")) << "taken once, not replaced";
  EXPECT_THAT(chunk(3, "rows-3", "after-3", 1), HasReason("CHUNK_SUPERSEDED")) << "minimised from old progress";
  at = progress();
  EXPECT_EQ(at->received, 2u);
  EXPECT_EQ(at->progress, "after-2");
  EXPECT_EQ(InboxSync(*store, InboxQuery{kCouncil, 0, 10, kT0})->total, 0u);
  EXPECT_THAT(details(), ElementsAre("row 2", "row 3", "row of chunk 2 after 1"))
      << "a chunk refused writes none of its rows' entries";
  v1::AuditEntry patch;
  patch.set_payload_digest(std::string(32, 'd'));
  patch.set_detail("CLD submission: 3 rows, 2 released, 1 withheld (NATIONAL_OPT_OUT 1); CLD out");
  patch.add_released_fields("person.sex");
  auto three = chunk(3, "rows-3", "after-3", 2, patch.SerializeAsString());
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_TRUE(three->complete);
  EXPECT_EQ(FetchSync(*store, FetchRequest{kCouncil, id, kT0, false, true, 2})->delivery.payload, "rows-2;");
  // The held entry took the patch: its digest (not the stored chunks'),
  // the counts and the fields, after the last chunk's rows.
  EXPECT_THAT(details(), ElementsAre("row 2", "row 3", "row of chunk 2 after 1", "row of chunk 3 after 2",
                                     patch.detail()));
  auto rows = ReadAuditSync(*store, {.from = 0, .max = 1000});
  v1::AuditEntry written;
  ASSERT_TRUE(written.ParseFromString(rows->back().entry));
  EXPECT_EQ(written.message_id(), id.str());
  EXPECT_EQ(written.payload_digest(), std::string(32, 'd'));
  EXPECT_EQ(written.detail(), patch.detail());
  EXPECT_THAT(written.released_fields(), ElementsAre("person.sex"));
}

TEST_P(StoreConformance, AnAbandonedChunkedUploadIsDeletedAtItsExpiry) {
  auto store = Open(Instance());
  NewMessage m = Msg(kTrust, kCouncil, "", "chunk-one");
  m.chunks = 2;
  const MessageId id = AppendOne(*store, m);
  SweepRequest early{kT0 + absl::Hours(1), kT0, absl::Hours(120)};
  EXPECT_EQ(SweepSync(*store, early)->abandoned, 0);
  SweepRequest late{kT0 + absl::Hours(121), kT0, absl::Hours(120)};
  auto swept = SweepSync(*store, late);
  EXPECT_EQ(swept->abandoned, 1);
  EXPECT_EQ(swept->reports, 0) << "never accepted: no non-delivery report";
  auto t = TrackSync(*store, kTrust, id);
  EXPECT_EQ(t->status, v1::MESSAGE_STATUS_EXPIRED);
  EXPECT_TRUE(t->body_purged);
  EXPECT_THAT(AwaitStore<ChunkStored>([&](auto cb) {
                store->AppendChunk(ChunkUpload{kTrust, id, 2, 2, "late", kT0 + absl::Hours(122)}, std::move(cb));
              }),
              HasReason("CHUNKS_COMPLETE"));
}

TEST_P(StoreConformance, UseOnceRemembersEachKeyUntilItsTimeThenSweepForgets) {
  auto store = Open(Instance());
  const std::string key = "token-hash-" + Instance();
  EXPECT_TRUE(*UseOnceSync(*store, key, kT0 + absl::Hours(2)));
  EXPECT_FALSE(*UseOnceSync(*store, key, kT0 + absl::Hours(2)));
  EXPECT_TRUE(*UseOnceSync(*store, key + "-other", kT0 + absl::Hours(2)));
  SweepRequest early{kT0 + absl::Hours(1), kT0, absl::Hours(120)};
  EXPECT_EQ(SweepSync(*store, early)->forgotten, 0);
  EXPECT_FALSE(*UseOnceSync(*store, key, kT0 + absl::Hours(2)));
  SweepRequest late{kT0 + absl::Hours(3), kT0, absl::Hours(120)};
  EXPECT_GE(SweepSync(*store, late)->forgotten, 2);
  EXPECT_TRUE(*UseOnceSync(*store, key, kT0 + absl::Hours(5)));
}

TEST_P(StoreConformance, ConsentHistoryIsKeptInOrderPerPerson) {
  const std::string name = Instance();
  auto change = [](const std::string& nhs, bool opt_out) {
    v1::ConsentChange c;
    c.set_nhs_number(nhs);
    c.set_national_opt_out(opt_out);
    c.set_by_org("Y06601");
    return c;
  };
  {
    auto store = Open(name);
    auto a = AppendConsentSync(*store, change("9434765919", true));
    ASSERT_TRUE(a.ok()) << a.status();
    auto b = AppendConsentSync(*store, change("9434765870", true));
    auto c = AppendConsentSync(*store, change("9434765919", false));
    EXPECT_LT(a->seq(), b->seq());
    EXPECT_LT(b->seq(), c->seq());
  }
  auto store = Open(name);  // durable across reopen
  auto one = ReadConsentSync(*store, "9434765919");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_THAT(*one, SizeIs(2));
  EXPECT_TRUE((*one)[0].national_opt_out());
  EXPECT_FALSE((*one)[1].national_opt_out());
  EXPECT_EQ((*one)[1].by_org(), "Y06601");
  EXPECT_THAT(*ReadConsentSync(*store, ""), SizeIs(3));
  EXPECT_THAT(*ReadConsentSync(*store, "9999999999"), IsEmpty());
  // A person named by a local identifier is kept under its key.
  v1::ConsentChange local;
  local.mutable_local_identifier()->set_value("SC-12345");
  local.mutable_local_identifier()->set_assigner("503");
  local.mutable_recorded()->set_id("d1");
  local.set_by_org("503");
  ASSERT_TRUE(AppendConsentSync(*store, local).ok());
  auto by_local = ReadConsentSync(*store, "503|SC-12345");
  ASSERT_THAT(*by_local, SizeIs(1));
  EXPECT_EQ((*by_local)[0].local_identifier().value(), "SC-12345");
  EXPECT_THAT(*ReadConsentSync(*store, "9434765919"), SizeIs(2)) << "not the NHS-number person's";
}

TEST_P(StoreConformance, ClosedStoreRefusesWork) {
  auto store = Open(Instance());
  store->Close();
  auto r = AppendSync(*store, {Msg(kTrust, kCouncil)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(r.status()), "STORE_CLOSED");
}

TEST_P(StoreConformance, InvalidClaimIsRefused) {
  auto store = Open(Instance());
  EXPECT_EQ(ClaimSync(*store, Claim(kCouncil, 0)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreConformance, ConcurrentAppendsAllCommitAndShareCommits) {
  auto store = Open(Instance());
  constexpr int kThreads = 4, kPerThread = 250;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto r = AppendSync(*store, {Msg(kTrust, kCouncil, "t" + std::to_string(t) + "-" + std::to_string(i))});
        if (r.ok() && (*r)[0].ok()) ok.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  int claimed = 0;
  for (int round = 0; round < 100 && claimed < kThreads * kPerThread; ++round) {
    claimed += static_cast<int>(ClaimSync(*store, Claim(kCouncil, 500, kT0 + absl::Seconds(1)))->size());
  }
  EXPECT_EQ(claimed, kThreads * kPerThread);
}

// ---------------------------------------------------------------- audit log

// An entry as the audit code makes it (index unset: the store assigns it).
AuditRecord Entry(const std::string& subject, int n) {
  v1::AuditEntry e;
  e.set_event(v1::AUDIT_EVENT_SEND_ACCEPTED);
  e.set_subject(subject);
  e.set_detail("entry " + std::to_string(n));
  AuditRecord r;
  r.subject = subject;
  r.at = kT0 + absl::Seconds(n);
  e.SerializeToString(&r.entry);
  return r;
}

std::vector<AuditRow> ReadAll(Store& s, AuditRead req) {
  auto r = ReadAuditSync(s, std::move(req));
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : std::vector<AuditRow>{};
}

TEST_P(StoreConformance, AuditEntriesAreNumberedInCommitOrderAndHashed) {
  const std::string name = Instance();
  {
    auto store = Open(name);
    std::vector<std::pair<uint64_t, size_t>> heard;  // (first index, leaves)
    absl::Mutex mu;
    store->SetAuditListener([&](uint64_t first, const std::vector<std::string>& leaves) {
      absl::MutexLock l(&mu);
      heard.emplace_back(first, leaves.size());
    });
    EXPECT_EQ(*AppendAuditSync(*store, {Entry("a", 0), Entry("b", 1)}), 0u);
    EXPECT_EQ(*AppendAuditSync(*store, {Entry("", 2)}), 2u);
    absl::MutexLock l(&mu);
    EXPECT_THAT(heard, ElementsAre(std::pair<uint64_t, size_t>{0, 2}, std::pair<uint64_t, size_t>{2, 1}));
  }
  auto store = Open(name);  // durable, and numbering goes on after a reopen
  EXPECT_EQ(*AppendAuditSync(*store, {Entry("a", 3)}), 3u);
  const std::vector<AuditRow> rows = ReadAll(*store, {.from = 0, .max = 100});
  ASSERT_THAT(rows, SizeIs(4));
  for (uint64_t i = 0; i < rows.size(); ++i) {
    v1::AuditEntry e;
    ASSERT_TRUE(e.ParseFromString(rows[i].entry));
    EXPECT_EQ(rows[i].index, i);
    EXPECT_EQ(e.index(), i);  // the index is inside the hashed bytes
    EXPECT_EQ(e.detail(), "entry " + std::to_string(i));
    EXPECT_EQ(rows[i].leaf_hash, std::string(audit::AsBytes(audit::LeafHash(rows[i].entry))));
  }
  const std::vector<AuditRow> hashes = ReadAll(*store, {.from = 1, .max = 2, .hashes_only = true});
  ASSERT_THAT(hashes, SizeIs(2));
  EXPECT_EQ(hashes[0].index, 1u);
  EXPECT_EQ(hashes[0].entry, "");
  EXPECT_EQ(hashes[1].leaf_hash, rows[2].leaf_hash);
  EXPECT_THAT(ReadAll(*store, {.from = 9, .max = 10}), IsEmpty());
  EXPECT_EQ(ReadAuditSync(*store, {.from = 0, .max = 0}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreConformance, AuditSearchBySubjectFindsEveryEntryAcrossBlocks) {
  // Enough entries for several blocks of the search filter, with 40 people,
  // a few entries about nobody, and a reopen mid-block.
  const std::string name = Instance();
  std::vector<std::string> subjects;
  auto subject_of = [](int i) { return i % 17 == 0 ? std::string() : "subject-" + std::to_string(i * 7 % 40); };
  auto append = [&](Store& s, int from, int to) {
    for (int i = from; i < to; i += 100) {
      std::vector<AuditRecord> batch;
      for (int k = i; k < std::min(to, i + 100); ++k) {
        batch.push_back(Entry(subject_of(k), k));
        subjects.push_back(subject_of(k));
      }
      ASSERT_TRUE(AppendAuditSync(s, std::move(batch)).ok());
    }
  };
  auto check = [&](Store& s, const std::string& who, uint64_t from, int max) {
    std::vector<uint64_t> want, got;
    for (uint64_t i = from; i < subjects.size() && want.size() < static_cast<size_t>(max); ++i) {
      if (subjects[i] == who) want.push_back(i);
    }
    for (const AuditRow& r : ReadAll(s, {.from = from, .max = max, .subject = who})) got.push_back(r.index);
    EXPECT_EQ(got, want) << who << " from " << from << " max " << max;
  };
  {
    auto store = Open(name);
    append(*store, 0, 1500);
  }
  auto store = Open(name);
  append(*store, 1500, 3100);
  for (const std::string who : {"subject-0", "subject-13", "subject-39"}) {
    check(*store, who, 0, 100000);
    check(*store, who, 1000, 100000);
    check(*store, who, 2047, 7);
    check(*store, who, 3050, 100);
  }
  check(*store, "nobody", 0, 100000);
}

TEST_P(StoreConformance, TreeHeadsAreKeptAndReadOldestFirst) {
  const std::string name = Instance();
  auto head = [](uint64_t size) {
    v1::SignedTreeHead h;
    h.set_tree_size(size);
    h.set_root_hash(std::string(32, static_cast<char>(size)));
    h.set_signature("sig");
    return h;
  };
  {
    auto store = Open(name);
    ASSERT_TRUE(AppendTreeHeadSync(*store, head(8)).ok());
    ASSERT_TRUE(AppendTreeHeadSync(*store, head(16)).ok());
  }
  auto store = Open(name);
  auto heads = ReadTreeHeadsSync(*store);
  ASSERT_TRUE(heads.ok()) << heads.status();
  ASSERT_THAT(*heads, SizeIs(2));
  EXPECT_EQ((*heads)[0].tree_size(), 8u);
  EXPECT_EQ((*heads)[1].root_hash(), std::string(32, '\x10'));
}

}  // namespace
}  // namespace carebroker
