// Two broker replicas (the built binary, twice) on one PostgreSQL database:
// senders on replica A, a receiver on replica B. A is killed with SIGKILL in
// the middle of a send stream and B in the middle of receiving; each is
// started again. Every confirmed send must be trackable and delivered, every
// confirmed acknowledgement must hold, nothing acknowledged may come back,
// and the audit log (written by both) must verify.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "broker/cli/audit/audit_cli.h"
#include "carebroker/v1/exchange.grpc.pb.h"
#include "tests/e2e/broker_process.h"
#include "tests/pg/pg_testing.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;
using testing::BrokerProcess;

// Receives on one replica and acknowledges with the unary Ack, whose answer
// confirms the acknowledgement (then on the stream, which frees its
// in-flight slots); reconnects whenever the stream breaks.
class Receiver {
 public:
  explicit Receiver(const BrokerProcess& broker) : broker_(broker) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Receiver() { Stop(); }

  void Stop() {
    {
      absl::MutexLock l(&mu_);
      stop_ = true;
      if (ctx_ != nullptr) ctx_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }

  size_t received() const {
    absl::MutexLock l(&mu_);
    return received_.size();
  }
  bool HasAll(const std::vector<std::string>& ids) const {
    absl::MutexLock l(&mu_);
    for (const auto& id : ids) {
      if (!received_.contains(id)) return false;
    }
    return true;
  }
  absl::flat_hash_set<std::string> received_ids() const {
    absl::MutexLock l(&mu_);
    return received_;
  }
  absl::flat_hash_set<std::string> acked() const {
    absl::MutexLock l(&mu_);
    return acked_;
  }
  // Deliveries of a message after its acknowledgement was confirmed.
  int redelivered_after_ack() const {
    absl::MutexLock l(&mu_);
    return redelivered_after_ack_;
  }

 private:
  void Run() {
    while (true) {
      grpc::ClientContext ctx;
      {
        absl::MutexLock l(&mu_);
        if (stop_) return;
        ctx_ = &ctx;
      }
      auto channel = broker_.Channel("503");
      auto stub = v1::Exchange::NewStub(channel);
      auto stream = stub->Receive(&ctx);
      v1::ReceiveRequest open;
      open.mutable_open()->set_max_in_flight(100);
      stream->Write(open);
      v1::DeliveryBatch batch;
      while (stream->Read(&batch)) {
        v1::AckRequest ack;
        {
          absl::MutexLock l(&mu_);
          for (const auto& d : batch.deliveries()) {
            if (acked_.contains(d.message_id())) ++redelivered_after_ack_;
            received_.insert(d.message_id());
            ack.add_message_ids(d.message_id());
          }
        }
        grpc::ClientContext ack_ctx;
        ack_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        v1::AckResponse resp;
        if (stub->Ack(&ack_ctx, ack, &resp).ok()) {
          absl::MutexLock l(&mu_);
          for (const auto& id : resp.acknowledged()) acked_.insert(id);
        }
        // The stream's own acks free its in-flight slots.
        for (const auto& id : ack.message_ids()) {
          v1::ReceiveRequest r;
          r.set_ack(id);
          stream->Write(r);
        }
      }
      stream->Finish();
      {
        absl::MutexLock l(&mu_);
        ctx_ = nullptr;
        if (stop_) return;
      }
      absl::SleepFor(absl::Milliseconds(200));  // the replica is restarting
    }
  }

  const BrokerProcess& broker_;
  std::thread thread_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::flat_hash_set<std::string> received_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> acked_ ABSL_GUARDED_BY(mu_);
  int redelivered_after_ack_ ABSL_GUARDED_BY(mu_) = 0;
};

class ReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* pki = std::getenv("CB_TEST_PKI");
    ASSERT_TRUE(pki) << "run through ctest";
    pki_ = pki;
    db_ = testing::FreshPgDatabase("replicas");
    dir_ = fs::temp_directory_path() / absl::StrCat("cb-replicas-", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const char* name : {"a", "b"}) {
      const int port = testing::FreePort();
      const fs::path config = dir_ / absl::StrCat(name, ".yaml");
      std::ofstream(config) << absl::StrCat(
          "listen: 127.0.0.1:", port, "\nmetrics: {listen: \"127.0.0.1:0\"}\ndata_dir: ", (dir_ / name).string(), "\ntls:\n  cert: ", pki_,
          "/server.crt\n  key: ", pki_, "/server.key\n  ca: ", pki_, "/ca.crt\n  crl: ", pki_, "/crl.pem\n",
          "store:\n  postgres: {connection: \"", db_, "\", pool_size: 3}\n",
          "delivery: {visibility_timeout: 5s}\n",
          "organisations:\n  - {ods: RR8, name: Leeds, kind: nhs_trust}\n"
          "  - {ods: \"503\", name: Lincolnshire, kind: local_authority}\n",
          "policy: {agreements_dir: ", std::getenv("CB_SOURCE_DIR"), "/tests/agreements}\n",
          "audit: {signing_key: ", pki_, "/audit-signing.key, subject_key: ", pki_, "/audit-subject.key}\n");
      replicas_.push_back(
          std::make_unique<BrokerProcess>(config.string(), (dir_ / absl::StrCat(name, ".log")).string(), port));
    }
  }
  void TearDown() override {
    replicas_.clear();
    fs::remove_all(dir_);
  }

  BrokerProcess& a() { return *replicas_[0]; }
  BrokerProcess& b() { return *replicas_[1]; }

  // Streams `count` sends to replica A; `at(confirmed)` runs after each
  // answer (to kill a replica mid-stream). Returns the confirmed ids.
  std::vector<std::string> Send(int round, int count, const std::function<void(size_t)>& at) {
    return testing::SendStreamed(a(), round, count, 1024, at);
  }

  std::string pki_, db_;
  fs::path dir_;
  std::vector<std::unique_ptr<BrokerProcess>> replicas_;
};

