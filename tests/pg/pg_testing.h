// Test databases on the throwaway PostgreSQL cluster that tests/run.sh
// starts (tests/pg.sh exports CB_PG_URI). Without CB_PG_URI the tests fail:
// nothing that needs PostgreSQL is skipped silently.
#pragma once

#include <string>

namespace carebroker::testing {

// A new, empty database on the cluster; its connection string.
std::string FreshPgDatabase(const std::string& tag);

}  // namespace carebroker::testing
