// Several PostgreSQL stores on one database, as broker replicas use it:
// wake-ups cross replicas, the audit log and consent changes reach every
// replica in one order, claims never hand one message to two replicas, and
// an idempotency key raced on two replicas stores one message.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/ids.h"
#include "broker/store/pg_store.h"
#include "broker/store/store_sync.h"
#include "tests/pg/pg_testing.h"

namespace carebroker {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1795000000);

std::unique_ptr<Store> Open(const std::string& db) {
  auto s = OpenPgStore({.conninfo = db, .pool_size = 2});
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) std::abort();
  return *std::move(s);
}

NewMessage Message(const std::string& key = "", const std::string& payload = "{}") {
  static std::atomic<int> n{0};
  NewMessage m;
  m.id = NewMessageId(kT0);
  m.sender = OrgCode("RR8");
  m.recipient = OrgCode("503");
  m.workflow = "HOSPITAL_DISCHARGE";
  m.purpose = "direct-care";
  m.idempotency_key = key;
  m.content_type = "application/json";
  m.local_reference = absl::StrCat("ref-", n++);
  m.payload = payload;
  m.digest = Sha256(payload);
  m.accepted_at = kT0;
  m.expires_at = kT0 + absl::Hours(1);
  return m;
}

AuditRecord Entry(int i) {
  v1::AuditEntry e;
  e.set_detail(absl::StrCat("entry ", i));
  AuditRecord r;
  e.SerializeToString(&r.entry);
  r.at = kT0;
  return r;
}

// Waits (bounded) until `done` holds.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

TEST(PgReplicas, AnArrivalOnOneReplicaWakesTheOther) {
  const std::string db = testing::FreshPgDatabase("wake");
  auto a = Open(db), b = Open(db);
  absl::Mutex mu;
  std::vector<std::string> heard;
  b->SetArrivalListener([&](const OrgCode& org) {
    absl::MutexLock l(&mu);
    heard.push_back(org.str());
  });
  ASSERT_TRUE(AppendSync(*a, {Message()}).ok());
  // Only a notification can bring it: B reads nothing of arrivals itself.
  EXPECT_TRUE(Eventually([&] {
    absl::MutexLock l(&mu);
    return !heard.empty();
  }));
  absl::MutexLock l(&mu);
  ASSERT_FALSE(heard.empty());
  EXPECT_EQ(heard[0], "503");
}

// Collects what an audit listener hears, checking runs are contiguous.
struct Heard {
  absl::Mutex mu;
  std::vector<std::string> leaves;
  bool gap = false;
  Store::AuditListener Listener() {
    return [this](uint64_t first, const std::vector<std::string>& run) {
      absl::MutexLock l(&mu);
      if (first != leaves.size()) gap = true;
      leaves.insert(leaves.end(), run.begin(), run.end());
    };
  }
  size_t size() {
    absl::MutexLock l(&mu);
    return leaves.size();
  }
};

