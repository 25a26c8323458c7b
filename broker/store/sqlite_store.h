// The embedded store: one SQLite file in WAL mode with synchronous=FULL, so
// a commit is on disk when its callbacks run. One writer thread owns the
// connection; it drains every queued operation into one transaction per
// round (group commit), bounded by kMaxOpsPerCommit.
//
// Single-node: at open, claims left by a previous process are released, so
// unacknowledged deliveries are redelivered at once after a restart.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "broker/store/offline.h"
#include "broker/store/store.h"

namespace carebroker {

// Opens (creating if needed) the store at `path`; the parent folder must
// exist. Fails with UNAVAILABLE if the file cannot be opened or migrated,
// and FAILED_PRECONDITION if its schema is newer than this build.
absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

// The audit log of the SQLite file at `path`, opened read-only (see
// broker/store/offline.h, which most callers want).
absl::Status ReadSqliteAuditLog(const std::string& path, AuditLogVisitor& visitor);

}  // namespace carebroker
