// A Bloom filter of the audit subjects in one block of the log.
//
// Searching the log by person (a subject access request) must not need an
// index keyed by subject: subjects are keyed hashes, so every entry would
// land on a random index page and each commit would rewrite hundreds of
// them. Instead the store writes, beside every full block of
// kAuditBlockEntries entries, a filter of the subjects in it: an append
// only ever adds rows at the end, and a search reads the filters and scans
// only the blocks that may hold the person (false positives about 1 in
// 1,700 with a block of distinct people; never a false negative).
#pragma once

#include <array>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace carebroker {

inline constexpr uint64_t kAuditBlockEntries = 1024;

class SubjectBloom {
 public:
  static constexpr size_t kBytes = 2048;  // 16 bits per entry of a full block

  void Add(absl::string_view subject);
  void Clear() { bits_.fill(0); }
  absl::string_view bytes() const {
    return absl::string_view(reinterpret_cast<const char*>(bits_.data()), bits_.size());
  }

  // One subject's bits, worked out once to test many stored filters.
  class Probe {
   public:
    explicit Probe(absl::string_view subject);
    // Whether `filter` (the bytes of a stored SubjectBloom) may hold the
    // subject. A filter of the wrong size may hold anything.
    bool MayBeIn(absl::string_view filter) const;

   private:
    friend class SubjectBloom;
    std::array<uint64_t, 8> bits_;
  };

 private:
  std::array<uint8_t, kBytes> bits_{};
};

}  // namespace carebroker
