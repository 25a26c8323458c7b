#include "audit/merkle.h"

#include <bit>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>

namespace carebroker::audit {
namespace {

// The largest power of two strictly smaller than n (n >= 2).
uint64_t SplitPoint(uint64_t n) { return std::bit_floor(n - 1); }

}  // namespace

Hash LeafHash(absl::string_view entry) { return Sha256Parts({absl::string_view("\0", 1), entry}); }

Hash NodeHash(const Hash& left, const Hash& right) {
  char buf[65];
  buf[0] = 0x01;
  std::memcpy(buf + 1, left.data(), 32);
  std::memcpy(buf + 33, right.data(), 32);
  return Sha256Parts({absl::string_view(buf, sizeof buf)});
}

Hash EmptyRoot() { return Sha256Of(""); }

std::string ToHex(const Hash& h) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < h.size(); ++i) {
    out[2 * i] = kDigits[h[i] >> 4];
    out[2 * i + 1] = kDigits[h[i] & 15];
  }
  return out;
}

bool HashFromBytes(absl::string_view bytes, Hash* out) {
  if (bytes.size() != out->size()) return false;
  std::memcpy(out->data(), bytes.data(), out->size());
  return true;
}

void MerkleTree::Append(const Hash& leaf_hash) {
  if (levels_.empty()) levels_.emplace_back();
  levels_[0].push_back(leaf_hash);
  // Close every subtree this leaf completes.
  for (size_t k = 0; levels_[k].size() % 2 == 0; ++k) {
    if (k + 1 == levels_.size()) levels_.emplace_back();
    const auto& lv = levels_[k];
    levels_[k + 1].push_back(NodeHash(lv[lv.size() - 2], lv[lv.size() - 1]));
  }
}

Hash MerkleTree::Subtree(uint64_t begin, uint64_t end) const {
  const uint64_t n = end - begin;
  if (std::has_single_bit(n) && begin % n == 0) {
    const int k = std::countr_zero(n);
    return levels_[k][begin >> k];
  }
  const uint64_t split = SplitPoint(n);
  return NodeHash(Subtree(begin, begin + split), Subtree(begin + split, end));
}

Hash MerkleTree::Root(uint64_t n) const { return n == 0 ? EmptyRoot() : Subtree(0, n); }

void MerkleTree::Path(uint64_t index, uint64_t begin, uint64_t end, std::vector<Hash>* out) const {
  const uint64_t n = end - begin;
  if (n <= 1) return;
  const uint64_t split = SplitPoint(n);
  if (index < split) {
    Path(index, begin, begin + split, out);
    out->push_back(Subtree(begin + split, end));
  } else {
    Path(index - split, begin + split, end, out);
    out->push_back(Subtree(begin, begin + split));
  }
}

std::vector<Hash> MerkleTree::InclusionProof(uint64_t index, uint64_t n) const {
  std::vector<Hash> out;
  if (index < n && n <= size()) Path(index, 0, n, &out);
  return out;
}

void MerkleTree::SubProof(uint64_t m, uint64_t begin, uint64_t end, bool whole, std::vector<Hash>* out) const {
  const uint64_t n = end - begin;
  if (m == n) {
    if (!whole) out->push_back(Subtree(begin, end));
    return;
  }
  const uint64_t split = SplitPoint(n);
  if (m <= split) {
    SubProof(m, begin, begin + split, whole, out);
    out->push_back(Subtree(begin + split, end));
  } else {
    SubProof(m - split, begin + split, end, false, out);
    out->push_back(Subtree(begin, begin + split));
  }
}

std::vector<Hash> MerkleTree::ConsistencyProof(uint64_t m, uint64_t n) const {
  std::vector<Hash> out;
  if (0 < m && m < n && n <= size()) SubProof(m, 0, n, true, &out);
  return out;
}

bool VerifyInclusion(const Hash& leaf_hash, uint64_t index, uint64_t tree_size, std::span<const Hash> proof,
                     const Hash& root) {
  if (index >= tree_size) return false;
  uint64_t fn = index, sn = tree_size - 1;
  Hash r = leaf_hash;
  for (const Hash& p : proof) {
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      r = NodeHash(p, r);
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      r = NodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

bool VerifyConsistency(uint64_t m, uint64_t n, const Hash& root_m, const Hash& root_n,
                       std::span<const Hash> proof) {
  if (m > n) return false;
  if (m == n) return proof.empty() && root_m == root_n;
  if (m == 0) return proof.empty() && root_m == EmptyRoot();
  if (proof.empty()) return false;
  std::vector<Hash> path;
  if (std::has_single_bit(m)) path.push_back(root_m);
  path.insert(path.end(), proof.begin(), proof.end());
  uint64_t fn = m - 1, sn = n - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  Hash fr = path[0], sr = path[0];
  for (size_t i = 1; i < path.size(); ++i) {
    const Hash& c = path[i];
    if (sn == 0) return false;
    if ((fn & 1) || fn == sn) {
      fr = NodeHash(c, fr);
      sr = NodeHash(c, sr);
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      sr = NodeHash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return fr == root_m && sr == root_n && sn == 0;
}

}  // namespace carebroker::audit
