#include "broker/mesh/headers.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/nhs_number.h"
#include "core/reasons.h"
#include "core/status.h"

namespace carebroker::mesh {
namespace {

struct Rule {
  const char* name;
  size_t max_length;
  bool no_url;         // a value starting http:// or https:// is refused
  bool personal_data;  // checked for an NHS number or a date of birth
};

// MESH.md 1.5, from the specification's and the sandbox's limits.
constexpr Rule kRules[] = {
    {"mex-to", 100, true, false},           {"mex-workflowid", 300, true, false},
    {"mex-chunk-range", 20, false, false},  {"mex-subject", 500, false, true},
    {"mex-localid", 300, false, true},      {"mex-partnerid", 500, false, false},
    {"mex-filename", 300, false, true},     {"mex-content-checksum", 100, true, false},
    {"mex-content-type", 100, false, false}, {"mex-content-compressed", 1, false, false},
    {"mex-content-encrypted", 1, false, false},
};

const Rule* RuleFor(absl::string_view name) {
  for (const Rule& r : kRules) {
    if (name == r.name) return &r;
  }
  return nullptr;
}

bool HasControl(absl::string_view v) {
  for (char c : v) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool IsUrl(absl::string_view v) {
  const std::string lower = absl::AsciiStrToLower(absl::StripLeadingAsciiWhitespace(v));
  return absl::StartsWith(lower, "http://") || absl::StartsWith(lower, "https://");
}

bool Digit(char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); }

// An NHS number starting at `i`: ten digits, or 3-3-4 with one space or
// dash between the groups, not inside a longer run of digits.
bool NhsNumberAt(absl::string_view v, size_t i) {
  if (i > 0 && Digit(v[i - 1])) return false;
  std::string digits;
  size_t j = i;
  while (j < v.size() && digits.size() < 10) {
    if (Digit(v[j])) {
      digits.push_back(v[j++]);
    } else if ((v[j] == ' ' || v[j] == '-') && (digits.size() == 3 || digits.size() == 6) && j + 1 < v.size() &&
               Digit(v[j + 1]) && j > i && Digit(v[j - 1])) {
      ++j;
    } else {
      break;
    }
  }
  if (digits.size() != 10 || (j < v.size() && Digit(v[j]))) return false;
  return IsValidNhsNumber(digits);
}

// A date (d/m/yyyy, dd-mm-yyyy, dd.mm.yyyy, yyyy-mm-dd or yyyymmdd) at `i`.
bool DateAt(absl::string_view v, size_t i) {
  auto run = [&](size_t at) {
    size_t n = 0;
    while (at + n < v.size() && Digit(v[at + n])) ++n;
    return n;
  };
  const size_t a = run(i);
  if (a == 8) return true;  // yyyymmdd or ddmmyyyy
  if (a == 0 || a > 4 || i + a >= v.size()) return false;
  const char sep = v[i + a];
  if (sep != '/' && sep != '-' && sep != '.') return false;
  const size_t b = run(i + a + 1);
  if (b == 0 || b > 2 || i + a + 1 + b >= v.size() || v[i + a + 1 + b] != sep) return false;
  const size_t c = run(i + a + 2 + b);
  return (a <= 2 && c == 4) || (a == 4 && c >= 1 && c <= 2);
}

bool DateOfBirthIn(absl::string_view v) {
  const std::string lower = absl::AsciiStrToLower(v);
  for (std::string_view marker : {"dob", "d.o.b", "born", "birth"}) {
    for (size_t at = lower.find(marker); at != std::string::npos; at = lower.find(marker, at + 1)) {
      // A date right after the marker, with only spaces and punctuation between.
      size_t i = at + marker.size();
      while (i < lower.size() && absl::string_view(" :.-=").find(lower[i]) != absl::string_view::npos) ++i;
      if (i < lower.size() && Digit(lower[i]) && DateAt(lower, i)) return true;
    }
  }
  return false;
}

}  // namespace

bool HoldsPersonalData(absl::string_view value) {
  for (size_t i = 0; i < value.size(); ++i) {
    if (Digit(value[i]) && NhsNumberAt(value, i)) return true;
  }
  return DateOfBirthIn(value);
}

absl::Status CheckSendHeaders(const http::Headers& headers) {
  std::vector<std::string> malformed, personal;
  for (const auto& [name, value] : headers) {
    if (!absl::StartsWith(name, "mex-")) continue;
    const Rule* rule = RuleFor(name);
    const size_t limit = rule != nullptr ? rule->max_length : 500;
    if (HasControl(value) || value.size() > limit || (rule != nullptr && rule->no_url && IsUrl(value))) {
      malformed.push_back(name);
    } else if (rule != nullptr && rule->personal_data && HoldsPersonalData(value)) {
      personal.push_back(name);
    }
  }
  if (!malformed.empty()) {
    return Error(absl::StatusCode::kInvalidArgument, reason::kMeshHeaderMalformed,
                 absl::StrCat("malformed headers (a control character, too long, or a URL): ",
                              absl::StrJoin(malformed, ", ")));
  }
  if (!personal.empty()) {
    return Error(absl::StatusCode::kInvalidArgument, reason::kMeshHeaderPersonalData,
                 absl::StrCat("headers that must not carry person-identifiable data hold an NHS number or a date "
                              "of birth: ",
                              absl::StrJoin(personal, ", "), "; put it in the message body"));
  }
  return absl::OkStatus();
}

}  // namespace carebroker::mesh
