// carebrokerctl's command table: each group of commands is a file that
// adds its subcommands to the app and, when one is chosen, sets the action
// to run. Online commands need the TLS flags (broker/client/flags.h);
// offline ones (policy lint/test/explain, convert, db migrate) need no
// broker.
//
//   group     file          commands
//   messages  messages.cc   send, receive, ack, reject, track
//   operations operations.cc mailbox list, messages find, message release|cancel
//   policy    policy.cc     policy lint, test, explain (offline); policy reload
//   consent   consent.cc    consent record, withdraw, opt-out, show
//   convert   convert.cc    convert (offline)
//   db        db.cc         db migrate (offline)
#pragma once

#include <grpcpp/client_context.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "broker/client/client.h"
#include "broker/client/flags.h"
#include "carebroker/v1/exchange.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"

namespace carebroker::ctl {

// The global flags.
struct Global {
  ClientTls tls;
  double timeout_s = 30;
  std::string format = "text";
  bool json() const { return format == "json"; }
};

// One invocation: the global flags, the streams, and the chosen action.
struct Run {
  Global g;
  std::ostream& out;
  std::ostream& err;
  std::function<int()> action;

  // Chooses an action that needs no broker.
  void Offline(std::function<int()> f) { action = std::move(f); }
  // Chooses an action that calls the broker: exit 2 before it runs when
  // the TLS flags are incomplete.
  void Online(std::function<int()> f);
};

void AddMessageCommands(CLI::App& app, Run& run);
void AddPolicyCommands(CLI::App& app, Run& run);
void AddConsentCommands(CLI::App& app, Run& run);
void AddConvertCommands(CLI::App& app, Run& run);
void AddDbCommands(CLI::App& app, Run& run);
void AddOperationsCommands(CLI::App& app, Run& run);

// Helpers the commands share.

// A message status without its prefix, as Track shows it: HELD, ACKNOWLEDGED, ...
std::string StatusName(v1::MessageStatus s);
// RFC 3339, or "" for an unset timestamp.
std::string Rfc3339(const google::protobuf::Timestamp& t);
// Prints "carebrokerctl: CODE REASON: message"; exit code 1.
int RpcFailed(std::ostream& err, const grpc::Status& s);
// The --timeout deadline on `ctx`.
void SetDeadline(grpc::ClientContext& ctx, const Global& g);
// `m` as indented JSON; exit code 0.
int PrintJson(const google::protobuf::Message& m, std::ostream& out);

// A stub of `Service` on a mutual-TLS channel; null (the error printed)
// when the TLS files cannot be read.
template <typename Service>
std::unique_ptr<typename Service::Stub> Connect(const Global& g, std::ostream& err) {
  auto ch = MakeChannel(g.tls);
  if (!ch.ok()) {
    err << "carebrokerctl: " << ch.status().message() << "\n";
    return nullptr;
  }
  return Service::NewStub(*ch);
}

}  // namespace carebroker::ctl