TEST(PgReplicas, EveryReplicaHearsTheWholeAuditLogInOneOrder) {
  const std::string db = testing::FreshPgDatabase("audit");
  auto a = Open(db), b = Open(db);
  Heard on_a, on_b;
  a->SetAuditListener(on_a.Listener());
  b->SetAuditListener(on_b.Listener());
  constexpr int kPerThread = 300;
  std::vector<std::thread> threads;
  for (Store* s : {a.get(), b.get(), a.get(), b.get()}) {
    threads.emplace_back([s] {
      for (int i = 0; i < kPerThread; i += 3) {
        ASSERT_TRUE(AppendAuditSync(*s, {Entry(i), Entry(i + 1), Entry(i + 2)}).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  const size_t total = 4 * kPerThread;
  ASSERT_TRUE(Eventually([&] { return on_a.size() == total && on_b.size() == total; }))
      << on_a.size() << " and " << on_b.size() << " of " << total;
  auto stored = ReadAuditSync(*a, {.from = 0, .max = 100000, .hashes_only = true});
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->size(), total) << "indexes are consecutive: none lost to a rolled-back append";
  for (size_t i = 0; i < total; ++i) {
    ASSERT_EQ((*stored)[i].index, i);
    ASSERT_EQ(on_a.leaves[i], (*stored)[i].leaf_hash) << i;
    ASSERT_EQ(on_b.leaves[i], (*stored)[i].leaf_hash) << i;
  }
  EXPECT_FALSE(on_a.gap);
  EXPECT_FALSE(on_b.gap);
}

TEST(PgReplicas, ConsentChangesReachEveryReplicaInSeqOrder) {
  const std::string db = testing::FreshPgDatabase("consent");
  auto a = Open(db), b = Open(db);
  struct Seen {
    absl::Mutex mu;
    std::vector<int64_t> seqs;
  } on_a, on_b;
  for (auto [store, seen] : {std::pair{a.get(), &on_a}, std::pair{b.get(), &on_b}}) {
    store->SetConsentListener([seen = seen](const v1::ConsentChange& c) {
      absl::MutexLock l(&seen->mu);
      seen->seqs.push_back(c.seq());
    });
  }
  constexpr int kPerThread = 40;
  std::vector<std::thread> threads;
  for (Store* s : {a.get(), b.get()}) {
    threads.emplace_back([s] {
      for (int i = 0; i < kPerThread; ++i) {
        v1::ConsentChange c;
        c.set_nhs_number("9434765919");
        c.set_national_opt_out(i % 2 == 0);
        auto stored = AppendConsentSync(*s, c, Entry(i));
        ASSERT_TRUE(stored.ok()) << stored.status();
        ASSERT_GT(stored->seq(), 0);
      }
    });
  }
  for (auto& t : threads) t.join();
  auto all = ReadConsentSync(*a, "");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u * kPerThread);
  std::vector<int64_t> stored;
  for (const auto& c : *all) stored.push_back(c.seq());
  for (auto* seen : {&on_a, &on_b}) {
    ASSERT_TRUE(Eventually([&] {
      absl::MutexLock l(&seen->mu);
      return seen->seqs.size() >= stored.size();
    }));
    absl::MutexLock l(&seen->mu);
    EXPECT_EQ(seen->seqs, stored) << "every change once, in the order stored";
  }
}

TEST(PgReplicas, ClaimsOnTwoReplicasNeverShareAMessage) {
  const std::string db = testing::FreshPgDatabase("claims");
  auto a = Open(db), b = Open(db);
  constexpr int kMessages = 600;
  for (int i = 0; i < kMessages; i += 100) {
    std::vector<NewMessage> batch;
    for (int k = 0; k < 100; ++k) batch.push_back(Message());
    ASSERT_TRUE(AppendSync(*a, std::move(batch)).ok());
  }
  std::vector<std::string> got[4];
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Store& s = t % 2 == 0 ? *a : *b;
      for (int round = 0; round < kMessages; ++round) {  // bounded
        auto r = ClaimSync(s, ClaimRequest{OrgCode("503"), 7, kT0, kT0 + absl::Minutes(5), ClaimToken(t + 1)});
        ASSERT_TRUE(r.ok()) << r.status();
        if (r->empty()) return;
        for (const auto& d : *r) got[t].push_back(d.id.str());
      }
    });
  }
  for (auto& th : threads) th.join();
  absl::flat_hash_set<std::string> all;
  size_t deliveries = 0;
  for (const auto& g : got) {
    deliveries += g.size();
    all.insert(g.begin(), g.end());
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kMessages)) << "every message claimed";
  EXPECT_EQ(deliveries, static_cast<size_t>(kMessages)) << "and none twice";
  EXPECT_FALSE(got[0].empty() && got[2].empty()) << "replica A claimed some";
  EXPECT_FALSE(got[1].empty() && got[3].empty()) << "replica B claimed some";
}

