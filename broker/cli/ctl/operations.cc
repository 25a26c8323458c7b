// carebrokerctl mailbox list, messages find, message release|cancel|redirect|resend: the
// Operations service (operations.proto), for an operator's certificate.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "broker/cli/ctl/commands.h"
#include "carebroker/v1/operations.grpc.pb.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker::ctl {
namespace {

using json = nlohmann::json;
using google::protobuf::util::TimeUtil;

// Lower case, as the operator commands print it.
std::string Status(v1::MessageStatus s) { return absl::AsciiStrToLower(StatusName(s)); }

// Rows under a header, each column as wide as its widest cell.
void PrintTable(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                std::ostream& out) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t i = 0; i < cells.size(); ++i) {
      absl::StrAppend(&s, i > 0 ? "  " : "", cells[i], std::string(i + 1 < cells.size() ? width[i] - cells[i].size() : 0, ' '));
    }
    out << s << "\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
}

int DoMailboxList(const Global& g, std::ostream& out, std::ostream& err) {
  auto stub = Connect<v1::Operations>(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::ListMailboxesResponse r;
  grpc::Status s = stub->ListMailboxes(&ctx, v1::ListMailboxesRequest(), &r);
  if (!s.ok()) return RpcFailed(err, s);
  json all = json::array();
  std::vector<std::vector<std::string>> rows;
  for (const v1::MailboxSummary& m : r.mailboxes()) {
    all.push_back({{"organisation", m.organisation()},
                   {"name", m.name()},
                   {"depth", m.depth()},
                   {"oldest_unacknowledged_at", Rfc3339(m.oldest_unacknowledged_at())},
                   {"oldest_unacknowledged_age_seconds", m.oldest_unacknowledged_age_seconds()},
                   {"held", m.held()},
                   {"open_streams", m.open_streams()}});
    rows.push_back({m.organisation(), absl::StrCat(m.depth()),
                    m.depth() > 0 ? absl::StrCat(m.oldest_unacknowledged_age_seconds(), "s") : "-",
                    absl::StrCat(m.held()), absl::StrCat(m.open_streams()), m.name()});
  }
  if (g.json()) {
    out << all.dump() << "\n";
  } else {
    PrintTable({"ORGANISATION", "DEPTH", "OLDEST", "HELD", "STREAMS", "NAME"}, rows, out);
  }
  return 0;
}

struct FindArgs {
  v1::FindMessagesRequest req;
  std::string status, from, until;
};

int DoFind(const Global& g, FindArgs a, std::ostream& out, std::ostream& err) {
  if (!a.status.empty()) {
    v1::MessageStatus st;
    if (!v1::MessageStatus_Parse("MESSAGE_STATUS_" + absl::AsciiStrToUpper(a.status), &st) ||
        st == v1::MESSAGE_STATUS_UNSPECIFIED) {
      err << "carebrokerctl: --state is accepted, delivered, acknowledged, expired, withheld, uploading, held or "
             "cancelled\n";
      return 2;
    }
    a.req.set_status(st);
  }
  for (auto [text, field] : {std::pair{&a.from, &v1::FindMessagesRequest::mutable_accepted_from},
                             std::pair{&a.until, &v1::FindMessagesRequest::mutable_accepted_until}}) {
    if (!text->empty() && !TimeUtil::FromString(*text, (a.req.*field)())) {
      err << "carebrokerctl: '" << *text << "' is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)\n";
      return 2;
    }
  }
  auto stub = Connect<v1::Operations>(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::FindMessagesResponse r;
  grpc::Status s = stub->FindMessages(&ctx, a.req, &r);
  if (!s.ok()) return RpcFailed(err, s);
  json all = json::array();
  std::vector<std::vector<std::string>> rows;
  for (const v1::MessageSummary& m : r.messages()) {
    all.push_back({{"message_id", m.message_id()},
                   {"sender", m.sender()},
                   {"recipient", m.recipient()},
                   {"workflow", m.workflow()},
                   {"local_reference", m.local_reference()},
                   {"status", Status(m.status())},
                   {"accepted_at", Rfc3339(m.accepted_at())},
                   {"expires_at", Rfc3339(m.expires_at())},
                   {"delivery_count", m.delivery_count()},
                   {"reason", m.reason()},
                   {"rejection_code", m.rejection_code()},
                   {"bytes", m.bytes()},
                   {"replaced_by", m.replaced_by()}});
    rows.push_back({m.message_id(), Rfc3339(m.accepted_at()), m.sender(), m.recipient(), m.workflow(),
                    Status(m.status()), absl::StrCat(m.delivery_count()),
                    m.rejection_code().empty() ? m.reason() : absl::StrCat(m.reason(), " ", m.rejection_code()),
                    absl::StrCat(m.bytes())});
  }
  if (g.json()) {
    out << json{{"messages", all}, {"next_page_token", r.next_page_token()}}.dump() << "\n";
  } else {
    PrintTable({"MESSAGE", "ACCEPTED", "FROM", "TO", "WORKFLOW", "STATE", "DELIVERIES", "REASON", "BYTES"}, rows, out);
    if (!r.next_page_token().empty()) out << "more: --page-token " << r.next_page_token() << "\n";
  }
  return 0;
}

int DoAction(const Global& g, const v1::MessageActionRequest& req, std::ostream& out, std::ostream& err) {
  auto stub = Connect<v1::Operations>(g, err);
  if (!stub) return 2;
  grpc::ClientContext ctx;
  SetDeadline(ctx, g);
  v1::MessageActionResponse r;
  grpc::Status s = stub->ActOnMessage(&ctx, req, &r);
  if (!s.ok()) return RpcFailed(err, s);
  const v1::SendReceipt& sent = r.receipt();
  if (g.json()) {
    json j{{"message_id", req.message_id()}, {"status", Status(r.status())}};
    if (r.has_receipt()) {
      j["new_message_id"] = sent.message_id();
      j["recipient"] = sent.recipient();
      j["agreement_id"] = sent.agreement_id();
      j["flow"] = sent.flow();
      j["withheld_fields"] = std::vector<std::string>(sent.withheld_fields().begin(), sent.withheld_fields().end());
    }
    out << j.dump() << "\n";
  } else if (r.has_receipt()) {
    // The new message, as `send` prints it.
    out << req.message_id() << " replaced by " << sent.message_id() << " to " << sent.recipient() << " "
        << Status(r.status()) << " (" << sent.agreement_id() << "/" << sent.flow() << ")\n";
  } else {
    out << req.message_id() << " " << Status(r.status()) << "\n";
  }
  return 0;
}

}  // namespace

void AddOperationsCommands(CLI::App& app, Run& run) {
  auto* mailbox = app.add_subcommand("mailbox", "every organisation's mailbox (operator)");
  mailbox->require_subcommand(1);
  auto* list = mailbox->add_subcommand("list", "depth, oldest unacknowledged age, held messages and open streams");
  list->callback([&run] { run.Online([&run] { return DoMailboxList(run.g, run.out, run.err); }); });

  auto fa = std::make_shared<FindArgs>();
  auto* messages = app.add_subcommand("messages", "messages of any mailbox, by metadata (operator)");
  messages->require_subcommand(1);
  auto* find = messages->add_subcommand("find", "metadata only (ids, times, states, reasons, sizes), oldest first");
  find->add_option_function<std::string>("--sender", [fa](const std::string& v) { fa->req.set_sender(v); }, "ODS code");
  find->add_option_function<std::string>("--recipient", [fa](const std::string& v) { fa->req.set_recipient(v); },
                                         "ODS code");
  find->add_option_function<std::string>("--workflow", [fa](const std::string& v) { fa->req.set_workflow(v); },
                                         "e.g. HOSPITAL_DISCHARGE");
  find->add_option("--state", fa->status, "e.g. held, accepted, delivered, expired");
  find->add_option("--from", fa->from, "accepted at or after (RFC 3339)");
  find->add_option("--until", fa->until, "accepted before (RFC 3339)");
  find->add_option_function<std::string>("--local-reference",
                                         [fa](const std::string& v) { fa->req.set_local_reference(v); },
                                         "the sender's reference");
  find->add_option_function<uint32_t>("--limit", [fa](uint32_t v) { fa->req.set_limit(v); }, "1 to 1000 (default 100)");
  find->add_option_function<std::string>("--page-token", [fa](const std::string& v) { fa->req.set_page_token(v); },
                                          "from the page before");
  find->callback([&run, fa] { run.Online([&run, fa] { return DoFind(run.g, *fa, run.out, run.err); }); });

  auto* message = app.add_subcommand("message", "act on one held or expired message (operator; audited)");
  message->require_subcommand(1);
  for (auto [name, action, help] :
       {std::tuple{"release", v1::MESSAGE_ACTION_RELEASE, "deliver a held message again"},
        std::tuple{"cancel", v1::MESSAGE_ACTION_CANCEL, "cancel a held message: never delivered, body deleted"},
        std::tuple{"redirect", v1::MESSAGE_ACTION_REDIRECT,
                   "send a held or expired message to another organisation instead (decided again)"},
        std::tuple{"resend", v1::MESSAGE_ACTION_RESEND,
                   "send a held or expired message to its recipient again (decided again)"}}) {
    auto req = std::make_shared<v1::MessageActionRequest>();
    req->set_action(action);
    auto* cmd = message->add_subcommand(name, help);
    cmd->add_option_function<std::string>("ID", [req](const std::string& v) { req->set_message_id(v); }, "message id")
        ->required();
    cmd->add_option_function<std::string>("--justification",
                                          [req](const std::string& v) { req->set_justification(v); },
                                          "why, for the audit log (e.g. a ticket reference)")
        ->required();
    if (action == v1::MESSAGE_ACTION_REDIRECT) {
      cmd->add_option_function<std::string>("--to", [req](const std::string& v) { req->set_organisation(v); },
                                            "the new recipient's ODS code")
          ->required();
    }
    cmd->callback([&run, req] { run.Online([&run, req] { return DoAction(run.g, *req, run.out, run.err); }); });
  }
}

}  // namespace carebroker::ctl
