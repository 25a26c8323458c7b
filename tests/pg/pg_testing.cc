#include "tests/pg/pg_testing.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "broker/store/pg.h"

namespace carebroker::testing {

std::string FreshPgDatabase(const std::string& tag) {
  const char* uri = std::getenv("CB_PG_URI");
  if (uri == nullptr || *uri == 0) {
    ADD_FAILURE() << "CB_PG_URI is not set: run tests/run.sh, or start a cluster with tests/pg.sh";
    std::abort();
  }
  static std::atomic<int> counter{0};
  const std::string name = absl::StrCat("cb_", tag, "_", getpid(), "_", counter++);
  auto admin = pg::Connection::Open(uri);
  if (!admin.ok()) {
    ADD_FAILURE() << admin.status();
    std::abort();
  }
  // One statement each: CREATE DATABASE cannot run inside a transaction.
  for (const std::string& sql : {absl::StrCat("DROP DATABASE IF EXISTS ", name), absl::StrCat("CREATE DATABASE ", name)}) {
    if (auto s = (*admin)->ExecScript(sql); !s.ok()) {
      ADD_FAILURE() << s;
      std::abort();
    }
  }
  const std::string base(uri);
  return absl::StrCat(base.substr(0, base.rfind('/')), "/", name);
}

}  // namespace carebroker::testing
