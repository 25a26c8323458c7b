#include "core/shapes.h"

#include "absl/strings/ascii.h"

namespace carebroker {

bool IsOdsCodeShape(absl::string_view s) {
  if (s.size() < 3 || s.size() > 10) return false;
  for (char c : s) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

bool IsWorkflowShape(absl::string_view s) {
  if (s.empty() || s.size() > 64 || !absl::ascii_isupper(s[0])) return false;
  for (char c : s) {
    if (!(absl::ascii_isupper(c) || absl::ascii_isdigit(c) || c == '_')) return false;
  }
  return s.back() != '_';
}

bool IsPostcodeDistrictShape(absl::string_view s) {
  // One or two letters, a digit, then an optional letter or digit.
  size_t i = 0;
  while (i < s.size() && i < 2 && absl::ascii_isupper(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i >= s.size() || !absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) return false;
  ++i;
  if (i < s.size() && (absl::ascii_isupper(static_cast<unsigned char>(s[i])) || absl::ascii_isdigit(static_cast<unsigned char>(s[i])))) ++i;
  return i == s.size();
}

bool IsPurposeShape(absl::string_view s) {
  if (s.empty() || s.size() > 64 || !absl::ascii_islower(s[0]) || s.back() == '-') return false;
  for (char c : s) {
    if (!(absl::ascii_islower(c) || c == '-')) return false;
  }
  return s.find("--") == absl::string_view::npos;
}

}  // namespace carebroker
