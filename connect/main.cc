// carebroker-connect --config FILE: the edge process at an agency (see connect.h).
#include <csignal>
#include <iostream>

#include <CLI/CLI.hpp>

#include "absl/synchronization/notification.h"
#include "connect/connect.h"

namespace {
absl::Notification* stop_requested = nullptr;
}

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
  auto connect = carebroker::Connect::Start(*config);
  if (!connect.ok()) {
    std::cerr << "carebroker-connect: " << connect.status().message() << "\n";
    return 1;
  }
  if ((*connect)->mllp_port() != 0) std::cerr << "carebroker-connect: MLLP on port " << (*connect)->mllp_port() << "\n";
  static absl::Notification stop;
  stop_requested = &stop;
  std::signal(SIGTERM, [](int) { stop_requested->Notify(); });
  std::signal(SIGINT, [](int) { stop_requested->Notify(); });
  stop.WaitForNotification();
  (*connect)->Stop();
  std::cerr << "carebroker-connect: stopped\n";
  return 0;
}
