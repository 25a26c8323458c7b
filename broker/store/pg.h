// PostgreSQL through libpq: one connection, parameterised statements, and
// the versioned schema of the PostgreSQL store (applied by the store at
// start and by `carebrokerctl db migrate`).
//
// Errors never carry data: a failed statement is reported by its SQLSTATE
// and constraint, with PostgreSQL's message only for classes that name SQL,
// not values (syntax, access, connection). A connection string is never
// echoed (it may hold a password).
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace carebroker::pg {

// One statement parameter: text (sent as is), bytes (sent binary, for
// BYTEA), an integer, or NULL.
class Param {
 public:
  static Param Text(absl::string_view v) { return Param(std::string(v), false); }
  static Param Bytes(absl::string_view v) { return Param(std::string(v), true); }
  static Param Int(int64_t v) { return Param(std::to_string(v), false); }
  static Param Null() {
    Param p("", false);
    p.null_ = true;
    return p;
  }
  const char* data() const { return null_ ? nullptr : value_.data(); }
  int size() const { return static_cast<int>(value_.size()); }
  bool binary() const { return binary_; }

 private:
  Param(std::string v, bool binary) : value_(std::move(v)), binary_(binary) {}
  std::string value_;
  bool binary_;
  bool null_ = false;
};

// The rows of one statement (text format).
class Result {
 public:
  explicit Result(PGresult* r) : r_(r) {}
  Result(Result&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Result& operator=(Result&& o) noexcept {
    std::swap(r_, o.r_);
    return *this;
  }
  ~Result() {
    if (r_ != nullptr) PQclear(r_);
  }

  int rows() const { return PQntuples(r_); }
  bool IsNull(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
  absl::string_view Text(int row, int col) const {
    return absl::string_view(PQgetvalue(r_, row, col), static_cast<size_t>(PQgetlength(r_, row, col)));
  }
  int64_t Int(int row, int col) const;
  // A BYTEA column in text format (\x hex), decoded.
  std::string Bytes(int row, int col) const;
  // Rows changed by INSERT/UPDATE/DELETE.
  int64_t affected() const;

 private:
  PGresult* r_;
};

class Connection {
 public:
  // UNAVAILABLE when the server cannot be reached or refuses us.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const std::string& conninfo);
  ~Connection();

  absl::StatusOr<Result> Exec(const std::string& sql, std::initializer_list<Param> params = {});
  // Several statements without parameters (DDL, BEGIN/COMMIT).
  absl::Status ExecScript(const std::string& sql);

  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  PGconn* raw() const { return conn_; }

 private:
  explicit Connection(PGconn* c) : conn_(c) {}
  PGconn* conn_;
};

// The status for a failed statement (see above); UNAVAILABLE for the
// classes that mean "try again" (connection, shutdown, resources,
// serialization failure, deadlock).
absl::Status StatusOf(const PGresult* r, const PGconn* conn);

// The PostgreSQL store's schema version this build writes.
int SchemaVersion();

// Brings the database to SchemaVersion(), one migration at a time in one
// transaction, under an advisory lock so replicas starting together take
// turns. Answers the version found before. FAILED_PRECONDITION when the
// database is newer than this build.
absl::StatusOr<int> Migrate(Connection& conn);

// The version of the schema in the database (0 when none).
absl::StatusOr<int> CurrentVersion(Connection& conn);

// True when `store` names a PostgreSQL database (postgresql:// or
// postgres:// URI, or a key=value connection string with host or dbname).
bool IsPostgresUri(absl::string_view store);

}  // namespace carebroker::pg
