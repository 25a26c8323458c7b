#include "broker/exchange/mailboxes.h"

#include <gtest/gtest.h>

namespace carebroker {
namespace {

// A subscriber whose answers the test sets.
class FakeSubscriber final : public Subscriber {
 public:
  explicit FakeSubscriber(ClaimToken token) : token_(token) {}
  void Wake() override { ++wakes; }
  ClaimToken Reserve(absl::string_view workflow) override {
    if (!can_take || (!only.empty() && workflow != only)) return 0;
    ++reserved;
    return token_;
  }
  void Deliver(StoredDelivery) override {}
  void CancelReservation() override {}
  void MarkBacklog() override { ++backlog_marks; }

  bool can_take = false;
  std::string only;  // takes only this workflow ("" any)
  int wakes = 0, reserved = 0, backlog_marks = 0;

 private:
  ClaimToken token_;
};

const OrgCode kCouncil("503"), kGp("Y06601");

TEST(Mailboxes, NotifyWakesOnlyThatMailbox) {
  Mailboxes m;
  FakeSubscriber a(1), b(2);
  m.Subscribe(kCouncil, &a);
  m.Subscribe(kGp, &b);
  m.Notify(kCouncil);
  EXPECT_EQ(a.wakes, 1);
  EXPECT_EQ(b.wakes, 0);
  m.NotifyAll();
  EXPECT_EQ(a.wakes, 2);
  EXPECT_EQ(b.wakes, 1);
  EXPECT_EQ(m.subscriber_count(), 2u);
  m.Unsubscribe(kCouncil, &a);
  m.Notify(kCouncil);
  EXPECT_EQ(a.wakes, 2);
  EXPECT_EQ(m.subscriber_count(), 1u);
}

TEST(Mailboxes, ReserveDirectPicksASubscriberThatCanTakeIt) {
  Mailboxes m;
  FakeSubscriber busy(1), ready(2);
  ready.can_take = true;
  m.Subscribe(kCouncil, &busy);
  m.Subscribe(kCouncil, &ready);
  ClaimToken token = 0;
  EXPECT_EQ(m.ReserveDirect(kCouncil, "HOSPITAL_DISCHARGE", &token), &ready);
  EXPECT_EQ(token, 2u);
  EXPECT_EQ(ready.reserved, 1);
  EXPECT_EQ(busy.backlog_marks, 0);
  EXPECT_EQ(m.Sends(kCouncil)->unsettled.load(), 0u) << "a reserved send is not counted";
}

TEST(Mailboxes, ADirectDeliveryGoesOnlyToAStreamThatTakesItsWorkflow) {
  Mailboxes m;
  FakeSubscriber referrals(1), discharges(2);
  referrals.can_take = discharges.can_take = true;
  referrals.only = "REFERRAL";
  discharges.only = "HOSPITAL_DISCHARGE";
  m.Subscribe(kCouncil, &referrals);
  m.Subscribe(kCouncil, &discharges);
  ClaimToken token = 0;
  EXPECT_EQ(m.ReserveDirect(kCouncil, "HOSPITAL_DISCHARGE", &token), &discharges);
  EXPECT_EQ(m.ReserveDirect(kCouncil, "REFERRAL", &token), &referrals);
  EXPECT_EQ(token, 1u);
  EXPECT_EQ(m.ReserveDirect(kCouncil, "CARE_PACKAGE_STARTED", &token), nullptr) << "no stream takes it: stored";
}

TEST(Mailboxes, NoTakerMeansStoredAndEverySubscriberMustClaimFirst) {
  Mailboxes m;
  FakeSubscriber a(1), b(2);
  m.Subscribe(kCouncil, &a);
  m.Subscribe(kCouncil, &b);
  const MailboxSends* sends = m.Sends(kCouncil);
  ClaimToken token = 0;
  EXPECT_EQ(m.ReserveDirect(kCouncil, "HOSPITAL_DISCHARGE", &token), nullptr);
  EXPECT_EQ(a.backlog_marks, 1);
  EXPECT_EQ(b.backlog_marks, 1);
  // On its way into the store: streams must not let direct deliveries overtake it.
  EXPECT_EQ(sends->unsettled.load(), 1u);
  EXPECT_EQ(sends->settled.load(), 0u);
  // When the stored message becomes claimable, they are woken to claim it,
  // and a claim that started before it cannot count as draining the mailbox.
  m.EndStoredSend(kCouncil);
  EXPECT_EQ(a.wakes, 1);
  EXPECT_EQ(b.wakes, 1);
  EXPECT_EQ(sends->unsettled.load(), 0u);
  EXPECT_EQ(sends->settled.load(), 1u);
  // A mailbox nobody listens to is counted too, for a stream that opens
  // while the send is on its way.
  EXPECT_EQ(m.ReserveDirect(kGp, "HOSPITAL_DISCHARGE", &token), nullptr);
  EXPECT_EQ(m.Sends(kGp)->unsettled.load(), 1u);
  m.EndStoredSend(kGp);
  EXPECT_EQ(m.Sends(kGp)->unsettled.load(), 0u);
  EXPECT_EQ(m.Sends(kGp), m.Sends(kGp)) << "the counters stay where they are";
}

TEST(MemoryBudget, AdmitsWithinTheLimitOnly) {
  MemoryBudget b(100);
  EXPECT_TRUE(b.TryAcquire(60));
  EXPECT_FALSE(b.TryAcquire(41));
  EXPECT_TRUE(b.TryAcquire(40));
  EXPECT_TRUE(b.Exhausted());
  b.Release(50);
  EXPECT_FALSE(b.Exhausted());
  b.ForceAcquire(500);  // work already done is counted even past the limit
  EXPECT_EQ(b.used(), 550u);
  EXPECT_FALSE(b.TryAcquire(1));
}

}  // namespace
}  // namespace carebroker
