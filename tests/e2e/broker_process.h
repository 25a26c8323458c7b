// The built carebroker binary as a child process, for end-to-end tests that
// kill it with SIGKILL and start it again.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

namespace carebroker::testing {

// A loopback port free now (the broker binds it shortly after).
int FreePort();

class BrokerProcess {
 public:
  // `config` is the YAML file; stderr goes to `log`.
  BrokerProcess(std::string config, std::string log, int port) : config_(config), log_(log), port_(port) {}
  ~BrokerProcess() { Kill(); }

  // Starts the binary and waits (up to 30 s) until it serves RR8's certificate.
  // Fails the test when it does not come up.
  void Start();
  // Starts the binary and waits (up to 30 s) until it serves, true, or
  // exits, false with what it wrote to its log meanwhile in `error`.
  bool StartOnce(std::string* error);
  // SIGKILL, then reaps it. Nothing when it is not running.
  void Kill();
  // SIGTERM (a clean stop), then reaps it.
  void Terminate();
  bool running() const { return pid_ > 0; }

  int port() const { return port_; }
  const std::string& log() const { return log_; }
  // A channel to it with the dev PKI's certificate for `who` (e.g. "RR8").
  std::shared_ptr<grpc::Channel> Channel(const std::string& who) const;

 private:
  void Spawn();
  void Signal(int sig);
  std::string config_, log_;
  int port_;
  pid_t pid_ = -1;
};

// A config for the binary: `port` on loopback, the data folder, the dev
// PKI, RR8 (an NHS trust) and 503 (a council), tests/agreements, and `extra`
// appended.
std::string BrokerConfig(int port, const std::string& data_dir, const std::string& extra = "");

// Receives as `who` and acks until `limit` messages or a quiet 1.5 s; the
// ids received, in order (a redelivery appears again).
std::vector<std::string> Drain(const BrokerProcess& broker, const std::string& who, int limit);

// Streams `count` sends from RR8 to 503 through one SendStream to `broker`
// (idempotency keys "round<round>-<i>", payloads of `payload_bytes`);
// `on_answer(confirmed so far)` runs after each answer, e.g. to kill a broker
// mid-stream. Returns the ids of the confirmed sends.
std::vector<std::string> SendStreamed(const BrokerProcess& broker, int round, int count, size_t payload_bytes,
                                      const std::function<void(size_t confirmed)>& on_answer);

}  // namespace carebroker::testing
