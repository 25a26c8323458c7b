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
#include "carebroker/v1/audit.pb.h"

namespace carebroker::audit {

struct LogCopy {
  std::vector<v1::ExportedEntry> entries;  // in stored order
  std::vector<v1::SignedTreeHead> heads;
};

// An export file: ExportChunk messages, each length-delimited.
absl::StatusOr<LogCopy> ReadExportFile(const std::string& path);
bool WriteExportChunk(const v1::ExportChunk& chunk, std::ostream& out);
// A copy of the broker's SQLite store, opened read-only.
absl::StatusOr<LogCopy> ReadStoreFile(const std::string& path);

struct VerifyReport {
  bool intact = false;
  // The first problem, naming the first bad entry or tree head.
  std::string problem;
  uint64_t entries = 0;
  uint64_t heads = 0;
  uint64_t covered = 0;  // entries covered by the largest verified head
};

VerifyReport Verify(const LogCopy& log, const Key& key);

// Builds the tree of every entry in `log` (for offline proofs).
MerkleTree TreeOf(const LogCopy& log);

}  // namespace carebroker::audit
