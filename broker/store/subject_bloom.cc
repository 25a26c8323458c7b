#include "broker/store/subject_bloom.h"

#include <cstring>

#include "core/sha256.h"

namespace carebroker {
namespace {

constexpr uint64_t kBits = SubjectBloom::kBytes * 8;

}  // namespace

// Double hashing over a stable hash (the filters are stored, so the hash
// may never change between builds).
SubjectBloom::Probe::Probe(absl::string_view subject) {
  const Sha256Digest h = Sha256Of(subject);
  uint64_t a, b;
  std::memcpy(&a, h.data(), 8);
  std::memcpy(&b, h.data() + 8, 8);
  b |= 1;
  for (size_t i = 0; i < bits_.size(); ++i) bits_[i] = (a + i * b) % kBits;
}

bool SubjectBloom::Probe::MayBeIn(absl::string_view filter) const {
  if (filter.size() != kBytes) return true;
  for (uint64_t p : bits_) {
    if ((static_cast<uint8_t>(filter[p / 8]) & (1u << (p % 8))) == 0) return false;
  }
  return true;
}

void SubjectBloom::Add(absl::string_view subject) {
  for (uint64_t p : Probe(subject).bits_) bits_[p / 8] |= static_cast<uint8_t>(1u << (p % 8));
}

}  // namespace carebroker
