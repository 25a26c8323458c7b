#include "core/enum_names.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"

namespace carebroker {
namespace {

using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;

// The prefix shared by an enum's values, from its _UNSPECIFIED value.
std::string EnumPrefix(const EnumDescriptor* e) {
  const std::string& zero = e->value(0)->name();
  constexpr absl::string_view kSuffix = "UNSPECIFIED";
  if (zero.size() > kSuffix.size() && absl::EndsWith(zero, kSuffix)) {
    return zero.substr(0, zero.size() - kSuffix.size());
  }
  return "";
}

}  // namespace

const google::protobuf::EnumValueDescriptor* FindEnumValue(const google::protobuf::EnumDescriptor* e,
                                                          absl::string_view v) {
  std::string norm = absl::AsciiStrToUpper(absl::StrReplaceAll(v, {{"-", "_"}, {" ", "_"}}));
  if (const auto* ev = e->FindValueByName(norm)) return ev;
  return e->FindValueByName(EnumPrefix(e) + norm);
}

std::string EnumShortName(const google::protobuf::EnumDescriptor* e, int number) {
  const EnumValueDescriptor* ev = e->FindValueByNumber(number);
  if (ev == nullptr) return absl::StrCat(number);
  absl::string_view name = ev->name();
  absl::ConsumePrefix(&name, EnumPrefix(e));
  return absl::StrReplaceAll(absl::AsciiStrToLower(name), {{"_", "-"}});
}

}  // namespace carebroker
