// Runs the store conformance suite against the PostgreSQL store, on the
// real throwaway cluster tests/run.sh starts (tests/pg.sh).
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "broker/store/pg_store.h"
#include "tests/conformance/store_conformance.h"
#include "tests/pg/pg_testing.h"

namespace carebroker {
namespace {

// One database per instance name, so reopening an instance sees its data.
std::string DatabaseFor(const std::string& instance) {
  static absl::Mutex mu;
  static auto* databases = new absl::flat_hash_map<std::string, std::string>;
  absl::MutexLock l(&mu);
  auto it = databases->find(instance);
  if (it == databases->end()) it = databases->emplace(instance, testing::FreshPgDatabase("conf")).first;
  return it->second;
}

INSTANTIATE_TEST_SUITE_P(Postgres, StoreConformance,
                         ::testing::Values(StoreFactory{"postgres", [](const std::string& instance) {
                                                          return OpenPgStore({.conninfo = DatabaseFor(instance)});
                                                        }}),
                         [](const auto& p) { return p.param.name; });

}  // namespace
}  // namespace carebroker
