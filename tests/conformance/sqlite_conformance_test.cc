// Runs the store conformance suite against the SQLite store, on real files.
#include <filesystem>

#include "broker/store/sqlite_store.h"
#include "tests/conformance/store_conformance.h"

namespace carebroker {
namespace {

std::string TestDir() {
  static const std::string dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("cb-sqlite-conformance-" + std::to_string(::getpid()));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d.string();
  }();
  return dir;
}

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformance,
                         ::testing::Values(StoreFactory{"sqlite", [](const std::string& instance) {
                                                          return OpenSqliteStore(TestDir() + "/" + instance + ".db");
                                                        }}),
                         [](const auto& p) { return p.param.name; });

}  // namespace
}  // namespace carebroker
