#include "core/status.h"
#include "core/reasons.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace carebroker {
namespace {
constexpr absl::string_view kReasonUrl = "type.carebroker.nhs.uk/reason";
}  // namespace

absl::Status Error(absl::StatusCode code, absl::string_view reason, absl::string_view message) {
  absl::Status s(code, message);
  s.SetPayload(kReasonUrl, absl::Cord(reason));
  return s;
}

std::string ReasonOf(const absl::Status& s) {
  auto p = s.GetPayload(kReasonUrl);
  return p ? std::string(*p) : std::string();
}

absl::Status ConfigInvalid(absl::string_view key, absl::string_view why) {
  return InvalidArgument(reason::kConfigInvalid, absl::StrCat(key, ": ", why));
}

}  // namespace carebroker