TEST_F(ReplicaTest, KillNineEitherReplicaMidStreamLosesNothingAcknowledged) {
  a().Start();
  b().Start();
  Receiver receiver(b());

  // Round 1: replica A dies with sends in flight, and comes back.
  std::vector<std::string> confirmed = Send(1, 1500, [&](size_t n) {
    if (n >= 500 && a().running()) a().Kill();
  });
  EXPECT_GE(confirmed.size(), 500u);
  a().Start();

  // Round 2: replica B dies while it delivers, and comes back; sends go on.
  const size_t received_before = receiver.received();
  bool b_killed = false;
  auto round2 = Send(2, 1500, [&](size_t n) {
    if (!b_killed && n >= 600 && receiver.received() > received_before) {
      b().Kill();
      b_killed = true;
      b().Start();
    }
  });
  EXPECT_TRUE(b_killed);
  EXPECT_EQ(round2.size(), 1500u) << "replica A stayed up for round 2";
  confirmed.insert(confirmed.end(), round2.begin(), round2.end());

  // Every confirmed send is delivered on B (redeliveries of what the dead
  // B had claimed come after the visibility timeout). Bounded wait.
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  while (!receiver.HasAll(confirmed) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(200));
  absl::SleepFor(absl::Seconds(1));  // the last acks
  receiver.Stop();

  const auto received = receiver.received_ids();
  int undelivered = 0;
  for (const auto& id : confirmed) undelivered += received.contains(id) ? 0 : 1;
  EXPECT_EQ(undelivered, 0) << "of " << confirmed.size() << " confirmed sends";
  EXPECT_EQ(receiver.redelivered_after_ack(), 0) << "a message came back after its acknowledgement was confirmed";

  // Tracked through either replica: every confirmed send exists, and every
  // confirmed acknowledgement holds.
  const auto acked = receiver.acked();
  EXPECT_GT(acked.size(), confirmed.size() / 2);
  auto on_a = v1::Exchange::NewStub(a().Channel("RR8"));
  int missing = 0, not_acked = 0;
  for (const auto& id : confirmed) {
    grpc::ClientContext ctx;
    v1::TrackRequest req;
    req.set_message_id(id);
    v1::TrackResponse resp;
    if (!on_a->Track(&ctx, req, &resp).ok()) {
      ++missing;
    } else if (acked.contains(id) && resp.status() != v1::MESSAGE_STATUS_ACKNOWLEDGED) {
      ++not_acked;
    }
  }
  EXPECT_EQ(missing, 0) << "of " << confirmed.size();
  EXPECT_EQ(not_acked, 0) << "of " << acked.size() << " confirmed acknowledgements";
  std::cout << "fault kill-9 (two replicas on PostgreSQL, each killed once mid-stream): acknowledged "
            << confirmed.size() << ", lost " << undelivered + missing << ", back after a confirmed ack "
            << receiver.redelivered_after_ack() << "\n";

  // One audit log for both replicas: stop them cleanly (each signs a last
  // head) and verify it offline with only the public key.
  a().Terminate();
  b().Terminate();
  std::vector<std::string> args = {"carebroker-audit", "--store", db_, "--public-key", pki_ + "/audit-signing.pub",
                                   "verify"};
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  std::ostringstream out, err;
  EXPECT_EQ(RunAudit(static_cast<int>(argv.size()), argv.data(), out, err), 0) << out.str() << err.str();
  EXPECT_NE(out.str().find("intact"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace carebroker
