#include "core/ids.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

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

std::string PersonKey(absl::string_view nhs_number, const v1::LocalIdentifier& local) {
  if (!nhs_number.empty()) return std::string(nhs_number);
  if (local.value().empty()) return "";
  return absl::StrCat(local.assigner(), "|", local.value());
}

bool IsLocalIdentifierShape(const v1::LocalIdentifier& l) {
  auto ok = [](absl::string_view s, size_t max) {
    if (s.empty() || s.size() > max) return false;
    for (char c : s) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' && c != '/' && c != ':') {
        return false;
      }
    }
    return true;
  };
  return ok(l.value(), 64) && ok(l.assigner(), 40);
}

}  // namespace carebroker