TEST(PgReplicas, AnIdempotencyKeyRacedOnTwoReplicasStoresOneMessage) {
  const std::string db = testing::FreshPgDatabase("idem");
  auto a = Open(db), b = Open(db);
  constexpr int kKeys = 200;
  std::vector<absl::StatusOr<AppendReceipt>> on_a, on_b;
  std::thread ta([&] {
    for (int i = 0; i < kKeys; ++i) on_a.push_back((*AppendSync(*a, {Message(absl::StrCat("k", i), "same")}))[0]);
  });
  std::thread tb([&] {
    for (int i = 0; i < kKeys; ++i) on_b.push_back((*AppendSync(*b, {Message(absl::StrCat("k", i), "same")}))[0]);
  });
  ta.join();
  tb.join();
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(on_a[i].ok()) << on_a[i].status();
    ASSERT_TRUE(on_b[i].ok()) << on_b[i].status();
    EXPECT_EQ(on_a[i]->id, on_b[i]->id) << "key " << i;
    EXPECT_NE(on_a[i]->duplicate, on_b[i]->duplicate) << "key " << i << ": exactly one stored it";
  }
  // A different payload under a raced key is refused on either replica.
  auto reused = AppendSync(*b, {Message("k0", "different")});
  ASSERT_TRUE(reused.ok());
  EXPECT_EQ((*reused)[0].status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(PgReplicas, AnOperationPostgresRefusesFailsAloneNotItsCommit) {
  const std::string db = testing::FreshPgDatabase("alone");
  auto s = OpenPgStore({.conninfo = db, .pool_size = 1});
  ASSERT_TRUE(s.ok()) << s.status();
  // PostgreSQL text cannot hold a NUL byte: that append fails, and the
  // appends queued with it (one worker: they share a transaction) are run
  // again without it.
  absl::Mutex mu;
  int ok = 0, unavailable = 0, answered = 0;
  constexpr int kAppends = 8;
  for (int i = 0; i < kAppends; ++i) {
    NewMessage m = Message();
    if (i == kAppends - 1) m.local_reference = std::string("bad\0ref", 7);
    (*s)->Append({std::move(m)}, [&](absl::StatusOr<std::vector<absl::StatusOr<AppendReceipt>>> r) {
      absl::MutexLock l(&mu);
      ++answered;
      if (r.ok()) ++ok;
      if (r.status().code() == absl::StatusCode::kUnavailable) ++unavailable;
    });
  }
  absl::MutexLock l(&mu);
  mu.AwaitWithTimeout(absl::Condition(+[](int* n) { return *n == kAppends; }, &answered), absl::Seconds(30));
  EXPECT_EQ(ok, kAppends - 1);
  EXPECT_EQ(unavailable, 1);
}

// Readiness: a database that stops taking writes (here made read-only, as
// a failover to a standby leaves it) is reported with the reason, and
// writable again once it is.
TEST(PgReplicas, CheckWritableSaysWhenTheDatabaseTakesNoWrites) {
  const std::string db = testing::FreshPgDatabase("readonly");
  auto a = Open(db);
  ASSERT_TRUE(CheckWritableSync(*a).ok());
  auto admin = pg::Connection::Open(db);
  ASSERT_TRUE(admin.ok()) << admin.status();
  auto cut_all = [&] {
    auto cut = (*admin)->Exec(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND "
        "pid <> pg_backend_pid()");
    ASSERT_TRUE(cut.ok()) << cut.status();
  };
  ASSERT_TRUE((*admin)->ExecScript("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', "
                                   "current_database()); END $$").ok());
  cut_all();
  ASSERT_TRUE(Eventually([&] {
    auto r = CheckWritableSync(*a);
    if (r.ok()) return false;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
    return absl::StrContains(r.status().message(), "read-only");
  })) << "the check did not notice";
  EXPECT_FALSE(AppendSync(*a, {Message()}).ok()) << "and writes are indeed refused";
  ASSERT_TRUE((*admin)->ExecScript("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', "
                                   "current_database()); END $$").ok());
  cut_all();
  ASSERT_TRUE(Eventually([&] { return CheckWritableSync(*a).ok(); }));
  EXPECT_TRUE(Eventually([&] { return AppendSync(*a, {Message()}).ok(); }));
}

TEST(PgReplicas, LostConnectionsAreOpenedAgainAndNotificationsResume) {
  const std::string db = testing::FreshPgDatabase("lost");
  auto a = Open(db), b = Open(db);
  absl::Mutex mu;
  int heard = 0;
  b->SetArrivalListener([&](const OrgCode&) {
    absl::MutexLock l(&mu);
    ++heard;
  });
  ASSERT_TRUE(AppendSync(*a, {Message()}).ok());
  // Every connection the stores hold is cut, as a database failover does.
  auto admin = pg::Connection::Open(db);
  ASSERT_TRUE(admin.ok()) << admin.status();
  auto cut = (*admin)->Exec(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND "
      "pid <> pg_backend_pid()");
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_GE(cut->Int(0, 0), 6) << "2 stores x (2 workers + 1 listener)";
  // An operation that meets a cut connection answers UNAVAILABLE; the
  // next ones run on a new connection.
  int unavailable = 0;
  ASSERT_TRUE(Eventually([&] {
    auto r = AppendSync(*a, {Message()});
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
      ++unavailable;
    }
    return r.ok();
  }));
  EXPECT_LE(unavailable, 2) << "one per worker connection at most";
  int b_unavailable = 0;
  ASSERT_TRUE(Eventually([&] {
    auto r = ReadConsentSync(*b, "");
    b_unavailable += r.ok() ? 0 : 1;
    return r.ok();
  })) << "b's workers reconnect too";
  EXPECT_LE(b_unavailable, 2);
  // b's listening connection is back: a's arrivals wake it again.
  {
    absl::MutexLock l(&mu);
    heard = 0;
  }
  ASSERT_TRUE(Eventually([&] {
    EXPECT_TRUE(AppendSync(*a, {Message()}).ok());
    absl::MutexLock l(&mu);
    return heard > 0;
  }));
}

TEST(PgReplicas, AnUnreachableDatabaseIsUnavailableAndNamesNoPassword) {
  auto s = OpenPgStore({.conninfo = "postgresql://carebroker:sekrit@127.0.0.1:1/none?connect_timeout=2"});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.status().message().find("sekrit"), std::string::npos) << s.status();
  auto bad_pool = OpenPgStore({.conninfo = "postgresql://127.0.0.1/x", .pool_size = 0});
  EXPECT_EQ(bad_pool.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace carebroker
