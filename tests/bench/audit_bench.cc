// Audit log figures: how fast entries are made and appended durably, how long
// `verify` takes over a log of a million entries, and what an inclusion or
// consistency proof costs to make and to check. Prints Google Benchmark
// figures; nothing here is an assertion.
//
//   tests/run.sh   # builds build/ and the development keys in build/test-pki
//   build/tests/bench/audit_bench
//
// CB_TEST_PKI names the key folder (default build/test-pki). The one-million
// entry log is written once through the real SQLite store and AuditLog (tree
// heads every 1,000 entries, as configured by default) before it is timed;
// CB_BENCH_KEEP=1 keeps it, to time `carebroker-audit verify --store` on it.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <latch>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "audit/log.h"
#include "audit/verify.h"
#include "core/files.h"
#include "core/clock.h"
#include "broker/store/sqlite_store.h"
#include "broker/store/store_sync.h"

namespace carebroker::audit {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMillion = 1'000'000;

[[noreturn]] void Die(absl::string_view what) {
  std::cerr << "audit_bench: " << what << "\n";
  std::exit(2);
}

fs::path Dir() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / absl::StrCat("cb-audit-bench-", ::getpid());
    fs::remove_all(d);
    fs::create_directories(d / "agreements");
    return d;
  }();
  return dir;
}

// The audit section of a broker config, read from the development keys.
const AuditOptions& TheOptions() {
  static const AuditOptions* options = [] {
    const char* env = std::getenv("CB_TEST_PKI");
    const std::string pki = fs::absolute(env ? env : "build/test-pki").string();
    auto signing = ReadFileToString(pki + "/audit-signing.key", "signing key");
    auto subject = ReadFileToString(pki + "/audit-subject.key", "subject key");
    if (!signing.ok() || !subject.ok()) Die(pki + ": no development keys; run tests/run.sh first");
    return new AuditOptions{.signing_key_pem = *signing, .subject_key = *subject, .tree_head_every = 1000,
                            .tree_head_interval = absl::Seconds(60)};
  }();
  return *options;
}

