// Offline verification of an audit log: recompute the Merkle tree from
// every entry and check every signed tree head against it, with only the
// public key. Used by carebroker-audit (online it verifies an export
// fetched from the broker, so the operator need not be trusted).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "audit/merkle.h"
#include "audit/signer.h"
#include "broker/store/offline.h"
#include "carebroker/v1/audit.pb.h"

namespace carebroker::audit {

// Takes a log as it is read (a store's or an export file's).
using LogVisitor = AuditLogVisitor;

// An export file: ExportChunk messages, each length-delimited.
absl::Status ReadExportFile(const std::string& path, LogVisitor& visitor);
bool WriteExportChunk(const v1::ExportChunk& chunk, std::ostream& out);
// A copy of the broker's SQLite store, opened read-only, or a PostgreSQL
// store named by its connection string (read in one read-only snapshot).
absl::Status ReadStoreFile(const std::string& path, LogVisitor& visitor);
// Every entry and head of an export chunk.
void VisitChunk(v1::ExportChunk& chunk, LogVisitor& visitor);

// A whole log in memory.
struct LogCopy final : LogVisitor {
  std::vector<v1::ExportedEntry> entries;  // in stored order
  std::vector<v1::SignedTreeHead> heads;

  void Entry(uint64_t index, absl::string_view entry, absl::string_view leaf_hash) override;
  void Head(v1::SignedTreeHead head) override { heads.push_back(std::move(head)); }
};
absl::StatusOr<LogCopy> ReadExportFile(const std::string& path);
absl::StatusOr<LogCopy> ReadStoreFile(const std::string& path);

struct VerifyReport {
  bool intact = false;
  // The first problem, naming the first bad entry or tree head.
  std::string problem;
  uint64_t entries = 0;
  uint64_t heads = 0;
  uint64_t covered = 0;  // entries covered by the largest verified head
};

// Verifies a log as it is read, holding only its tree (about 64 bytes an
// entry) and its signed heads, never the entries themselves.
class Verifier final : public LogVisitor {
 public:
  explicit Verifier(const Key& key) : key_(key) {}
  void Entry(uint64_t index, absl::string_view entry, absl::string_view leaf_hash) override;
  void Head(v1::SignedTreeHead head) override { heads_.push_back(std::move(head)); }
  // Checks every signed head against the tree; call once, after the last entry.
  VerifyReport Finish();

 private:
  const Key& key_;
  MerkleTree tree_;             // entries before the first bad one
  v1::AuditEntry parsed_;       // reused: parsing reuses its strings
  std::vector<v1::SignedTreeHead> heads_;
  uint64_t entries_ = 0;
  std::string problem_;         // the first bad entry
};

VerifyReport Verify(const LogCopy& log, const Key& key);

// Builds the tree of every entry in `log` (for offline proofs).
MerkleTree TreeOf(const LogCopy& log);

}  // namespace carebroker::audit
