// What tools do with a store while no broker need be running: read its
// audit log (carebroker-audit verify --store) and bring its schema up to
// date (carebrokerctl db migrate). `store` is a SQLite file path or a
// PostgreSQL connection string (pg::IsPostgresUri). Errors never echo a
// password or a row's content.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "carebroker/v1/audit.pb.h"

namespace carebroker {

// Takes an audit log as it is read: entries in index order, then every
// signed tree head. A stored head that does not parse reaches Head empty, so
// verification names it. The one visitor of stored logs and export files.
class AuditLogVisitor {
 public:
  virtual ~AuditLogVisitor() = default;
  virtual void Entry(uint64_t index, absl::string_view entry, absl::string_view leaf_hash) = 0;
  virtual void Head(v1::SignedTreeHead head) = 0;
};

// Reads the whole audit log without writing anything: a SQLite file opened
// read-only, or PostgreSQL in one read-only snapshot (so every head read
// covers entries read). NOT_FOUND when the store cannot be opened, DATA_LOSS
// when it holds no audit log or cannot be read, UNAVAILABLE when PostgreSQL
// cannot be reached.
absl::Status ReadAuditLog(const std::string& store, AuditLogVisitor& visitor);

// Applies the store's schema migrations and says what was done, e.g.
// "PostgreSQL store: schema version 1 -> 2". NOT_FOUND for a SQLite file
// that does not exist (the broker creates it), FAILED_PRECONDITION for a
// store newer than this build, UNAVAILABLE when PostgreSQL cannot be reached.
absl::StatusOr<std::string> MigrateStore(const std::string& store);

}  // namespace carebroker
