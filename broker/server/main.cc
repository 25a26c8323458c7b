// carebroker: the broker server. See README.md and deploy/config/.
#include <malloc.h>

#include <csignal>
#include <cstdio>

#include "absl/synchronization/mutex.h"

#include <CLI/CLI.hpp>

#include "broker/config/config.h"
#include "broker/server/broker.h"
#include "core/log.h"
#include "core/status.h"

int main(int argc, char** argv) {
  // Debian's Abseil checks every Mutex acquisition for lock-order cycles;
  // lock order is reviewed and annotated instead, so skip the cost.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Keep freed heap instead of returning and re-requesting it from the
  // kernel on every burst of messages.
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  mallopt(M_TOP_PAD, 16 << 20);

  CLI::App app{"carebroker: consent-aware care-data broker (gRPC, mutual TLS)"};
  std::string config_path;
  carebroker::ConfigOverrides overrides;
  std::string listen, data_dir, metrics_listen, mesh_listen;
  app.add_option("--config", config_path, "YAML config file")->required();
  app.add_option("--listen", listen, "host:port to listen on (overrides listen)");
  app.add_option("--data-dir", data_dir, "folder for the embedded store (overrides data_dir)");
  app.add_option("--metrics-listen", metrics_listen, "host:port or off for /metrics and health (overrides metrics.listen)");
  app.add_option("--mesh-listen", mesh_listen, "host:port or off for the MESH front door (overrides mesh.listen)");
  CLI11_PARSE(app, argc, argv);
  if (!listen.empty()) overrides.listen = listen;
  if (!data_dir.empty()) overrides.data_dir = data_dir;
  if (!metrics_listen.empty()) overrides.metrics_listen = metrics_listen;
  if (!mesh_listen.empty()) overrides.mesh_listen = mesh_listen;

  auto config = carebroker::LoadConfig(config_path, overrides);
  if (!config.ok()) {
    carebroker::Log(carebroker::LogLevel::kError, "config.invalid").Msg(config.status().message());
    return 2;
  }
  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);  // reload (Broker::Reload)
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  carebroker::BrokerOptions options;
  options.reload_config = [config_path, overrides] { return carebroker::LoadConfig(config_path, overrides); };
  auto broker = carebroker::Broker::Start(*config, options);
  if (!broker.ok()) {
    carebroker::Log(carebroker::LogLevel::kError, "broker.start_failed")
        .Str("reason", carebroker::ReasonOf(broker.status()))
        .Msg(broker.status().message());
    return 1;
  }
  int sig = 0;
  while (sigwait(&stop, &sig) == 0 && sig == SIGHUP) (void)(*broker)->Reload("SIGHUP");
  carebroker::Log(carebroker::LogLevel::kInfo, "broker.stopping").Int("signal", sig);
  (*broker)->Shutdown();
  return 0;
}
