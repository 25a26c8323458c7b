#include "audit/verify.h"

#include <sqlite3.h>

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/zero_copy_stream_impl.h"
#include "google/protobuf/util/delimited_message_util.h"

namespace carebroker::audit {

absl::StatusOr<LogCopy> ReadExportFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the export file"));
  google::protobuf::io::IstreamInputStream stream(&in);
  LogCopy log;
  for (;;) {
    v1::ExportChunk chunk;
    bool clean_eof = false;
    if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&chunk, &stream, &clean_eof)) {
      if (clean_eof) break;
      return absl::DataLossError(absl::StrCat(path, ": not a carebroker audit export (or cut short) after ",
                                              log.entries.size(), " entries"));
    }
    for (auto& e : *chunk.mutable_entries()) log.entries.push_back(std::move(e));
    for (auto& h : *chunk.mutable_tree_heads()) log.heads.push_back(std::move(h));
  }
  return log;
}

bool WriteExportChunk(const v1::ExportChunk& chunk, std::ostream& out) {
  return google::protobuf::util::SerializeDelimitedToOstream(chunk, &out) && out.good();
}

absl::StatusOr<LogCopy> ReadStoreFile(const std::string& path) {
  sqlite3* db = nullptr;
  const std::string uri = absl::StrCat("file:", path, "?mode=ro");
  if (sqlite3_open_v2(uri.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return absl::NotFoundError(absl::StrCat(path, ": cannot open the store"));
  }
  LogCopy log;
  absl::Status status;
  auto each = [&](const char* sql, auto&& row) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
      status = absl::DataLossError(absl::StrCat(path, ": not a carebroker store with an audit log"));
      return;
    }
    while (sqlite3_step(st) == SQLITE_ROW) row(st);
    sqlite3_finalize(st);
  };
  auto blob = [](sqlite3_stmt* st, int col) {
    const void* p = sqlite3_column_blob(st, col);
    return p ? std::string(static_cast<const char*>(p), sqlite3_column_bytes(st, col)) : std::string();
  };
  each("SELECT idx, entry, leaf FROM audit ORDER BY idx", [&](sqlite3_stmt* st) {
    v1::ExportedEntry& e = log.entries.emplace_back();
    e.set_index(static_cast<uint64_t>(sqlite3_column_int64(st, 0)));
    e.set_entry(blob(st, 1));
    e.set_leaf_hash(blob(st, 2));
  });
  if (status.ok()) {
    each("SELECT head FROM tree_heads ORDER BY tree_size", [&](sqlite3_stmt* st) {
      if (!log.heads.emplace_back().ParseFromString(blob(st, 0))) log.heads.back().Clear();
    });
  }
  sqlite3_close(db);
  if (!status.ok()) return status;
  return log;
}

MerkleTree TreeOf(const LogCopy& log) {
  MerkleTree t;
  for (const auto& e : log.entries) t.Append(LeafHash(e.entry()));
  return t;
}

VerifyReport Verify(const LogCopy& log, const Key& key) {
  VerifyReport r;
  r.entries = log.entries.size();
  r.heads = log.heads.size();
  MerkleTree tree;
  uint64_t good = log.entries.size();  // entries before the first structural problem
  for (uint64_t i = 0; i < log.entries.size(); ++i) {
    const v1::ExportedEntry& e = log.entries[i];
    v1::AuditEntry parsed;
    const Hash leaf = LeafHash(e.entry());
    Hash stored;
    if (e.index() != i) {
      r.problem = absl::StrCat("entry ", i, ": missing; the log holds entry ", e.index(),
                               " in its place (entries deleted, inserted or reordered)");
    } else if (!parsed.ParseFromString(e.entry())) {
      r.problem = absl::StrCat("entry ", i, ": altered (it no longer reads as an audit entry)");
    } else if (parsed.index() != i) {
      r.problem = absl::StrCat("entry ", i, ": holds entry ", parsed.index(), " (entries reordered or moved)");
    } else if (!e.leaf_hash().empty() && (!HashFromBytes(e.leaf_hash(), &stored) || stored != leaf)) {
      r.problem = absl::StrCat("entry ", i, ": altered (its bytes no longer match the hash recorded when written)");
    }
    if (!r.problem.empty()) {
      good = i;
      break;
    }
    tree.Append(leaf);
  }
  std::vector<const v1::SignedTreeHead*> heads;
  for (const auto& h : log.heads) heads.push_back(&h);
  std::sort(heads.begin(), heads.end(), [](auto* a, auto* b) { return a->tree_size() < b->tree_size(); });
  uint64_t verified = 0;
  for (const v1::SignedTreeHead* h : heads) {
    if (auto s = CheckTreeHead(key, *h); !s.ok()) {
      if (r.problem.empty()) r.problem = std::string(s.message());
      break;
    }
    if (h->tree_size() > log.entries.size()) {
      if (r.problem.empty()) {
        r.problem = absl::StrCat("log truncated: the tree head signed at size ", h->tree_size(), " covers entries 0 to ",
                                 h->tree_size() - 1, ", the log holds ", log.entries.size());
      }
      break;
    }
    if (h->tree_size() > good) break;  // the structural problem already named
    Hash root;
    HashFromBytes(h->root_hash(), &root);
    if (tree.Root(h->tree_size()) != root) {
      r.problem = absl::StrCat("entries ", verified, " to ", h->tree_size() - 1,
                               ": altered; they do not match the tree head signed at size ", h->tree_size(),
                               " (the first bad entry is in this range)");
      break;
    }
    verified = h->tree_size();
  }
  r.covered = verified;
  if (r.problem.empty() && heads.empty() && !log.entries.empty()) {
    r.problem = "no signed tree head: nothing in the log is proven";
  }
  r.intact = r.problem.empty();
  return r;
}

}  // namespace carebroker::audit