// A send-accepted entry the size the broker writes (agreement, flow, legal
// basis, released and withheld paths, digest), for one of 10,000 people.
v1::AuditEntry Accepted(uint64_t i) {
  v1::AuditEntry e;
  e.mutable_at()->set_seconds(1'800'000'000 + static_cast<int64_t>(i / 100));
  e.set_event(v1::AUDIT_EVENT_SEND_ACCEPTED);
  e.set_actor("RR8");
  e.set_actor_role("nhs-trust");
  e.set_message_id(absl::StrCat("01J", 1'000'000'000 + i, "ABCDEFGHJKM"));
  e.set_sender("RR8");
  e.set_recipient("503");
  e.set_workflow("TOC_DISCHARGE");
  e.set_purpose("direct-care");
  e.set_agreement_id("leeds-discharge-to-assess");
  e.set_agreement_version("3");
  e.set_flow("discharge-notice");
  e.mutable_legal_basis()->set_article6(v1::ARTICLE6_PUBLIC_TASK);
  e.mutable_legal_basis()->set_article9(v1::ARTICLE9_HEALTH_OR_SOCIAL_CARE);
  e.mutable_legal_basis()->set_common_law(v1::COMMON_LAW_BASIS_IMPLIED_CONSENT);
  for (const char* f : {"person.nhs_number", "person.name", "person.birth_date", "person.address.postcode",
                        "encounter.discharged_at", "encounter.discharge_destination"}) {
    e.add_released_fields(f);
  }
  e.add_withheld_fields("person.telecom");
  e.set_payload_digest(std::string(32, static_cast<char>(i)));
  return e;
}

std::string SyntheticNhsNumber(uint64_t i) { return absl::StrCat(9'000'000'000 + i % 10'000); }

SystemClock& Clock() {
  static SystemClock clock;
  return clock;
}

struct OpenLog {
  std::unique_ptr<Store> store;
  std::unique_ptr<AuditLog> log;
};

OpenLog Open(const std::string& file) {
  auto store = OpenSqliteStore(file);
  if (!store.ok()) Die(store.status().ToString());
  auto log = AuditLog::Open(TheOptions(), **store, Clock());
  if (!log.ok()) Die(log.status().ToString());
  return {*std::move(store), *std::move(log)};
}

// `window` AppendAudit calls of `per_call` entries each in flight at once;
// returns when all are durable (and in the tree).
void AppendWindow(Store& store, const EntryMaker& maker, int window, int per_call, uint64_t& next) {
  std::latch done(window);
  for (int w = 0; w < window; ++w) {
    std::vector<AuditRecord> records;
    records.reserve(per_call);
    for (int k = 0; k < per_call; ++k, ++next) records.push_back(maker.Make(Accepted(next), SyntheticNhsNumber(next)));
    store.AppendAudit(std::move(records), [&done](absl::StatusOr<uint64_t> r) {
      if (!r.ok()) Die(r.status().ToString());
      done.count_down();
    });
  }
  done.wait();
}

// Making one entry: the subject HMAC and the deterministic serialisation.
void BM_MakeEntry(benchmark::State& state) {
  const EntryMaker maker(TheOptions().subject_key);
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(maker.Make(Accepted(i), SyntheticNhsNumber(i))), ++i;
  state.SetItemsProcessed(static_cast<int64_t>(i));
}
BENCHMARK(BM_MakeEntry);

// The subject alone: HMAC-SHA256 of an NHS number, as hex.
void BM_Subject(benchmark::State& state) {
  const EntryMaker maker(TheOptions().subject_key);
  const std::string nhs = SyntheticNhsNumber(42);
  for (auto _ : state) benchmark::DoNotOptimize(maker.Subject(nhs));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_Subject);

// Durable appends through the SQLite store with the live tree and signed
// heads: Args are (calls in flight, entries per call). A single entry per
// call with many in flight is how concurrent sends arrive; the store groups
// them into shared commits, each made durable with one fdatasync.
void BM_AppendDurable(benchmark::State& state) {
  static int n = 0;
  OpenLog open = Open((Dir() / absl::StrCat("append-", n++, ".db")).string());
  const int window = static_cast<int>(state.range(0));
  const int per_call = static_cast<int>(state.range(1));
  uint64_t next = 0;
  for (auto _ : state) AppendWindow(*open.store, open.log->entries(), window, per_call, next);
  if (!open.log->SignNow().ok() || open.log->size() != next) Die("the log lost entries");
  open.store->Close();
  state.SetItemsProcessed(static_cast<int64_t>(next));
}
BENCHMARK(BM_AppendDurable)
    ->Args({1, 1})
    ->Args({1000, 1})
    ->Args({100, 10})
    ->Args({10, 1000})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The in-memory part of an append: the leaf hash and the tree.
void BM_TreeAppend(benchmark::State& state) {
  const std::string entry = EntryMaker("k").Make(Accepted(1), SyntheticNhsNumber(1)).entry;
  MerkleTree tree;
  for (auto _ : state) tree.Append(LeafHash(entry));
  state.SetItemsProcessed(static_cast<int64_t>(tree.size()));
  state.counters["entry_bytes"] = static_cast<double>(entry.size());
}
BENCHMARK(BM_TreeAppend);

// A store holding `entries` entries with heads every 1,000, written once.
const std::string& MillionStore() {
  static const std::string file = [] {
    const std::string f = (Dir() / "million.db").string();
    OpenLog open = Open(f);
    uint64_t next = 0;
    while (next < kMillion) AppendWindow(*open.store, open.log->entries(), 10, 1000, next);
    if (!open.log->SignNow().ok() || open.log->size() != kMillion) Die("the million-entry log is incomplete");
    open.store->Close();
    return f;
  }();
  return file;
}

const Key& PublicKey() {
  static const Key key = [] {
    auto k = Key::FromPem(Key::FromPem(TheOptions().signing_key_pem, "signing")->PublicPem(), "public");
    if (!k.ok()) Die(k.status().ToString());
    return *k;
  }();
  return key;
}

const LogCopy& MillionCopy() {
  static const LogCopy copy = [] {
    auto c = ReadStoreFile(MillionStore());
    if (!c.ok()) Die(c.status().ToString());
    return *std::move(c);
  }();
  return copy;
}

void Report(benchmark::State& state, const VerifyReport& r) {
  if (!r.intact) Die(r.problem);
  state.counters["entries"] = static_cast<double>(r.entries);
  state.counters["heads"] = static_cast<double>(r.heads);
}

// `carebroker-audit verify --store`: read every entry and head from a copy
// of the store, recompute the tree as they are read, check every signed head.
void BM_VerifyMillionFromStore(benchmark::State& state) {
  const std::string& file = MillionStore();
  for (auto _ : state) {
    Verifier verifier(PublicKey());
    if (absl::Status s = ReadStoreFile(file, verifier); !s.ok()) Die(s.ToString());
    Report(state, verifier.Finish());
  }
}
BENCHMARK(BM_VerifyMillionFromStore)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

// The same, with the entries already in memory (no reading).
void BM_VerifyMillionInMemory(benchmark::State& state) {
  const LogCopy& copy = MillionCopy();
  for (auto _ : state) Report(state, Verify(copy, PublicKey()));
}
BENCHMARK(BM_VerifyMillionInMemory)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

const MerkleTree& MillionTree() {
  static const MerkleTree tree = TreeOf(MillionCopy());
  return tree;
}

// Proofs against the million-entry tree, for entries spread over it.
void BM_ProveInclusion(benchmark::State& state) {
  const MerkleTree& tree = MillionTree();
  uint64_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(tree.InclusionProof((i++ * 7919) % kMillion, kMillion));
}
BENCHMARK(BM_ProveInclusion)->Unit(benchmark::kMicrosecond);

void BM_CheckInclusion(benchmark::State& state) {
  const MerkleTree& tree = MillionTree();
  const Hash root = tree.Root();
  const uint64_t index = 123'457;
  const auto proof = tree.InclusionProof(index, kMillion);
  const Hash leaf = tree.leaf(index);
  for (auto _ : state) {
    if (!VerifyInclusion(leaf, index, kMillion, proof, root)) Die("inclusion proof rejected");
  }
  state.counters["proof_hashes"] = static_cast<double>(proof.size());
}
BENCHMARK(BM_CheckInclusion)->Unit(benchmark::kMicrosecond);

void BM_ProveConsistency(benchmark::State& state) {
  const MerkleTree& tree = MillionTree();
  uint64_t i = 1;
  for (auto _ : state) benchmark::DoNotOptimize(tree.ConsistencyProof(1 + (i++ * 7919) % (kMillion - 1), kMillion));
}
BENCHMARK(BM_ProveConsistency)->Unit(benchmark::kMicrosecond);

void BM_CheckConsistency(benchmark::State& state) {
  const MerkleTree& tree = MillionTree();
  const uint64_t m = 654'321;
  const Hash root_m = tree.Root(m), root_n = tree.Root();
  const auto proof = tree.ConsistencyProof(m, kMillion);
  for (auto _ : state) {
    if (!VerifyConsistency(m, kMillion, root_m, root_n, proof)) Die("consistency proof rejected");
  }
  state.counters["proof_hashes"] = static_cast<double>(proof.size());
}
BENCHMARK(BM_CheckConsistency)->Unit(benchmark::kMicrosecond);

// A subject access request: every entry about one person (about 100 of the
// million) through the store's search, which reads the per-block filters
// and scans only the blocks that may hold the person.
void BM_SearchOnePersonInMillion(benchmark::State& state) {
  OpenLog open = Open(MillionStore());
  const std::string subject = open.log->entries().Subject(SyntheticNhsNumber(4242));
  size_t found = 0;
  for (auto _ : state) {
    auto rows = ReadAuditSync(*open.store, {.from = 0, .max = 100000, .subject = subject});
    if (!rows.ok()) Die(rows.status().ToString());
    found = rows->size();
  }
  open.store->Close();
  state.counters["found"] = static_cast<double>(found);
}
BENCHMARK(BM_SearchOnePersonInMillion)->Unit(benchmark::kMillisecond)->UseRealTime();

// What the Audit service answers: a proof through the live log (its lock,
// the signed head it is checked against).
void BM_LogProveInclusion(benchmark::State& state) {
  OpenLog open = Open(MillionStore());
  uint64_t i = 0;
  for (auto _ : state) {
    auto p = open.log->ProveInclusion((i++ * 7919) % kMillion, 0);
    if (!p.ok()) Die(p.status().ToString());
  }
  open.store->Close();
}
BENCHMARK(BM_LogProveInclusion)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace carebroker::audit

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // CB_BENCH_KEEP=1 keeps the stores (million.db) for timing carebroker-audit itself.
  const char* keep = std::getenv("CB_BENCH_KEEP");
  if (keep && std::string(keep) == "1") {
    std::cerr << "kept " << carebroker::audit::Dir().string() << "\n";
  } else {
    std::filesystem::remove_all(carebroker::audit::Dir());
  }
  return 0;
}
