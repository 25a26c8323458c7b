#include "broker/cli/ctl/ctl.h"

#include <CLI/CLI.hpp>

#include "broker/cli/ctl/commands.h"

namespace carebroker {

int RunCtl(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"carebrokerctl: send, receive, acknowledge and track messages; lint and reload agreements; record consent"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may follow the command
  ctl::Run run{.out = out, .err = err};
  AddTlsFlags(app, run.g.tls, "client", "127.0.0.1:7443");
  AddTimeoutFlag(app, run.g.timeout_s, "deadline in seconds for each request");
  app.add_option("--format", run.g.format, "output format")->check(CLI::IsMember({"text", "json"}));
  // The command table (commands.h).
  for (auto* add : {ctl::AddMessageCommands, ctl::AddPolicyCommands, ctl::AddConsentCommands,
                    ctl::AddConvertCommands, ctl::AddDbCommands, ctl::AddOperationsCommands}) {
    add(app, run);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e, out, err);
    return rc == 0 ? 0 : 2;
  }
  return run.action ? run.action() : 2;
}

}  // namespace carebroker
