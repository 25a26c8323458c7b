// Blocking wrappers over the asynchronous Store, for tools and tests. Never
// call these from a store callback or a gRPC reactor.
#pragma once

#include <future>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "broker/store/store.h"
#include "core/reasons.h"
#include "core/status.h"

namespace carebroker {

// Runs `start(callback)` and waits for the callback's result.
template <typename T, typename Start>
absl::StatusOr<T> AwaitStore(Start&& start) {
  std::promise<absl::StatusOr<T>> p;
  auto f = p.get_future();
  std::forward<Start>(start)([&p](absl::StatusOr<T> r) { p.set_value(std::move(r)); });
  return f.get();
}

// As AwaitStore, but gives up after `timeout` with UNAVAILABLE
// STORE_UNAVAILABLE (the callback may still run later; it owns its state).
template <typename T, typename Start>
absl::StatusOr<T> AwaitStoreFor(absl::Duration timeout, Start&& start) {
  auto p = std::make_shared<std::promise<absl::StatusOr<T>>>();
  auto f = p->get_future();
  std::forward<Start>(start)([p](absl::StatusOr<T> r) { p->set_value(std::move(r)); });
  if (f.wait_for(absl::ToChronoMilliseconds(timeout)) != std::future_status::ready) {
    return Error(absl::StatusCode::kUnavailable, reason::kStoreUnavailable,
                 absl::StrCat("the store did not answer within ", absl::FormatDuration(timeout)));
  }
  return f.get();
}

inline absl::StatusOr<std::vector<absl::StatusOr<AppendReceipt>>> AppendSync(Store& s, std::vector<NewMessage> m) {
  return AwaitStore<std::vector<absl::StatusOr<AppendReceipt>>>(
      [&](auto cb) { s.Append(std::move(m), std::move(cb)); });
}
inline absl::StatusOr<std::vector<StoredDelivery>> ClaimSync(Store& s, ClaimRequest r) {
  return AwaitStore<std::vector<StoredDelivery>>([&](auto cb) { s.Claim(std::move(r), std::move(cb)); });
}
inline absl::StatusOr<AckResult> AckSync(Store& s, OrgCode r, std::vector<MessageId> ids, absl::Time now) {
  return AwaitStore<AckResult>([&](auto cb) { s.Ack(std::move(r), std::move(ids), now, std::move(cb)); });
}
inline absl::StatusOr<int> ReleaseSync(Store& s, OrgCode r, ClaimToken t, std::vector<MessageId> ids,
                                       absl::Time now) {
  return AwaitStore<int>([&](auto cb) { s.Release(std::move(r), t, std::move(ids), now, std::move(cb)); });
}
inline absl::StatusOr<bool> HideSync(Store& s, OrgCode r, MessageId id, absl::Time until) {
  return AwaitStore<bool>([&](auto cb) { s.Hide(std::move(r), std::move(id), until, std::move(cb)); });
}
inline absl::StatusOr<TrackInfo> TrackByKeySync(Store& s, OrgCode sender, std::string key,
                                                absl::Time since = absl::InfinitePast()) {
  return AwaitStore<TrackInfo>(
      [&](auto cb) { s.TrackByKey(std::move(sender), std::move(key), since, std::move(cb)); });
}
inline absl::StatusOr<TrackInfo> TrackSync(Store& s, OrgCode caller, MessageId id) {
  return AwaitStore<TrackInfo>([&](auto cb) { s.Track(std::move(caller), std::move(id), std::move(cb)); });
}
inline absl::StatusOr<int> WithholdSync(Store& s, OrgCode r, std::vector<MessageId> ids, std::string reason,
                                        absl::Time now) {
  return AwaitStore<int>(
      [&](auto cb) { s.Withhold(std::move(r), std::move(ids), std::move(reason), now, std::move(cb)); });
}
inline absl::StatusOr<v1::MessageStatus> RejectSync(Store& s, Rejection r) {
  return AwaitStore<v1::MessageStatus>([&](auto cb) { s.Reject(std::move(r), std::move(cb)); });
}
inline absl::StatusOr<std::vector<MessageSummary>> FindMessagesSync(Store& s, MessageQuery q) {
  return AwaitStore<std::vector<MessageSummary>>([&](auto cb) { s.FindMessages(std::move(q), std::move(cb)); });
}
inline absl::StatusOr<v1::MessageStatus> ActOnSync(Store& s, OperatorAction a) {
  return AwaitStore<v1::MessageStatus>([&](auto cb) { s.ActOn(std::move(a), std::move(cb)); });
}
inline absl::StatusOr<Undelivered> ReadUndeliveredSync(Store& s, MessageId id) {
  return AwaitStore<Undelivered>([&](auto cb) { s.ReadUndelivered(std::move(id), std::move(cb)); });
}
inline absl::StatusOr<v1::ConsentChange> AppendConsentSync(Store& s, v1::ConsentChange c, AuditRecord a = {}) {
  return AwaitStore<v1::ConsentChange>([&](auto cb) { s.AppendConsent(std::move(c), std::move(a), std::move(cb)); });
}
inline absl::StatusOr<uint64_t> AppendAuditSync(Store& s, std::vector<AuditRecord> r) {
  return AwaitStore<uint64_t>([&](auto cb) { s.AppendAudit(std::move(r), std::move(cb)); });
}
inline absl::StatusOr<std::vector<AuditRow>> ReadAuditSync(Store& s, AuditRead r) {
  return AwaitStore<std::vector<AuditRow>>([&](auto cb) { s.ReadAudit(std::move(r), std::move(cb)); });
}
inline absl::StatusOr<bool> CheckWritableSync(Store& s) {
  return AwaitStore<bool>([&](auto cb) { s.CheckWritable(std::move(cb)); });
}
inline absl::StatusOr<std::vector<MailboxStat>> MailboxStatsSync(Store& s) {
  return AwaitStore<std::vector<MailboxStat>>([&](auto cb) { s.MailboxStats(std::move(cb)); });
}
inline absl::StatusOr<bool> AppendTreeHeadSync(Store& s, v1::SignedTreeHead h) {
  return AwaitStore<bool>([&](auto cb) { s.AppendTreeHead(std::move(h), std::move(cb)); });
}
inline absl::StatusOr<std::vector<v1::SignedTreeHead>> ReadTreeHeadsSync(Store& s) {
  return AwaitStore<std::vector<v1::SignedTreeHead>>([&](auto cb) { s.ReadTreeHeads(std::move(cb)); });
}
inline absl::StatusOr<std::vector<v1::ConsentChange>> ReadConsentSync(Store& s, std::string nhs_number) {
  return AwaitStore<std::vector<v1::ConsentChange>>(
      [&](auto cb) { s.ReadConsent(std::move(nhs_number), std::move(cb)); });
}
inline absl::StatusOr<InboxPage> InboxSync(Store& s, InboxQuery q) {
  return AwaitStore<InboxPage>([&](auto cb) { s.Inbox(std::move(q), std::move(cb)); });
}
inline absl::StatusOr<Fetched> FetchSync(Store& s, FetchRequest r) {
  return AwaitStore<Fetched>([&](auto cb) { s.Fetch(std::move(r), std::move(cb)); });
}
inline absl::StatusOr<bool> UseOnceSync(Store& s, std::string key, absl::Time forget_at) {
  return AwaitStore<bool>([&](auto cb) { s.UseOnce(std::move(key), forget_at, std::move(cb)); });
}
inline absl::StatusOr<SweepResult> SweepSync(Store& s, SweepRequest r) {
  return AwaitStore<SweepResult>([&](auto cb) { s.Sweep(r, std::move(cb)); });
}

}  // namespace carebroker
