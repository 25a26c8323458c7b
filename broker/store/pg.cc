#include "broker/store/pg.h"

#include "core/log.h"

#include <poll.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"

namespace carebroker::pg {
namespace {

// SQLSTATE classes whose messages name SQL objects, never values.
bool MessageIsSafe(absl::string_view state) {
  return absl::StartsWith(state, "42") || absl::StartsWith(state, "3D") || absl::StartsWith(state, "3F") ||
         absl::StartsWith(state, "28") || absl::StartsWith(state, "08") || absl::StartsWith(state, "57") ||
         absl::StartsWith(state, "53");
}

bool IsRetryable(absl::string_view state) {
  return absl::StartsWith(state, "08") || absl::StartsWith(state, "57") || absl::StartsWith(state, "53") ||
         state == "40001" || state == "40P01";
}

}  // namespace

int64_t Result::Int(int row, int col) const {
  int64_t v = 0;
  return absl::SimpleAtoi(Text(row, col), &v) ? v : 0;
}

std::string Result::Bytes(int row, int col) const {
  size_t n = 0;
  unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row, col)), &n);
  if (raw == nullptr) return "";
  std::string out(reinterpret_cast<char*>(raw), n);
  PQfreemem(raw);
  return out;
}

int64_t Result::affected() const {
  int64_t v = 0;
  return absl::SimpleAtoi(PQcmdTuples(r_), &v) ? v : 0;
}

absl::Status StatusOf(const PGresult* r, const PGconn* conn) {
  if (conn != nullptr && PQstatus(conn) != CONNECTION_OK) {
    return absl::UnavailableError("PostgreSQL: the connection was lost");
  }
  if (r == nullptr) return absl::UnavailableError("PostgreSQL: no answer (out of memory or connection lost)");
  const char* state_c = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const std::string state = state_c != nullptr ? state_c : "";
  std::string what = absl::StrCat("PostgreSQL error ", state.empty() ? "(no SQLSTATE)" : state);
  if (const char* c = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME); c != nullptr) {
    absl::StrAppend(&what, " on constraint ", c);
  }
  if (const char* m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY); m != nullptr && MessageIsSafe(state)) {
    absl::StrAppend(&what, ": ", m);
  }
  if (IsRetryable(state)) return absl::UnavailableError(what);
  if (state == "23505") return absl::AlreadyExistsError(what);
  return absl::InternalError(what);
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const std::string& conninfo, const Options& options) {
  // The string goes in as `dbname` with expand_dbname, so a URI or a
  // key=value string both work, and the options after it win. Before it go
  // defaults the string may override: a bounded connect, and keepalives so
  // a database that vanished (a failover without a reset) is noticed in
  // about a minute, not the operating system's two hours.
  std::vector<const char*> keys{"connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count",
                                "dbname"};
  std::vector<const char*> values{"10", "30", "10", "3", conninfo.c_str()};
  for (const auto& [k, v] : options) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PGconn* c = PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
  if (c == nullptr) return absl::UnavailableError("PostgreSQL: out of memory");
  std::unique_ptr<Connection> conn(new Connection(c));
  if (auto s = conn->Configure(); !s.ok()) return s;
  return conn;
}

absl::Status Connection::Reset() {
  prepared_.clear();
  PQreset(conn_);
  return Configure();
}

absl::Status Connection::Configure() {
  if (PQstatus(conn_) != CONNECTION_OK) {
    // libpq's message names the host and the reason, never the password.
    std::string why = PQerrorMessage(conn_);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    return absl::UnavailableError(absl::StrCat("PostgreSQL: cannot connect: ", why));
  }
  // Whatever libpq reports on its own (a warning, or why the server ended
  // the connection) goes to the log marked as PostgreSQL's; only warnings
  // and errors are worth an operator's attention.
  PQsetNoticeProcessor(
      conn_,
      +[](void*, const char* message) {
        absl::string_view m(message);
        absl::ConsumeSuffix(&m, "\n");
        Log(LogLevel::kWarning, "postgres.notice").Msg(m);
      },
      nullptr);
  return ExecScript("SET client_min_messages = warning");
}

Connection::~Connection() { PQfinish(conn_); }

absl::StatusOr<Result> Connection::Exec(const std::string& sql, std::initializer_list<Param> params) {
  return Run(nullptr, sql, params.begin(), params.size());
}

