// A thin wrapper of SQLite's prepared statements for the SQLite store:
// bind, step, read columns, reset. Errors are UNAVAILABLE STORE_UNAVAILABLE
// naming what failed; SQLite's messages name tables and constraints, never
// row values.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/reasons.h"
#include "core/status.h"

namespace carebroker::sqlite {

inline absl::Status SqlError(sqlite3* db, absl::string_view what) {
  // SQLite messages name tables and constraints, never row values.
  return Error(absl::StatusCode::kUnavailable, reason::kStoreUnavailable,
               absl::StrCat("store: ", what, ": ", sqlite3_errmsg(db)));
}

// Runs `sql` (no rows) on `db`.
inline absl::Status ExecSql(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return SqlError(db, sql);
  return absl::OkStatus();
}

// A prepared statement, reset after each use.
class Stmt {
 public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(s_); }

  absl::Status Prepare(sqlite3* db, const char* sql) {
    db_ = db;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr) != SQLITE_OK) {
      return SqlError(db, "prepare");
    }
    return absl::OkStatus();
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& Bind(int i, absl::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& BindBlob(int i, absl::string_view v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE, or an error status.
  absl::StatusOr<bool> Step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqlError(db_, "step");
  }
  // Runs a statement that returns no rows, then resets it.
  absl::Status Exec() {
    auto r = Step();
    Reset();
    return r.ok() ? absl::OkStatus() : r.status();
  }
  void Finalize() {
    sqlite3_finalize(s_);
    s_ = nullptr;
  }
  void Reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  int64_t Int(int col) const { return sqlite3_column_int64(s_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  // The column's bytes, valid until the next Step or Reset.
  absl::string_view View(int col) const {
    const void* p = sqlite3_column_blob(s_, col);
    return p ? absl::string_view(static_cast<const char*>(p), sqlite3_column_bytes(s_, col)) : absl::string_view();
  }
  std::string Text(int col) const { return std::string(View(col)); }
  int Changes() const { return sqlite3_changes(db_); }

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* s_ = nullptr;
};

// Resets a statement when leaving a scope that stepped through rows.
struct ResetOnExit {
  Stmt& s;
  ~ResetOnExit() { s.Reset(); }
};

}  // namespace carebroker::sqlite
