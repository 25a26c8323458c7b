// Enum values as people write them: "local-authority" for
// ORGANISATION_KIND_LOCAL_AUTHORITY. Used by the YAML reader, the CLIs, the
// audit queries and the policy explanations, so one spelling is shown and
// accepted everywhere.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace carebroker {

// The value of enum `e` written as in YAML: its name with or without the
// enum's prefix, any case, '-' or ' ' for '_' ("local-authority" ->
// ORGANISATION_KIND_LOCAL_AUTHORITY). Null when there is none.
const google::protobuf::EnumValueDescriptor* FindEnumValue(const google::protobuf::EnumDescriptor* e,
                                                          absl::string_view v);

// The inverse, for people: "local-authority" for
// ORGANISATION_KIND_LOCAL_AUTHORITY; the number if `number` has no name.
std::string EnumShortName(const google::protobuf::EnumDescriptor* e, int number);

}  // namespace carebroker
