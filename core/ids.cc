#include "core/ids.h"

#include <cstdint>
#include <random>

#include "absl/random/random.h"
#include "absl/strings/str_format.h"

namespace carebroker {

MessageId NewMessageId(absl::Time now) {
  thread_local absl::BitGen gen;
  const uint64_t ms = static_cast<uint64_t>(absl::ToUnixMillis(now)) & 0xFFFFFFFFFFFFull;
  const uint64_t hi = absl::Uniform<uint64_t>(gen) & 0xFFFFFFFFFFull;  // 40 bits
  const uint64_t lo = absl::Uniform<uint64_t>(gen) & 0xFFFFFFFFFFull;  // 40 bits
  return MessageId(absl::StrFormat("%012x%010x%010x", ms, hi, lo));
}

bool IsMessageIdShape(absl::string_view s) {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace carebroker
