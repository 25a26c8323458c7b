// Reads YAML documents into protobuf messages by reflection: keys are field
// names, nested maps are messages, sequences are repeated fields, enums are
// value names (with or without the enum's prefix, any case, '-' for '_'),
// google.protobuf.Duration is a string such as "30s", "90m", "5d", "1h30m".
//
// Every error names the place: "FILE:LINE: path.to.key: reason". Unknown
// keys, wrong types, the _UNSPECIFIED enum value and two members of one
// oneof are errors. Used for the broker config and for agreements.
#pragma once

#include <map>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/enum_names.h"
#include "core/time.h"
#include "google/protobuf/message.h"

namespace YAML {
class Node;
}

namespace carebroker {

// Where each key path was written, for errors found after parsing
// (e.g. "organisations[2].kind" -> 14). Lines are 1-based.
using YamlLines = std::map<std::string, int, std::less<>>;

// Parses `text` (named `file` in errors) into `msg`, which is cleared
// first. `lines`, when given, receives the line of every key path.
absl::Status YamlToProto(absl::string_view text, absl::string_view file,
                         google::protobuf::Message* msg, YamlLines* lines = nullptr);

// "FILE:LINE: PATH: reason" using the line recorded for PATH (or the
// nearest recorded parent path), as an INVALID_ARGUMENT status.
absl::Status YamlError(absl::string_view file, const YamlLines& lines, absl::string_view path,
                       absl::string_view reason);

}  // namespace carebroker
