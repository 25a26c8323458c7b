#include "audit/verify.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "broker/store/offline.h"
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

absl::Status ReadStoreFile(const std::string& path, LogVisitor& visitor) {
  return ReadAuditLog(path, visitor);
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