absl::StatusOr<Result> Connection::Exec(const std::string& sql, const std::vector<Param>& params) {
  return Run(nullptr, sql, params.data(), params.size());
}

absl::StatusOr<Result> Connection::ExecPrepared(const std::string& sql, std::initializer_list<Param> params) {
  return RunPrepared(sql, params.begin(), params.size());
}

absl::StatusOr<Result> Connection::ExecPrepared(const std::string& sql, const std::vector<Param>& params) {
  return RunPrepared(sql, params.data(), params.size());
}

absl::StatusOr<Result> Connection::RunPrepared(const std::string& sql, const Param* params, size_t n) {
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = absl::StrCat("cb", prepared_.size());
    PGresult* r = PQprepare(conn_, name.c_str(), sql.c_str(), static_cast<int>(n), nullptr);
    const bool ok = r != nullptr && PQresultStatus(r) == PGRES_COMMAND_OK;
    absl::Status s = ok ? absl::OkStatus() : StatusOf(r, conn_);
    if (r != nullptr) PQclear(r);
    if (!s.ok()) return s;
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  return Run(it->second.c_str(), sql, params, n);
}

absl::StatusOr<Result> Connection::Run(const char* prepared, const std::string& sql, const Param* params, size_t n) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  values.reserve(n);
  lengths.reserve(n);
  formats.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // libpq reads a text parameter up to its first NUL: refuse it rather
    // than store a silently shortened value.
    if (!params[i].binary() && params[i].data() != nullptr &&
        std::memchr(params[i].data(), 0, static_cast<size_t>(params[i].size())) != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("PostgreSQL: parameter ", i + 1, " holds a NUL byte, which PostgreSQL text cannot store"));
    }
    values.push_back(params[i].data());
    lengths.push_back(params[i].size());
    formats.push_back(params[i].binary() ? 1 : 0);
  }
  PGresult* r = prepared != nullptr
                    ? PQexecPrepared(conn_, prepared, static_cast<int>(n), values.data(), lengths.data(),
                                     formats.data(), /*resultFormat=*/0)
                    : PQexecParams(conn_, sql.c_str(), static_cast<int>(n), nullptr, values.data(), lengths.data(),
                                   formats.data(), /*resultFormat=*/0);
  const ExecStatusType st = r != nullptr ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    absl::Status s = StatusOf(r, conn_);
    if (r != nullptr) PQclear(r);
    return s;
  }
  return Result(r);
}

absl::Status Connection::ExecScript(const std::string& sql) {
  PGresult* r = PQexec(conn_, sql.c_str());
  const ExecStatusType st = r != nullptr ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  absl::Status s = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? absl::OkStatus() : StatusOf(r, conn_);
  if (r != nullptr) PQclear(r);
  return s;
}

absl::StatusOr<std::vector<Notification>> Connection::AwaitNotifications(absl::Duration timeout) {
  auto take = [this]() {
    std::vector<Notification> out;
    while (PGnotify* n = PQnotifies(conn_)) {
      out.push_back({n->relname, n->extra});
      PQfreemem(n);
    }
    return out;
  };
  if (PQconsumeInput(conn_) == 0) return absl::UnavailableError("PostgreSQL: the connection was lost");
  if (auto ready = take(); !ready.empty()) return ready;
  pollfd p{PQsocket(conn_), POLLIN, 0};
  if (p.fd < 0) return absl::UnavailableError("PostgreSQL: the connection was lost");
  const int ms = static_cast<int>(absl::ToInt64Milliseconds(timeout));
  if (::poll(&p, 1, ms) < 0 && errno != EINTR) return absl::UnavailableError("PostgreSQL: poll failed");
  if (PQconsumeInput(conn_) == 0) return absl::UnavailableError("PostgreSQL: the connection was lost");
  return take();
}

std::string TextArray(const std::vector<std::string>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.push_back('"');
    for (char c : values[i]) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

bool IsPostgresUri(absl::string_view store) {
  if (absl::StartsWith(store, "postgresql://") || absl::StartsWith(store, "postgres://")) return true;
  // key=value form: "host=... dbname=..."
  return absl::StrContains(store, "=") &&
         (absl::StrContains(store, "host=") || absl::StrContains(store, "dbname=") ||
          absl::StrContains(store, "service="));
}

}  // namespace carebroker::pg
