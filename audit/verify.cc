#include "audit/verify.h"

#include <sqlite3.h>

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "broker/store/pg.h"
#include "google/protobuf/io/zero_copy_stream_impl.h"
#include "google/protobuf/util/delimited_message_util.h"

namespace carebroker::audit {

absl::Status ReadExportFile(const std::string& path, LogVisitor& visitor) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the export file"));
  google::protobuf::io::IstreamInputStream stream(&in);
  uint64_t entries = 0;
  for (;;) {
    v1::ExportChunk chunk;
    bool clean_eof = false;
    if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&chunk, &stream, &clean_eof)) {
      if (clean_eof) break;
      return absl::DataLossError(
          absl::StrCat(path, ": not a carebroker audit export (or cut short) after ", entries, " entries"));
    }
    entries += chunk.entries_size();
    VisitChunk(chunk, visitor);
  }
  return absl::OkStatus();
}

void VisitChunk(v1::ExportChunk& chunk, LogVisitor& visitor) {
  for (const auto& e : chunk.entries()) visitor.Entry(e.index(), e.entry(), e.leaf_hash());
  for (auto& h : *chunk.mutable_tree_heads()) visitor.Head(std::move(h));
}

bool WriteExportChunk(const v1::ExportChunk& chunk, std::ostream& out) {
  return google::protobuf::util::SerializeDelimitedToOstream(chunk, &out) && out.good();
}

