// Store-only throughput: how fast the Store itself appends durably, claims and
// acknowledges 2 KiB messages, without gRPC or TLS. Prints Google Benchmark
// figures; items/s is messages per second.
//
//   build/tests/bench/store_bench --benchmark_min_time=2
#include <benchmark/benchmark.h>

#include <atomic>
#include <filesystem>
#include <latch>
#include <unistd.h>

#include "core/ids.h"
#include "broker/store/sqlite_store.h"
#include "tests/testutil/testutil.h"
#include "broker/store/store_sync.h"

namespace carebroker {
namespace {

namespace fs = std::filesystem;

const OrgCode kFrom("RR8"), kTo("503");

std::unique_ptr<Store> FreshStore() {
  static int n = 0;
  const fs::path dir = fs::temp_directory_path() / ("cb-store-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / ("s" + std::to_string(n++) + ".db")).string();
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path + suffix);
  auto s = OpenSqliteStore(path);
  if (!s.ok()) std::abort();
  return *std::move(s);
}

NewMessage Message(const absl::Time now, uint64_t i) {
  NewMessage m = testing::TestMessage(kFrom, kTo, "k" + std::to_string(i),
                                      std::string(2048, static_cast<char>('a' + i % 26)), now);
  m.workflow = "BENCHMARK";
  m.content_type = "application/octet-stream";
  return m;
}

// `window` single-message appends in flight at once, as concurrent Sends
// are (the store groups them into shared commits); waits until all are
// durable. `next` numbers the messages across calls.
void AppendWindow(Store& store, int window, absl::Time now, uint64_t& next) {
  std::latch done(window);
  for (int w = 0; w < window; ++w) {
    std::vector<NewMessage> one;
    one.push_back(Message(now, next++));
    store.Append(std::move(one), [&done](auto r) {
      if (!r.ok() || !(*r)[0].ok()) std::abort();
      done.count_down();
    });
  }
  done.wait();
}

void BM_AppendDurable(benchmark::State& state) {
  auto store = FreshStore();
  const int window = static_cast<int>(state.range(0));
  uint64_t i = 0;
  const absl::Time now = absl::Now();
  for (auto _ : state) AppendWindow(*store, window, now, i);
  state.SetItemsProcessed(static_cast<int64_t>(i));
}
BENCHMARK(BM_AppendDurable)->Arg(1)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMillisecond);

// The full life of `batch` messages: durable appends, one claim, one synced ack.
void BM_AppendClaimAck(benchmark::State& state) {
  auto store = FreshStore();
  const int batch = static_cast<int>(state.range(0));
  uint64_t i = 0;
  const absl::Time now = absl::Now();
  for (auto _ : state) {
    AppendWindow(*store, batch, now, i);
    auto claimed = ClaimSync(*store, ClaimRequest{kTo, batch, now, now + absl::Seconds(30), 7});
    std::vector<MessageId> ids;
    for (auto& d : *claimed) ids.push_back(d.id);
    if (static_cast<int>(ids.size()) != batch) std::abort();
    if (!AckSync(*store, kTo, std::move(ids), now).ok()) std::abort();
  }
  state.SetItemsProcessed(static_cast<int64_t>(i));
}
BENCHMARK(BM_AppendClaimAck)->Arg(100)->Arg(1000)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace carebroker

BENCHMARK_MAIN();
