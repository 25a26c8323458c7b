#include "broker/store/subject_bloom.h"

#include <cstring>

#include "audit/merkle.h"

namespace carebroker {
namespace {

constexpr int kProbes = 8;
constexpr uint64_t kBits = SubjectBloom::kBytes * 8;

// The bit positions of `subject`: double hashing over a stable hash (the
// filters are stored, so the hash may never change between builds).
std::array<uint64_t, kProbes> Positions(absl::string_view subject) {
  const audit::Hash h = audit::Sha256Of(subject);
  uint64_t a, b;
  std::memcpy(&a, h.data(), 8);
  std::memcpy(&b, h.data() + 8, 8);
  b |= 1;
  std::array<uint64_t, kProbes> out;
  for (int i = 0; i < kProbes; ++i) out[i] = (a + static_cast<uint64_t>(i) * b) % kBits;
  return out;
}

}  // namespace

void SubjectBloom::Add(absl::string_view subject) {
  for (uint64_t p : Positions(subject)) bits_[p / 8] |= static_cast<uint8_t>(1u << (p % 8));
}

bool SubjectBloom::MayContain(absl::string_view filter, absl::string_view subject) {
  if (filter.size() != kBytes) return true;
  for (uint64_t p : Positions(subject)) {
    if ((static_cast<uint8_t>(filter[p / 8]) & (1u << (p % 8))) == 0) return false;
  }
  return true;
}

}  // namespace carebroker
