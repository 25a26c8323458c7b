#include "tests/e2e/broker_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "broker/client/client.h"
#include "carebroker/v1/exchange.grpc.pb.h"

extern char** environ;

namespace carebroker::testing {

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

void BrokerProcess::Spawn() {
  const char* bin = std::getenv("CB_BINARY_DIR");
  ASSERT_NE(bin, nullptr) << "run through ctest";
  const std::string binary = (std::filesystem::path(bin) / "broker/carebroker").string();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  std::string b = binary;
  char* argv[] = {b.data(), const_cast<char*>("--config"), config_.data(), nullptr};
  ASSERT_EQ(posix_spawn(&pid_, b.c_str(), &fa, nullptr, argv, environ), 0);
  posix_spawn_file_actions_destroy(&fa);
}

void BrokerProcess::Start() {
  Spawn();
  ASSERT_TRUE(Channel("RR8")->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30)))
      << "broker did not come up; see " << log_;
}

bool BrokerProcess::StartOnce(std::string* error) {
  const auto log_size = std::filesystem::exists(log_) ? std::filesystem::file_size(log_) : 0;
  Spawn();
  auto channel = Channel("RR8");
  for (int i = 0; i < 300; ++i) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      std::ifstream in(log_);
      in.seekg(static_cast<std::streamoff>(log_size));
      error->assign(std::istreambuf_iterator<char>(in), {});
      return false;
    }
    if (channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::milliseconds(100))) return true;
  }
  ADD_FAILURE() << "broker neither came up nor exited in 30 s; see " << log_;
  return false;
}

void BrokerProcess::Kill() { Signal(SIGKILL); }
void BrokerProcess::Terminate() { Signal(SIGTERM); }

void BrokerProcess::Signal(int sig) {
  if (pid_ <= 0) return;
  ::kill(pid_, sig);
  int st = 0;
  ::waitpid(pid_, &st, 0);
  pid_ = -1;
}

std::shared_ptr<grpc::Channel> BrokerProcess::Channel(const std::string& who) const {
  const std::string pki = std::getenv("CB_TEST_PKI");
  auto ch = MakeChannel(ClientTls{absl::StrCat("127.0.0.1:", port_), absl::StrCat(pki, "/", who, ".crt"),
                                  absl::StrCat(pki, "/", who, ".key"), absl::StrCat(pki, "/ca.crt")});
  EXPECT_TRUE(ch.ok()) << ch.status();
  return *ch;
}

std::string BrokerConfig(int port, const std::string& data_dir, const std::string& extra) {
  const std::string pki = std::getenv("CB_TEST_PKI");
  return absl::StrCat("listen: 127.0.0.1:", port, "\nmetrics: {listen: \"127.0.0.1:0\"}\ndata_dir: ", data_dir,
                      "\ntls:\n  cert: ", pki, "/server.crt\n  key: ", pki, "/server.key\n  ca: ", pki,
                      "/ca.crt\n  crl: ", pki, "/crl.pem\n",
                      "organisations:\n  - {ods: RR8, name: Leeds, kind: nhs_trust}\n"
                      "  - {ods: \"503\", name: Lincolnshire, kind: local_authority}\n",
                      "policy: {agreements_dir: ", std::getenv("CB_SOURCE_DIR"), "/tests/agreements}\n",
                      "audit: {signing_key: ", pki, "/audit-signing.key, subject_key: ", pki, "/audit-subject.key}\n",
                      extra);
}

std::vector<std::string> Drain(const BrokerProcess& broker, const std::string& who, int limit) {
  auto stub = v1::Exchange::NewStub(broker.Channel(who));
  grpc::ClientContext ctx;
  auto stream = stub->Receive(&ctx);
  v1::ReceiveRequest open;
  open.mutable_open()->set_max_in_flight(200);
  stream->Write(open);
  std::vector<std::string> got;
  absl::Mutex mu;
  bool quiet = false;
  std::atomic<int64_t> last_ms{absl::ToUnixMillis(absl::Now())};
  std::thread watchdog([&] {
    absl::MutexLock l(&mu);
    while (!quiet) {
      mu.AwaitWithTimeout(absl::Condition(&quiet), absl::Milliseconds(200));
      if (absl::ToUnixMillis(absl::Now()) - last_ms.load() > 1500) {
        quiet = true;
        ctx.TryCancel();
      }
    }
  });
  v1::DeliveryBatch batch;
  while (static_cast<int>(got.size()) < limit && stream->Read(&batch)) {
    last_ms = absl::ToUnixMillis(absl::Now());
    for (const auto& d : batch.deliveries()) {
      got.push_back(d.message_id());
      v1::ReceiveRequest ack;
      ack.set_ack(d.message_id());
      stream->Write(ack);
    }
  }
  {
    absl::MutexLock l(&mu);
    quiet = true;
  }
  watchdog.join();
  ctx.TryCancel();
  stream->Finish();
  return got;
}

std::vector<std::string> SendStreamed(const BrokerProcess& broker, int round, int count, size_t payload_bytes,
                                      const std::function<void(size_t confirmed)>& on_answer) {
  auto stub = v1::Exchange::NewStub(broker.Channel("RR8"));
  grpc::ClientContext ctx;
  auto stream = stub->SendStream(&ctx);
  std::thread writer([&] {
    for (int i = 0; i < count; ++i) {
      v1::SendRequest r;
      r.set_recipient("503");
      r.set_workflow("HOSPITAL_DISCHARGE");
      r.set_purpose("direct-care");
      r.set_idempotency_key(absl::StrCat("round", round, "-", i));
      r.set_content_type("application/json");
      r.set_payload(std::string(payload_bytes, static_cast<char>('a' + (i % 26))));
      if (!stream->Write(r)) return;
    }
    stream->WritesDone();
  });
  std::vector<std::string> confirmed;
  v1::SendStreamResponse resp;
  while (stream->Read(&resp)) {
    for (const auto& result : resp.results()) {
      if (result.has_receipt()) confirmed.push_back(result.receipt().message_id());
    }
    on_answer(confirmed.size());
  }
  writer.join();
  stream->Finish();
  return confirmed;
}

}  // namespace carebroker::testing
