// The audit log's Merkle tree: RFC 9162 (Certificate Transparency v2)
// section 2.1 hashing, with inclusion and consistency proofs and their
// verification.
//
//   leaf hash  = SHA-256(0x00 || entry)
//   node hash  = SHA-256(0x01 || left || right)
//   MTH(D[n])  splits at k, the largest power of two smaller than n;
//   MTH({})    = SHA-256("").
//
// MerkleTree keeps the hash of every complete, aligned subtree (about two
// hashes per leaf, 64 bytes), so a root, an inclusion proof or a
// consistency proof for any earlier tree size costs O(log^2 n) hashes.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/sha256.h"

namespace carebroker::audit {

using Hash = Sha256Digest;
using carebroker::Sha256Of;

Hash LeafHash(absl::string_view entry);
Hash NodeHash(const Hash& left, const Hash& right);
Hash EmptyRoot();

std::string ToHex(const Hash& h);
// Exactly 32 bytes, else false.
bool HashFromBytes(absl::string_view bytes, Hash* out);
inline absl::string_view AsBytes(const Hash& h) {
  return absl::string_view(reinterpret_cast<const char*>(h.data()), h.size());
}

class MerkleTree {
 public:
  void Append(const Hash& leaf_hash);
  uint64_t size() const { return levels_.empty() ? 0 : levels_[0].size(); }
  const Hash& leaf(uint64_t i) const { return levels_[0][i]; }

  // The root of the tree of the first n leaves (n <= size()).
  Hash Root(uint64_t n) const;
  Hash Root() const { return Root(size()); }

  // RFC 9162 2.1.3.1: the audit path of leaf `index` in the tree of the
  // first n leaves (index < n <= size()).
  std::vector<Hash> InclusionProof(uint64_t index, uint64_t n) const;

  // RFC 9162 2.1.4.1: proof that the tree of the first m leaves is a
  // prefix of the tree of the first n (0 < m < n <= size()); empty for
  // m == n or m == 0.
  std::vector<Hash> ConsistencyProof(uint64_t m, uint64_t n) const;

 private:
  // MTH(D[begin:end]), end > begin.
  Hash Subtree(uint64_t begin, uint64_t end) const;
  void Path(uint64_t index, uint64_t begin, uint64_t end, std::vector<Hash>* out) const;
  void SubProof(uint64_t m, uint64_t begin, uint64_t end, bool whole, std::vector<Hash>* out) const;

  // levels_[k][i]: the hash of leaves [i * 2^k, (i + 1) * 2^k).
  std::vector<std::vector<Hash>> levels_;
};

// RFC 9162 2.1.3.2. False for any malformed input.
bool VerifyInclusion(const Hash& leaf_hash, uint64_t index, uint64_t tree_size, std::span<const Hash> proof,
                     const Hash& root);

// RFC 9162 2.1.4.2, plus the trivial cases: m == n needs an empty proof
// and equal roots; m == 0 needs an empty proof and the empty root.
bool VerifyConsistency(uint64_t m, uint64_t n, const Hash& root_m, const Hash& root_n,
                       std::span<const Hash> proof);

}  // namespace carebroker::audit
