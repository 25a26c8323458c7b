#include "broker/store/offline.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "broker/store/pg.h"
#include "broker/store/pg_store.h"
#include "broker/store/sqlite_store.h"

namespace carebroker {

absl::Status ReadAuditLog(const std::string& store, AuditLogVisitor& visitor) {
  return pg::IsPostgresUri(store) ? ReadPgAuditLog(store, visitor) : ReadSqliteAuditLog(store, visitor);
}

absl::StatusOr<std::string> MigrateStore(const std::string& store) {
  if (pg::IsPostgresUri(store)) return MigratePgStore(store);
  if (!std::filesystem::exists(store)) {
    return absl::NotFoundError(
        absl::StrCat("no SQLite store at ", store, " (it is created when the broker first starts)"));
  }
  auto s = OpenSqliteStore(store);  // opening migrates it
  if (!s.ok()) return s.status();
  (*s)->Close();
  return absl::StrCat("SQLite store ", store, ": schema current");
}

}  // namespace carebroker
