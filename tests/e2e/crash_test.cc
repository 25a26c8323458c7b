// Crash test: the built carebroker binary under bounded load is killed with
// SIGKILL at several points, restarted on the same data folder, and every
// message whose Send was confirmed must still be there (trackable) and be
// delivered at least once across the rounds.
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
#include "carebroker/v1/exchange.grpc.pb.h"
#include "tests/e2e/broker_process.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;
using testing::BrokerProcess;

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* pki = std::getenv("CB_TEST_PKI");
    ASSERT_TRUE(pki) << "run through ctest";
    pki_ = pki;
    dir_ = fs::temp_directory_path() / absl::StrCat("cb-crash-", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const int port = testing::FreePort();
    std::ofstream(dir_ / "carebroker.yaml") << absl::StrCat(
        "listen: 127.0.0.1:", port, "\nmetrics: {listen: \"127.0.0.1:0\"}\ndata_dir: ", (dir_ / "data").string(), "\ntls:\n  cert: ", pki_,
        "/server.crt\n  key: ", pki_, "/server.key\n  ca: ", pki_, "/ca.crt\n  crl: ", pki_, "/crl.pem\n",
        "organisations:\n  - {ods: RR8, name: Leeds, kind: nhs_trust}\n"
        "  - {ods: \"503\", name: Lincolnshire, kind: local_authority}\n",
        "policy: {agreements_dir: ", std::getenv("CB_SOURCE_DIR"), "/tests/agreements}\n",
        "audit: {signing_key: ", pki_, "/audit-signing.key, subject_key: ", pki_, "/audit-subject.key}\n");
    broker_ = std::make_unique<BrokerProcess>((dir_ / "carebroker.yaml").string(), (dir_ / "broker.log").string(), port);
  }
  void TearDown() override {
    broker_.reset();
    fs::remove_all(dir_);
  }

  void StartServer() { broker_->Start(); }
  void Kill() { broker_->Kill(); }
  std::shared_ptr<grpc::Channel> Channel(const std::string& who) { return broker_->Channel(who); }

  // Streams up to `count` sends; kills the server once `kill_after`
  // receipts have arrived (while more are in flight). Returns confirmed ids.
  std::vector<std::string> SendUntilKilled(int round, int count, int kill_after) {
    return testing::SendStreamed(*broker_, round, count, 2048, [&](size_t confirmed) {
      if (broker_->running() && static_cast<int>(confirmed) >= kill_after) Kill();
    });
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

  fs::path dir_;
  std::string pki_;
  std::unique_ptr<BrokerProcess> broker_;
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
    Kill();  // the stream finished before the kill point
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
