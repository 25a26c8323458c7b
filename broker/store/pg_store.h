// The shared store: PostgreSQL, for several broker replicas on one highly
// available database.
//
// Each replica runs `pool_size` worker connections. A worker takes every
// queued operation (up to a bound) into one transaction (group commit);
// PostgreSQL's COMMIT returns once the commit is on disk, so callbacks run
// after durability. Claims take rows with FOR UPDATE SKIP LOCKED, so
// replicas never hand one message to two streams at once.
//
// One audit order for every replica: a transaction's entries are written
// last, under the lock of the single audit_next row, so indexes are
// consecutive in commit order. Consent changes are taken under their own
// lock, so their seq is in commit order too. A further connection LISTENs:
// other replicas' arrivals wake this replica's streams, and their audit
// entries and consent changes reach this replica's listeners in order
// (read from the tables by index and seq; the notifications only say
// "look"), with a read each second should a notification be missed.
//
// Unlike the embedded store, claims survive a restart: they may belong to a
// stream on another replica, so an unacknowledged delivery returns when its
// visibility timeout passes.
//
// A connection lost during COMMIT leaves the outcome unknown: the operation
// answers UNAVAILABLE though it may have been stored. A send retried with
// its idempotency key is then answered with the first receipt.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "broker/store/pg.h"
#include "broker/store/offline.h"
#include "broker/store/store.h"

namespace carebroker {

struct PgStoreOptions {
  std::string conninfo;  // postgresql:// URI or key=value string
  pg::Options options;   // libpq keywords added (sslmode, sslrootcert, sslcert, sslkey, passfile)
  int pool_size = 2;     // worker connections (1..64); one more LISTENs
};

// Connects, migrates the schema (under an advisory lock: replicas starting
// together take turns) and starts the workers. UNAVAILABLE when the server
// cannot be reached; FAILED_PRECONDITION when its schema is newer than this
// build; INVALID_ARGUMENT for a pool size out of range.
absl::StatusOr<std::unique_ptr<Store>> OpenPgStore(const PgStoreOptions& options);

// The audit log of the database at `conninfo`, in one read-only snapshot,
// and its schema migrations (see broker/store/offline.h).
absl::Status ReadPgAuditLog(const std::string& conninfo, AuditLogVisitor& visitor);
absl::StatusOr<std::string> MigratePgStore(const std::string& conninfo);

}  // namespace carebroker
