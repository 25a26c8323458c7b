// The PostgreSQL store's versioned schema (docs/store-schema.md), applied
// by the store when it opens and by `carebrokerctl db migrate`
// (MigrateStore, offline.h).
#pragma once

#include "absl/status/statusor.h"
#include "broker/store/pg.h"

namespace carebroker::pg {

// The PostgreSQL store's schema version this build writes.
int SchemaVersion();

// Brings the database to SchemaVersion(), one migration at a time in one
// transaction, under an advisory lock so replicas starting together take
// turns. Answers the version found before. FAILED_PRECONDITION when the
// database is newer than this build.
absl::StatusOr<int> Migrate(Connection& conn);

// The version of the schema in the database (0 when none).
absl::StatusOr<int> CurrentVersion(Connection& conn);

}  // namespace carebroker::pg