namespace {

// The log in a PostgreSQL store, read in one snapshot (so every head read
// covers entries read), a page at a time.
absl::Status ReadPgStore(const std::string& conninfo, LogVisitor& visitor) {
  auto conn = pg::Connection::Open(conninfo);
  if (!conn.ok()) return conn.status();
  if (auto s = (*conn)->ExecScript("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !s.ok()) return s;
  constexpr int kPage = 10000;
  for (int64_t from = 0;;) {
    auto r = (*conn)->Exec("SELECT idx, entry, leaf FROM audit WHERE idx >= $1 ORDER BY idx LIMIT $2",
                           {pg::Param::Int(from), pg::Param::Int(kPage)});
    if (!r.ok()) return absl::DataLossError(absl::StrCat("not a carebroker store with an audit log: ", r.status().message()));
    for (int i = 0; i < r->rows(); ++i) {
      visitor.Entry(static_cast<uint64_t>(r->Int(i, 0)), r->Bytes(i, 1), r->Bytes(i, 2));
      from = r->Int(i, 0) + 1;
    }
    if (r->rows() < kPage) break;
  }
  auto heads = (*conn)->Exec("SELECT head FROM tree_heads ORDER BY tree_size");
  if (!heads.ok()) return absl::DataLossError(absl::StrCat("cannot read tree heads: ", heads.status().message()));
  for (int i = 0; i < heads->rows(); ++i) {
    v1::SignedTreeHead h;
    if (!h.ParseFromString(heads->Bytes(i, 0))) h.Clear();
    visitor.Head(std::move(h));
  }
  return (*conn)->ExecScript("COMMIT");
}

}  // namespace

absl::Status ReadStoreFile(const std::string& path, LogVisitor& visitor) {
  if (pg::IsPostgresUri(path)) return ReadPgStore(path, visitor);
  sqlite3* db = nullptr;
  const std::string uri = absl::StrCat("file:", path, "?mode=ro");
  if (sqlite3_open_v2(uri.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return absl::NotFoundError(absl::StrCat(path, ": cannot open the store"));
  }
  absl::Status status;
  auto each = [&](const char* sql, auto&& row) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
      status = absl::DataLossError(absl::StrCat(path, ": not a carebroker store with an audit log"));
      return;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) row(st);
    if (rc != SQLITE_DONE) status = absl::DataLossError(absl::StrCat(path, ": cannot read: ", sqlite3_errmsg(db)));
    sqlite3_finalize(st);
  };
  auto blob = [](sqlite3_stmt* st, int col) {
    const void* p = sqlite3_column_blob(st, col);
    return p ? absl::string_view(static_cast<const char*>(p), sqlite3_column_bytes(st, col)) : absl::string_view();
  };
  each("SELECT idx, entry, leaf FROM audit ORDER BY idx", [&](sqlite3_stmt* st) {
    visitor.Entry(static_cast<uint64_t>(sqlite3_column_int64(st, 0)), blob(st, 1), blob(st, 2));
  });
  if (status.ok()) {
    each("SELECT head FROM tree_heads ORDER BY tree_size", [&](sqlite3_stmt* st) {
      v1::SignedTreeHead h;
      const absl::string_view b = blob(st, 0);
      if (!h.ParseFromArray(b.data(), static_cast<int>(b.size()))) h.Clear();
      visitor.Head(std::move(h));
    });
  }
  sqlite3_close(db);
  return status;
}

void LogCopy::Entry(uint64_t index, absl::string_view entry, absl::string_view leaf_hash) {
  v1::ExportedEntry& e = entries.emplace_back();
  e.set_index(index);
  e.set_entry(std::string(entry));
  e.set_leaf_hash(std::string(leaf_hash));
}

namespace {

template <typename Reader>
absl::StatusOr<LogCopy> ReadCopy(const std::string& path, Reader read) {
  LogCopy log;
  if (absl::Status s = read(path, log); !s.ok()) return s;
  return log;
}

}  // namespace

absl::StatusOr<LogCopy> ReadExportFile(const std::string& path) {
  return ReadCopy(path, [](const std::string& p, LogVisitor& v) { return ReadExportFile(p, v); });
}

absl::StatusOr<LogCopy> ReadStoreFile(const std::string& path) {
  return ReadCopy(path, [](const std::string& p, LogVisitor& v) { return ReadStoreFile(p, v); });
}

MerkleTree TreeOf(const LogCopy& log) {
  MerkleTree t;
  for (const auto& e : log.entries) t.Append(LeafHash(e.entry()));
  return t;
}

void Verifier::Entry(uint64_t index, absl::string_view entry, absl::string_view leaf_hash) {
  const uint64_t i = entries_++;
  if (!problem_.empty()) return;  // only the first problem is named
  const Hash leaf = LeafHash(entry);
  Hash stored;
  if (index != i) {
    problem_ = absl::StrCat("entry ", i, ": missing; the log holds entry ", index,
                            " in its place (entries deleted, inserted or reordered)");
  } else if (!parsed_.ParseFromArray(entry.data(), static_cast<int>(entry.size()))) {
    problem_ = absl::StrCat("entry ", i, ": altered (it no longer reads as an audit entry)");
  } else if (parsed_.index() != i) {
    problem_ = absl::StrCat("entry ", i, ": holds entry ", parsed_.index(), " (entries reordered or moved)");
  } else if (!leaf_hash.empty() && (!HashFromBytes(leaf_hash, &stored) || stored != leaf)) {
    problem_ = absl::StrCat("entry ", i, ": altered (its bytes no longer match the hash recorded when written)");
  } else {
    tree_.Append(leaf);
  }
}

VerifyReport Verifier::Finish() {
  VerifyReport r;
  r.entries = entries_;
  r.heads = heads_.size();
  r.problem = problem_;
  const uint64_t good = tree_.size();  // entries before the first structural problem
  std::sort(heads_.begin(), heads_.end(), [](const auto& a, const auto& b) { return a.tree_size() < b.tree_size(); });
  uint64_t verified = 0;
  for (const v1::SignedTreeHead& h : heads_) {
    if (auto s = CheckTreeHead(key_, h); !s.ok()) {
      if (r.problem.empty()) r.problem = std::string(s.message());
      break;
    }
    if (h.tree_size() > entries_) {
      if (r.problem.empty()) {
        r.problem = absl::StrCat("log truncated: the tree head signed at size ", h.tree_size(), " covers entries 0 to ",
                                 h.tree_size() - 1, ", the log holds ", entries_);
      }
      break;
    }
    if (h.tree_size() > good) break;  // the structural problem already named
    Hash root;
    HashFromBytes(h.root_hash(), &root);
    if (tree_.Root(h.tree_size()) != root) {
      r.problem = absl::StrCat("entries ", verified, " to ", h.tree_size() - 1,
                               ": altered; they do not match the tree head signed at size ", h.tree_size(),
                               " (the first bad entry is in this range)");
      break;
    }
    verified = h.tree_size();
  }
  r.covered = verified;
  if (r.problem.empty() && heads_.empty() && entries_ != 0) {
    r.problem = "no signed tree head: nothing in the log is proven";
  }
  r.intact = r.problem.empty();
  return r;
}

VerifyReport Verify(const LogCopy& log, const Key& key) {
  Verifier v(key);
  for (const auto& e : log.entries) v.Entry(e.index(), e.entry(), e.leaf_hash());
  for (const auto& h : log.heads) v.Head(h);
  return v.Finish();
}

}  // namespace carebroker::audit
