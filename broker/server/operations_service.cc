#include "broker/server/operations_service.h"

#include <algorithm>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "broker/exchange/submission.h"
#include "broker/server/auth.h"
#include "broker/server/grpc_status.h"
#include "core/ids.h"
#include "core/reasons.h"
#include "core/shapes.h"
#include "core/status.h"
#include "core/time.h"

namespace carebroker {
namespace {

constexpr uint32_t kDefaultPage = 100;
constexpr size_t kMaxJustification = 4096;

// The store's query for a request, or INVALID_ARGUMENT naming the field.
absl::StatusOr<MessageQuery> QueryOf(const v1::FindMessagesRequest& r) {
  MessageQuery q;
  q.sender = OrgCode(r.sender());
  q.recipient = OrgCode(r.recipient());
  q.workflow = r.workflow();
  q.status = r.status();
  q.local_reference = r.local_reference();
  if (r.has_accepted_from()) q.from = FromTimestamp(r.accepted_from());
  if (r.has_accepted_until()) q.until = FromTimestamp(r.accepted_until());
  if (r.limit() > 1000) return InvalidArgument(reason::kQueryInvalid, "limit is 1 to 1000");
  q.max = r.limit() == 0 ? kDefaultPage : static_cast<int>(r.limit());
  if (!r.page_token().empty() && (!absl::SimpleAtoi(r.page_token(), &q.after_seq) || q.after_seq < 0)) {
    return InvalidArgument(reason::kQueryInvalid, "page_token is not one this broker gave");
  }
  return q;
}

absl::StatusOr<OperatorAction::Kind> KindOf(v1::MessageAction a) {
  switch (a) {
    case v1::MESSAGE_ACTION_RELEASE: return OperatorAction::kRelease;
    case v1::MESSAGE_ACTION_CANCEL: return OperatorAction::kCancel;
    case v1::MESSAGE_ACTION_REDIRECT: return OperatorAction::kRedirect;
    case v1::MESSAGE_ACTION_RESEND: return OperatorAction::kResend;
    default: return InvalidArgument(reason::kFieldRequired, "action is release, cancel, redirect or resend");
  }
}

}  // namespace

grpc::ServerUnaryReactor* OperationsService::ListMailboxes(grpc::CallbackServerContext* ctx,
                                                           const v1::ListMailboxesRequest*,
                                                           v1::ListMailboxesResponse* resp) {
  auto id = Authorize(ctx, d_, Role::kOperator);
  if (!id.ok()) return FinishNow(ctx, id.status());
  auto* reactor = ctx->DefaultReactor();
  d_.store.MailboxStats([this, reactor, resp](absl::StatusOr<std::vector<MailboxStat>> stats) {
    if (!stats.ok()) return reactor->Finish(ToGrpcStatus(stats.status()));
    // Mailboxes with only open streams are listed too.
    const auto streams = d_.mailboxes.SubscriberCounts();
    std::map<std::string, MailboxStat> by_org;
    for (MailboxStat& m : *stats) by_org.emplace(m.recipient.str(), std::move(m));
    for (const auto& [org, n] : streams) by_org.try_emplace(org.str(), MailboxStat{org, 0, absl::InfinitePast(), 0});
    const auto config = d_.policy.config();
    const absl::Time now = d_.clock.Now();
    for (const auto& [org, m] : by_org) {
      v1::MailboxSummary* s = resp->add_mailboxes();
      s->set_organisation(org);
      if (const v1::Organisation* o = config->FindOrganisation(m.recipient)) s->set_name(o->name());
      s->set_depth(m.depth);
      if (m.depth > 0) {
        *s->mutable_oldest_unacknowledged_at() = ToTimestamp(m.oldest_accepted_at);
        s->set_oldest_unacknowledged_age_seconds(absl::ToInt64Seconds(now - m.oldest_accepted_at));
      }
      s->set_held(m.held);
      auto open = streams.find(m.recipient);
      s->set_open_streams(open == streams.end() ? 0 : static_cast<uint32_t>(open->second));
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* OperationsService::FindMessages(grpc::CallbackServerContext* ctx,
                                                          const v1::FindMessagesRequest* req,
                                                          v1::FindMessagesResponse* resp) {
  auto id = Authorize(ctx, d_, Role::kOperator);
  if (!id.ok()) return FinishNow(ctx, id.status());
  auto q = QueryOf(*req);
  if (!q.ok()) return FinishNow(ctx, q.status());
  auto* reactor = ctx->DefaultReactor();
  const int max = q->max;
  d_.store.FindMessages(*std::move(q), [reactor, resp, max](absl::StatusOr<std::vector<MessageSummary>> found) {
    if (!found.ok()) return reactor->Finish(ToGrpcStatus(found.status()));
    for (const MessageSummary& m : *found) {
      v1::MessageSummary* s = resp->add_messages();
      s->set_message_id(m.id.str());
      s->set_sender(m.sender.str());
      s->set_recipient(m.recipient.str());
      s->set_workflow(m.workflow);
      s->set_local_reference(m.local_reference);
      s->set_status(m.status);
      *s->mutable_accepted_at() = ToTimestamp(m.accepted_at);
      *s->mutable_expires_at() = ToTimestamp(m.expires_at);
      s->set_delivery_count(m.delivery_count);
      s->set_reason(m.reason);
      s->set_rejection_code(m.rejection_code);
      s->set_bytes(m.bytes);
      s->set_replaced_by(m.replaced_by.str());
    }
    if (static_cast<int>(found->size()) == max) resp->set_next_page_token(absl::StrCat(found->back().seq));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* OperationsService::ActOnMessage(grpc::CallbackServerContext* ctx,
                                                          const v1::MessageActionRequest* req,
                                                          v1::MessageActionResponse* resp) {
  auto id = Authorize(ctx, d_, Role::kOperator);
  if (!id.ok()) return FinishNow(ctx, id.status());
  if (!IsMessageIdShape(req->message_id())) {
    return FinishNow(ctx, InvalidArgument(reason::kMessageIdInvalid, "a message id is 32 hex characters"));
  }
  auto kind = KindOf(req->action());
  if (!kind.ok()) return FinishNow(ctx, kind.status());
  if (absl::StripAsciiWhitespace(req->justification()).empty() || req->justification().size() > kMaxJustification) {
    return FinishNow(ctx, InvalidArgument(reason::kJustificationInvalid,
                                       "a justification is required (1 to 4096 bytes): why, e.g. a ticket reference"));
  }
  const bool redirect = *kind == OperatorAction::kRedirect;
  if (redirect != !req->organisation().empty() || (redirect && !IsOdsCodeShape(req->organisation()))) {
    return FinishNow(ctx, InvalidArgument(reason::kRecipientInvalid,
                                       redirect ? "a redirect names its new recipient's ODS code (organisation)"
                                                : "only a redirect names an organisation"));
  }
  OperatorAction a{*kind, MessageId(req->message_id()), id->org, req->justification(), d_.clock.Now()};
  auto* reactor = ctx->DefaultReactor();
  if (*kind == OperatorAction::kRelease || *kind == OperatorAction::kCancel) {
    d_.store.ActOn(std::move(a), [reactor, resp](absl::StatusOr<v1::MessageStatus> r) {
      if (r.ok()) resp->set_status(*r);
      reactor->Finish(ToGrpcStatus(r.status()));
    });
    return reactor;
  }
  // A redirect or resend is a new send from the original sender, through
  // the one send pipeline: decided again, minimised again, and stored only
  // while the original can still be replaced (in the same commit).
  MessageId original = a.id;  // copied first: the callback takes `a`
  d_.store.ReadUndelivered(std::move(original), [this, reactor, resp, a = std::move(a), to = req->organisation()](
                                     absl::StatusOr<Undelivered> u) mutable {
    if (!u.ok()) return reactor->Finish(ToGrpcStatus(u.status()));
    if (a.kind == OperatorAction::kRedirect && OrgCode(to) == u->recipient) {
      return reactor->Finish(ToGrpcStatus(InvalidArgument(
          reason::kRedirectSameRecipient, "the message is for that organisation already: resend it instead")));
    }
    if (IsSubmissionContentType(u->content_type)) {
      // Its rows were decided one by one and pseudonymised: nothing in the
      // stored copy names the people to decide it for again.
      return reactor->Finish(ToGrpcStatus(Error(absl::StatusCode::kFailedPrecondition, reason::kMessageNotResendable,
                                                "a CLD return is minimised row by row to pseudonyms and cannot be "
                                                "decided again: its sender must send it again")));
    }
    v1::SendRequest send;
    send.set_recipient(a.kind == OperatorAction::kRedirect ? to : u->recipient.str());
    send.set_workflow(u->workflow);
    send.set_purpose(u->purpose);
    send.set_content_type(u->content_type);
    send.set_local_reference(u->local_reference);
    *send.mutable_payload() = std::move(u->payload);
    SendOptions options;
    options.meta = std::move(u->meta);
    // Within the limits of the front door it came through once (MESH takes
    // more than a gRPC Send); a chunked message goes as its first chunk, and
    // the store copies the rest.
    options.chunks = u->chunks;
    options.max_bytes = std::max<uint64_t>(send.payload().size(), 1);
    options.replaced_subject = std::move(u->subject);
    options.replaced_consent_keys = std::move(u->consent_keys);
    options.replaces = std::move(a);
    d_.sends.Send(
        u->sender, std::move(send),
        [reactor, resp](absl::StatusOr<v1::SendReceipt> r) {
          if (r.ok()) {
            resp->set_status(v1::MESSAGE_STATUS_ACCEPTED);
            *resp->mutable_receipt() = *std::move(r);
          }
          reactor->Finish(ToGrpcStatus(r.status()));
        },
        nullptr, std::move(options));
  });
  return reactor;
}

}  // namespace carebroker
