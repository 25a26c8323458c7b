// carebroker-connect --config FILE: the edge process at an agency (see connect.h).
#include <pthread.h>

#include <csignal>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "connect/connect.h"
#include "core/log.h"

int main(int argc, char** argv) {
  CLI::App app{"carebroker-connect: HL7 v2 over MLLP into carebroker, and carebroker's messages out to a folder or an MLLP peer"};
  std::string config_path;
  app.add_option("--config", config_path, "YAML config (deploy/config/connect.yaml)")->required();
  CLI11_PARSE(app, argc, argv);
  carebroker::SetLogProgram("carebroker-connect");
  auto config = carebroker::LoadConnectConfig(config_path);
  if (!config.ok()) {
    carebroker::Log(carebroker::LogLevel::kError, "config.invalid").Msg(config.status().message());
    return 2;
  }
  if (config->log().level().empty()) {
    carebroker::SetLogLevel(carebroker::LogLevel::kInfo);
  } else if (auto level = carebroker::LogLevelFromName(config->log().level()); level.ok()) {
    carebroker::SetLogLevel(*level);
  }
  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  auto connect = carebroker::Connect::Start(*config);
  if (!connect.ok()) {
    carebroker::Log(carebroker::LogLevel::kError, "connect.start_failed").Msg(connect.status().message());
    return 1;
  }
  {
    carebroker::LogEvent started(carebroker::LogLevel::kInfo, "connect.started");
    started.Str("broker", config->broker().target());
    if ((*connect)->mllp_port() != 0) {
      started.Int("mllp_port", (*connect)->mllp_port())
          .Msg(absl::StrCat("MLLP on port ", (*connect)->mllp_port()));
    }
  }
  int sig = 0;
  sigwait(&stop, &sig);
  (*connect)->Stop();
  carebroker::Log(carebroker::LogLevel::kInfo, "connect.stopped").Int("signal", sig);
  return 0;
}
