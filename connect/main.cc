// carebroker-connect --config FILE: the edge process at an agency (see connect.h).
#include <pthread.h>

#include <csignal>

#include <CLI/CLI.hpp>

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
    carebroker::LogLine(config.status().message());
    return 2;
  }
  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  auto connect = carebroker::Connect::Start(*config);
  if (!connect.ok()) {
    carebroker::LogLine(connect.status().message());
    return 1;
  }
  if ((*connect)->mllp_port() != 0) carebroker::Logf("MLLP on port %d", (*connect)->mllp_port());
  int sig = 0;
  sigwait(&stop, &sig);
  (*connect)->Stop();
  carebroker::LogLine("stopped");
  return 0;
}
