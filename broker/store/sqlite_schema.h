// The SQLite store's schema and its migrations (docs/store-schema.md):
// PRAGMA user_version holds the version; an older file is brought up to
// date in one transaction when the store opens it.
#pragma once

#include <sqlite3.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "broker/store/sqlite_stmt.h"
#include "broker/store/subject_bloom.h"

namespace carebroker::sqlite {

// The schema version this build writes.
inline constexpr int kSchemaVersion = 8;

// Creates the schema in a new file, or migrates an older one (back-filling
// the audit subject filters). FAILED_PRECONDITION STORE_SCHEMA_NEWER when
// the file was written by a newer build; UNAVAILABLE STORE_UNAVAILABLE when
// SQLite fails (the transaction is rolled back).
absl::Status MigrateSchema(sqlite3* db);

// Selects the subjects of audit entries [?1, ?2) (prepare once, then
// SubjectFilter).
extern const char kSubjectsInRange[];

// The Bloom filter of the subjects of entries [first, last), read with
// `subjects` (prepared from kSubjectsInRange).
absl::StatusOr<SubjectBloom> SubjectFilter(Stmt& subjects, uint64_t first, uint64_t last);

}  // namespace carebroker::sqlite
