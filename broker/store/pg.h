// PostgreSQL through libpq: one connection and parameterised statements.
// Only the wrapper: the PostgreSQL store's schema is in pg_schema.h.
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
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

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
  std::string Str(int row, int col) const { return std::string(Text(row, col)); }
  int64_t Int(int row, int col) const;
  // A BYTEA column in text format (\x hex), decoded.
  std::string Bytes(int row, int col) const;
  // Rows changed by INSERT/UPDATE/DELETE.
  int64_t affected() const;

 private:
  PGresult* r_;
};

// libpq connection keywords added to a connection string (sslmode,
// sslrootcert, passfile, ...); they win over the string's own.
using Options = std::vector<std::pair<std::string, std::string>>;

// A notification from LISTEN.
struct Notification {
  std::string channel;
  std::string payload;
};

class Connection {
 public:
  // UNAVAILABLE when the server cannot be reached or refuses us.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const std::string& conninfo, const Options& options = {});
  ~Connection();

  // INVALID_ARGUMENT for a text parameter holding a NUL byte (PostgreSQL
  // text cannot store one); otherwise the statement's outcome.
  absl::StatusOr<Result> Exec(const std::string& sql, std::initializer_list<Param> params = {});
  absl::StatusOr<Result> Exec(const std::string& sql, const std::vector<Param>& params);
  // As Exec, through a statement prepared once per connection (for the
  // store's fixed statements; not for SQL built per call).
  absl::StatusOr<Result> ExecPrepared(const std::string& sql, std::initializer_list<Param> params = {});
  absl::StatusOr<Result> ExecPrepared(const std::string& sql, const std::vector<Param>& params);
  // Several statements without parameters (DDL, BEGIN/COMMIT).
  absl::Status ExecScript(const std::string& sql);

  // Waits up to `timeout` for notifications on the channels this
  // connection LISTENs to; answers those that arrived (maybe none).
  // UNAVAILABLE when the connection is lost.
  absl::StatusOr<std::vector<Notification>> AwaitNotifications(absl::Duration timeout);

  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  // Reconnects with the same parameters (after a lost connection).
  absl::Status Reset();
  PGconn* raw() const { return conn_; }

 private:
  explicit Connection(PGconn* c) : conn_(c) {}
  // After a connect: the outcome, then this connection's settings.
  absl::Status Configure();
  absl::StatusOr<Result> Run(const char* prepared, const std::string& sql, const Param* params, size_t n);
  absl::StatusOr<Result> RunPrepared(const std::string& sql, const Param* params, size_t n);
  PGconn* conn_;
  absl::flat_hash_map<std::string, std::string> prepared_;  // SQL -> statement name
};

// A text[] literal for `values`, each element quoted (for `= ANY($1::text[])`).
std::string TextArray(const std::vector<std::string>& values);

// The status for a failed statement (see above); UNAVAILABLE for the
// classes that mean "try again" (connection, shutdown, resources,
// serialization failure, deadlock).
absl::Status StatusOf(const PGresult* r, const PGconn* conn);

// True when `store` names a PostgreSQL database (postgresql:// or
// postgres:// URI, or a key=value connection string with host or dbname).
bool IsPostgresUri(absl::string_view store);

}  // namespace carebroker::pg
