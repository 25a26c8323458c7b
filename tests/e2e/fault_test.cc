// Storage faults under the built binary: its data folder on a small tmpfs
// made for the test (root only: it mounts), filled until sends are refused,
// then given space again; and the same folder turned read-only, then
// writable. Each must refuse sends with a clear status while the broker
// stays up and says it is not serving, lose or tear nothing acknowledged,
// and recover by itself. Each prints its figures (docs/reliability.md).
#include <sys/mount.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "broker/client/client.h"
#include "carebroker/v1/exchange.grpc.pb.h"
#include "tests/e2e/broker_process.h"
#include "tests/integration/harness.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;
using testing::BrokerProcess;

// grpc.health.v1: 1 SERVING, 2 NOT_SERVING, -1 no answer.
int Health(const BrokerProcess& b) { return testing::HealthStatus(b.Channel("RR8")); }

struct Sent {
  std::string id;       // set when acknowledged
  grpc::Status status;  // of the send
};

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "mounts a tmpfs: run as root (CI does)";
    dir_ = fs::temp_directory_path() / absl::StrCat("cb-fault-", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    // Small enough to fill in seconds, with room for the schema and the log.
    ASSERT_EQ(::mount("tmpfs", (dir_ / "data").c_str(), "tmpfs", 0, "size=8m"), 0) << std::strerror(errno);
    mounted_ = true;
    const int port = testing::FreePort();
    std::ofstream(dir_ / "carebroker.yaml") << testing::BrokerConfig(port, (dir_ / "data").string());
    broker_ = std::make_unique<BrokerProcess>((dir_ / "carebroker.yaml").string(), (dir_ / "broker.log").string(), port);
    broker_->Start();
  }
  void TearDown() override {
    broker_.reset();
    if (mounted_) ::umount2((dir_ / "data").c_str(), MNT_DETACH);
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  void Remount(const std::string& options) {
    ASSERT_EQ(::mount("tmpfs", (dir_ / "data").c_str(), "tmpfs", MS_REMOUNT | (options == "ro" ? MS_RDONLY : 0),
                      options == "ro" ? nullptr : options.c_str()),
              0)
        << options << ": " << std::strerror(errno);
  }

  // One unary send of `bytes` from RR8 to 503 (key "<tag>-<i>").
  Sent SendOne(const std::string& tag, int i, size_t bytes) {
    if (!stub_) stub_ = v1::Exchange::NewStub(broker_->Channel("RR8"));
    const v1::SendRequest r =
        testing::Req("503", absl::StrCat(tag, "-", i), std::string(bytes, static_cast<char>('a' + i % 26)));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::SendReceipt receipt;
    Sent out;
    out.status = stub_->Send(&ctx, r, &receipt);
    if (out.status.ok()) out.id = receipt.message_id();
    return out;
  }

  // Sends until `refusals` sends in a row are refused (bounded: `max` sends,
  // 60 s). The acknowledged ids; the refusals' statuses in `refused`.
  std::vector<std::string> SendUntilRefused(const std::string& tag, int max, size_t bytes,
                                            std::vector<grpc::Status>* refused) {
    std::vector<std::string> acked;
    int in_a_row = 0;
    const absl::Time until = absl::Now() + absl::Seconds(60);
    for (int i = 0; i < max && in_a_row < 5 && absl::Now() < until; ++i) {
      Sent s = SendOne(tag, i, bytes);
      if (s.status.ok()) {
        acked.push_back(s.id);
        in_a_row = 0;
      } else {
        refused->push_back(s.status);
        ++in_a_row;
      }
    }
    return acked;
  }

  // Sends one message a 100 ms until one is taken (up to 30 s).
  void UntilTaken(const std::string& tag, std::vector<std::string>* acked) {
    const absl::Time start = absl::Now();
    for (int i = 0; absl::Now() - start < absl::Seconds(30); ++i) {
      Sent s = SendOne(tag, i, 512);
      if (s.status.ok()) {
        acked->push_back(s.id);
        return;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    ADD_FAILURE() << "no send was taken within 30 s of the fault ending";
  }

  // Waits (up to 10 s) until the health check says `want`.
  bool HealthBecomes(int want) {
    for (int i = 0; i < 100; ++i) {
      if (Health(*broker_) == want) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  // Every acknowledged send delivered to 503, after a kill -9 and restart
  // (so what is on disk is what counts); prints the row.
  void CheckNothingLost(const std::string& fault, const std::vector<std::string>& acked, absl::Duration recovered) {
    broker_->Kill();
    broker_->Start();
    stub_.reset();
    const std::vector<std::string> got = testing::Drain(*broker_, "503", 100000);
    absl::flat_hash_map<std::string, int> times;
    for (const auto& id : got) ++times[id];
    int lost = 0, twice = 0;
    for (const auto& id : acked) {
      auto it = times.find(id);
      if (it == times.end()) {
        ++lost;
      } else if (it->second > 1) {
        ++twice;
      }
    }
    EXPECT_EQ(lost, 0) << "of " << acked.size() << " acknowledged";
    EXPECT_EQ(got.size(), acked.size()) << "delivered something never acknowledged, or twice";
    std::cout << "fault " << fault << ": acknowledged " << acked.size() << ", lost " << lost << ", delivered twice "
              << twice << ", recovered in " << absl::ToInt64Milliseconds(recovered) << " ms\n";
  }

  fs::path dir_;
  bool mounted_ = false;
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<v1::Exchange::Stub> stub_;
};

TEST_F(FaultTest, AFullDiskRefusesSendsAndRecoversWhenSpaceReturns) {
  std::vector<grpc::Status> refused;
  std::vector<std::string> acked = SendUntilRefused("fill", 2000, 16 << 10, &refused);
  ASSERT_FALSE(refused.empty()) << "8 MiB never filled";
  EXPECT_GT(acked.size(), 20u);
  for (const auto& s : refused) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << DescribeStatus(s);
    EXPECT_EQ(ErrorReason(s), "STORE_UNAVAILABLE") << DescribeStatus(s);
  }
  EXPECT_TRUE(HealthBecomes(2)) << "readiness still says serving on a full disk";
  EXPECT_TRUE(broker_->running());

  Remount("size=64m");
  const absl::Time freed = absl::Now();
  UntilTaken("after", &acked);
  EXPECT_TRUE(HealthBecomes(1));
  CheckNothingLost("disk-full", acked, absl::Now() - freed);  // sends taken and readiness serving
}

// The kernel will not turn a file system read-only while the broker has its
// files open for writing (remount: EBUSY), so the read-only case a broker
// meets is at start, after a host came up with the data folder's file
// system read-only: it must refuse to start, saying why, and start with
// everything acknowledged before once the folder is writable again.
TEST_F(FaultTest, AReadOnlyFolderAtStartIsRefusedAndNothingIsLost) {
  Remount("size=64m");
  std::vector<grpc::Status> refused;
  std::vector<std::string> acked = SendUntilRefused("before", 100, 2048, &refused);
  for (const auto& s : refused) ADD_FAILURE() << DescribeStatus(s);
  broker_->Terminate();
  Remount("ro");
  std::string error;
  EXPECT_FALSE(broker_->StartOnce(&error)) << "started on a read-only data folder";
  EXPECT_NE(error.find("DATA_DIR_UNAVAILABLE"), std::string::npos) << "[" << error << "]";
  Remount("rw");
  const absl::Time start = absl::Now();
  broker_->Start();
  UntilTaken("after", &acked);
  EXPECT_TRUE(HealthBecomes(1));
  CheckNothingLost("read-only at start", acked, absl::Now() - start);  // started, sends taken, serving
}

}  // namespace
}  // namespace carebroker
