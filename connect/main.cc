// carebroker-connect --config FILE: the edge process at an agency (see connect.h).
#include <pthread.h>

#include <csignal>
#include <iostream>

#include <CLI/CLI.hpp>

#include "connect/connect.h"

int main(int argc, char** argv) {
  CLI::App app{"carebroker-connect: HL7 v2 over MLLP into carebroker, and carebroker's messages out to a folder or an MLLP peer"};
  std::string config_path;
  app.add_option("--config", config_path, "YAML config (deploy/config/connect.yaml)")->required();
  CLI11_PARSE(app, argc, argv);
  auto config = carebroker::LoadConnectConfig(config_path);
  if (!config.ok()) {
    std::cerr << "carebroker-connect: " << config.status().message() << "\n";
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
    std::cerr << "carebroker-connect: " << connect.status().message() << "\n";
    return 1;
  }
  if ((*connect)->mllp_port() != 0) std::cerr << "carebroker-connect: MLLP on port " << (*connect)->mllp_port() << "\n";
  int sig = 0;
  sigwait(&stop, &sig);
  (*connect)->Stop();
  std::cerr << "carebroker-connect: stopped\n";
  return 0;
}
