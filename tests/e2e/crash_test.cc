// Crash test: the built carebroker binary under bounded load is killed with
// SIGKILL at several points, restarted on the same data folder, and every
// message whose Send was confirmed must still be there (trackable) and be
// delivered at least once across the rounds.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "broker/cli/client.h"
#include "carebroker/v1/exchange.grpc.pb.h"

extern char** environ;

namespace carebroker {
namespace {

namespace fs = std::filesystem;

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

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("CB_BINARY_DIR");
    const char* pki = std::getenv("CB_TEST_PKI");
    ASSERT_TRUE(bin && pki) << "run through ctest";
    binary_ = fs::path(bin) / "broker/carebroker";
    pki_ = pki;
    dir_ = fs::temp_directory_path() / absl::StrCat("cb-crash-", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    port_ = FreePort();
    std::ofstream(dir_ / "carebroker.yaml") << absl::StrCat(
        "listen: 127.0.0.1:", port_, "\ndata_dir: ", (dir_ / "data").string(), "\ntls:\n  cert: ", pki_,
        "/server.crt\n  key: ", pki_, "/server.key\n  ca: ", pki_, "/ca.crt\n  crl: ", pki_, "/crl.pem\n",
        "organisations:\n  - {ods: RR8, name: Leeds, kind: nhs_trust}\n"
        "  - {ods: \"503\", name: Lincolnshire, kind: local_authority}\n",
        "policy: {agreements_dir: ", std::getenv("CB_SOURCE_DIR"), "/tests/agreements}\n",
        "audit: {signing_key: ", pki_, "/audit-signing.key, subject_key: ", pki_, "/audit-subject.key}\n");
  }
  void TearDown() override {
    if (pid_ > 0) Kill();
    fs::remove_all(dir_);
  }

  void StartServer() {
    const std::string config = (dir_ / "carebroker.yaml").string();
    const std::string log = (dir_ / "broker.log").string();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    std::string b = binary_.string();
    char* argv[] = {b.data(), const_cast<char*>("--config"), const_cast<char*>(config.c_str()), nullptr};
    ASSERT_EQ(posix_spawn(&pid_, b.c_str(), &fa, nullptr, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    auto ch = Channel("RR8");
    ASSERT_TRUE(ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20)))
        << "broker did not come up; see " << log;
  }

  void Kill() {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& who) {
    auto ch = MakeChannel(ClientTls{absl::StrCat("127.0.0.1:", port_), absl::StrCat(pki_, "/", who, ".crt"),
                                    absl::StrCat(pki_, "/", who, ".key"), absl::StrCat(pki_, "/ca.crt")});
    EXPECT_TRUE(ch.ok());
    return *ch;
  }

  // Streams up to `count` sends; kills the server once `kill_after`
  // receipts have arrived (while more are in flight). Returns confirmed ids.
  std::vector<std::string> SendUntilKilled(int round, int count, int kill_after) {
    auto stub = v1::Exchange::NewStub(Channel("RR8"));
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
        r.set_payload(std::string(2048, 'a' + (i % 26)));
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
      if (pid_ > 0 && static_cast<int>(confirmed.size()) >= kill_after) Kill();
    }
    writer.join();
    stream->Finish();
    return confirmed;
  }

  // Receives and acks until `limit` messages or a quiet second.
  std::vector<std::string> Drain(int limit) {
    auto stub = v1::Exchange::NewStub(Channel("503"));
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

  fs::path binary_, dir_;
  std::string pki_;
  int port_ = 0;
  pid_t pid_ = -1;
};

TEST_F(CrashTest, ConfirmedSendsSurviveKillNine) {
  std::vector<std::string> confirmed;
  absl::flat_hash_set<std::string> delivered;
  // Kill points: early in a stream, mid-stream, late in a long stream, and
  // during delivery (after a partial drain).
  const struct {
    int count, kill_after;
    bool drain_first;
  } rounds[] = {{400, 5, false}, {1500, 700, false}, {3000, 2500, false}, {800, 300, true}};
  for (int r = 0; r < 4; ++r) {
    StartServer();
    if (rounds[r].drain_first) {
      for (const auto& id : Drain(500)) delivered.insert(id);
    }
    auto got = SendUntilKilled(r, rounds[r].count, rounds[r].kill_after);
    EXPECT_GE(static_cast<int>(got.size()), rounds[r].kill_after) << "round " << r;
    confirmed.insert(confirmed.end(), got.begin(), got.end());
    if (pid_ > 0) Kill();  // the stream finished before the kill point
  }

  StartServer();
  // Every confirmed message is still known to the broker...
  auto stub = v1::Exchange::NewStub(Channel("RR8"));
  int missing = 0;
  for (const auto& id : confirmed) {
    grpc::ClientContext ctx;
    v1::TrackRequest req;
    req.set_message_id(id);
    v1::TrackResponse resp;
    if (!stub->Track(&ctx, req, &resp).ok()) ++missing;
  }
  EXPECT_EQ(missing, 0) << "of " << confirmed.size() << " confirmed sends";
  // ...and delivered at least once across all rounds.
  for (const auto& id : Drain(20000)) delivered.insert(id);
  int undelivered = 0;
  for (const auto& id : confirmed) undelivered += delivered.contains(id) ? 0 : 1;
  EXPECT_EQ(undelivered, 0) << "of " << confirmed.size() << " confirmed sends";
  EXPECT_GT(confirmed.size(), 3000u);
}

}  // namespace
}  // namespace carebroker
