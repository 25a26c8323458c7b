// Two brokers in this process on one PostgreSQL database, through their
// real gRPC services: a message sent to one is received from the other,
// consent recorded on one decides sends on the other, and proofs from one
// verify against the tree heads the other signed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "audit/merkle.h"
#include "broker/mesh/auth.h"
#include "broker/client/client.h"
#include "carebroker/v1/audit.grpc.pb.h"
#include "carebroker/v1/consent.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/pg/pg_testing.h"

namespace carebroker::testing {
namespace {

namespace fs = std::filesystem;

// Retries `attempt` (bounded) until it holds: other replicas hear of a
// commit through a notification, a moment after it.
bool Eventually(const std::function<bool()>& attempt) {
  for (int i = 0; i < 200; ++i) {
    if (attempt()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

class PgBrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(std::getenv("CB_PG_CA"), nullptr) << "run through tests/run.sh (tests/pg.sh exports CB_PG_CA)";
    dir_ = TempDir("pg-brokers");
    const std::string db = FreshPgDatabase("brokers");
    for (const auto& [file, value] : {std::pair{"x26.key", std::string(32, 'n')}, std::pair{"mesh-secret", std::string("s3cret")},
                                      std::pair{"RR8HC001.pw", std::string("pw")}}) {
      std::ofstream(fs::path(dir_) / file) << value;
      fs::permissions(fs::path(dir_) / file, fs::perms::owner_read | fs::perms::owner_write);
    }
    for (const char* name : {"a", "b"}) {
      const std::string extra = absl::StrCat(
          "store:\n  postgres: {connection: \"", db, "\"",
          // Replica b reaches the database over TLS, the server proven.
          std::string(name) == "b" ? absl::StrCat(", sslmode: verify-full, sslrootcert: ", std::getenv("CB_PG_CA")) : "",
          "}\n", "policy:\n  agreements_dir: ", std::getenv("CB_SOURCE_DIR"),
          "/deploy/agreements\n  pseudonym_keys: [{organisation: X26, file: ", dir_, "/x26.key}]\n",
          "audit: {signing_key: ", PkiDir(), "/audit-signing.key, subject_key: ", PkiDir(),
          "/audit-subject.key, tree_head_every: 4}\n",
          // The MESH front door on each replica, one mailbox.
          "mesh:\n  listen: \"127.0.0.1:0\"\n  shared_secret_file: ", dir_, "/mesh-secret\n",
          "  mailboxes: [{id: RR8HC001, organisation: RR8, password_file: ", dir_, "/RR8HC001.pw}]\n");
      brokers_.push_back(StartBroker(ConfigYaml(absl::StrCat(dir_, "/", name), extra), &SystemClock::Get()));
      ASSERT_NE(brokers_.back(), nullptr);
    }
  }

  Broker& a() { return *brokers_[0]; }
  Broker& b() { return *brokers_[1]; }

  std::string dir_;
  std::vector<std::unique_ptr<Broker>> brokers_;
};

TEST_F(PgBrokerTest, AMeshTokenAcceptedByOneReplicaIsRefusedByTheOther) {
  const std::string ts = absl::FormatTime("%Y%m%d%H%M", absl::Now(), absl::UTCTimeZone());
  const std::string nonce = absl::StrCat("replica-test-", ::getpid());
  const std::string token = absl::StrCat("authorization: NHSMESH RR8HC001:", nonce, ":1:", ts, ":",
                                         mesh::TokenHmac("s3cret", "RR8HC001", nonce, "1", "pw", ts));
  HttpsReply on_a = HttpsCall(a().mesh_port(), "POST", "/messageexchange/RR8HC001", "RR8", {token});
  EXPECT_EQ(on_a.status, 200) << on_a.body;
  HttpsReply on_b = HttpsCall(b().mesh_port(), "POST", "/messageexchange/RR8HC001", "RR8", {token});
  EXPECT_EQ(on_b.status, 403);
  EXPECT_NE(on_b.body.find("MESH_TOKEN_REUSED"), std::string::npos) << on_b.body;
}

TEST_F(PgBrokerTest, SentToOneReplicaReceivedFromTheOther) {
  auto council_on_b = StubAs(b(), "503");
  Receiver rx(*council_on_b, 10);
  auto trust_on_a = StubAs(a(), "RR8");
  v1::SendReceipt receipt;
  ASSERT_TRUE(Call(&v1::Exchange::Stub::Send, *trust_on_a, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care"),
                   &receipt)
                  .ok());
  auto got = rx.Next();
  ASSERT_TRUE(got.has_value()) << "the waiting stream on B was not woken";
  EXPECT_EQ(got->message_id(), receipt.message_id());
  ASSERT_TRUE(rx.Ack(got->message_id()));
  // Tracked as acknowledged through the sender's replica.
  ASSERT_TRUE(Eventually([&] {
    v1::TrackRequest tr;
    tr.set_message_id(receipt.message_id());
    v1::TrackResponse t;
    return Call(&v1::Exchange::Stub::Track, *trust_on_a, tr, &t).ok() &&
           t.status() == v1::MESSAGE_STATUS_ACKNOWLEDGED;
  }));
  // The pool (2 connections by default) and the commit latency, as metrics.
  const std::string text = HttpCall(a().metrics_port(), "/metrics").body;
  EXPECT_NE(text.find("carebroker_store_connections{state=\"up\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("carebroker_store_connections{state=\"down\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("carebroker_store_commit_seconds_count "), std::string::npos);
  EXPECT_EQ(text.find("carebroker_store_commit_seconds_count 0\n"), std::string::npos) << "the send committed on a";
}

TEST_F(PgBrokerTest, ConsentRecordedOnOneReplicaDecidesSendsOnTheOther) {
  auto gp_on_a = v1::Consent::NewStub(ChannelAs(a(), "Y06601"));
  v1::RecordRequest req;
  req.set_nhs_number(kSyntheticNhs);
  req.set_kind(v1::DIRECTIVE_KIND_DISSENT);
  req.set_purpose("direct-care");
  req.set_source("GP consultation");
  req.set_recorded_by("Dr Synthetic");
  v1::Directive d;
  ASSERT_TRUE(Call(&v1::Consent::Stub::Record, *gp_on_a, req, &d).ok());

  // B's book takes it in (its Get reads the book it decides with)...
  auto gp_on_b = v1::Consent::NewStub(ChannelAs(b(), "Y06601"));
  ASSERT_TRUE(Eventually([&] {
    v1::GetConsentRequest g;
    g.set_nhs_number(kSyntheticNhs);
    v1::ConsentState st;
    return Call(&v1::Consent::Stub::Get, *gp_on_b, g, &st).ok() && st.standing_size() == 1 &&
           st.standing(0).id() == d.id();
  }));
  // ...and refuses the send.
  auto trust_on_b = StubAs(b(), "RR8");
  v1::SendReceipt receipt;
  grpc::Status s =
      Call(&v1::Exchange::Stub::Send, *trust_on_b, CareSend("503", "HOSPITAL_DISCHARGE", "direct-care"), &receipt);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorReason(s), "CONSENT_DISSENT");
}

TEST_F(PgBrokerTest, ProofsFromOneReplicaVerifyAgainstHeadsTheOtherSigned) {
  auto trust_on_a = StubAs(a(), "RR8");
  auto trust_on_b = StubAs(b(), "RR8");
  for (int i = 0; i < 6; ++i) {  // both replicas write entries
    v1::SendReceipt r;
    ASSERT_TRUE(Call(&v1::Exchange::Stub::Send, i % 2 == 0 ? *trust_on_a : *trust_on_b,
                     CareSend("503", "HOSPITAL_DISCHARGE", "direct-care"), &r)
                    .ok());
  }
  auto ig_on_a = v1::Audit::NewStub(ChannelAs(a(), "ig-officer"));
  auto ig_on_b = v1::Audit::NewStub(ChannelAs(b(), "ig-officer"));
  v1::SignedTreeHead head_a, head_b;
  ASSERT_TRUE(Call(&v1::Audit::Stub::GetTreeHead, *ig_on_a, v1::GetTreeHeadRequest(), &head_a).ok());
  ASSERT_TRUE(Call(&v1::Audit::Stub::GetTreeHead, *ig_on_b, v1::GetTreeHeadRequest(), &head_b).ok());
  ASSERT_GT(head_a.tree_size(), 4u);
  audit::Hash root_a, root_b;
  ASSERT_TRUE(audit::HashFromBytes(head_a.root_hash(), &root_a));
  ASSERT_TRUE(audit::HashFromBytes(head_b.root_hash(), &root_b));

  // B proves the first and the last entry of A's head (once B has followed
  // A's entries that far).
  for (uint64_t index : {uint64_t{0}, head_a.tree_size() - 1}) {
    v1::InclusionProof p;
    ASSERT_TRUE(Eventually([&] {
      v1::InclusionRequest req;
      req.set_index(index);
      req.set_tree_size(head_a.tree_size());
      return Call(&v1::Audit::Stub::ProveInclusion, *ig_on_b, req, &p).ok();
    })) << "entry " << index;
    audit::Hash leaf;
    ASSERT_TRUE(audit::HashFromBytes(p.leaf_hash(), &leaf));
    std::vector<audit::Hash> path(p.path_size());
    for (int k = 0; k < p.path_size(); ++k) ASSERT_TRUE(audit::HashFromBytes(p.path(k), &path[k]));
    EXPECT_TRUE(audit::VerifyInclusion(leaf, index, head_a.tree_size(), path, root_a)) << "entry " << index;
  }

  // The two replicas' heads are consistent: one log, one order.
  const bool a_first = head_a.tree_size() <= head_b.tree_size();
  const auto& small = a_first ? head_a : head_b;
  const auto& large = a_first ? head_b : head_a;
  v1::ConsistencyProof c;
  ASSERT_TRUE(Eventually([&] {
    v1::ConsistencyRequest req;
    req.set_first(small.tree_size());
    req.set_second(large.tree_size());
    return Call(&v1::Audit::Stub::ProveConsistency, a_first ? *ig_on_a : *ig_on_b, req, &c).ok();
  }));
  std::vector<audit::Hash> path(c.path_size());
  for (int k = 0; k < c.path_size(); ++k) ASSERT_TRUE(audit::HashFromBytes(c.path(k), &path[k]));
  EXPECT_TRUE(audit::VerifyConsistency(small.tree_size(), large.tree_size(), a_first ? root_a : root_b,
                                       a_first ? root_b : root_a, path));
}

}  // namespace
}  // namespace carebroker::testing
