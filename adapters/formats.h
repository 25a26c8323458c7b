// The formats carebroker speaks, by name and content type, and the one place
// that parses any of them to the canonical record and renders the canonical
// record in any of them. Used by the broker (Send, per-recipient output),
// carebroker-connect and `carebrokerctl convert`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "adapters/common/values.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker::adapters {

enum class Format {
  kCanonical,      // carebroker.v1.CareRecord, binary protobuf
  kCanonicalJson,  // carebroker.v1.CareRecord, protobuf JSON
  kHl7v2,          // HL7 v2.4 ADT, ER7
  kFhir,           // FHIR R4 JSON, UK Core
  kCouncilJson,    // docs/council-json.md
  kCld,            // Adult Social Care Client Level Data CSV, Release 1
};

struct FormatInfo {
  Format format;
  absl::string_view name;          // as config and the CLI spell it, e.g. "fhir"
  absl::string_view content_type;  // as Send and Receive carry it
};

const std::vector<FormatInfo>& Formats();
const FormatInfo& InfoOf(Format f);

// INVALID_ARGUMENT FORMAT_UNKNOWN listing the names.
absl::StatusOr<Format> FormatByName(absl::string_view name);
// The format of a content type (parameters after ';' and case ignored for
// the names carebroker issues), or NOT_FOUND for anything else (an opaque
// payload).
absl::StatusOr<Format> FormatByContentType(absl::string_view content_type);

// One message: one person. A CLD file of several people is refused
// (CLD_INVALID): send one message per person.
absl::StatusOr<v1::CareRecord> Parse(Format f, absl::string_view bytes, const ReadOptions& options = {});

// What the envelope adds when rendering (FHIR MessageHeader, HL7 MSH, CLD LA Code).
struct Envelope {
  std::string message_id;
  std::string sender;     // ODS code
  std::string recipient;  // ODS code
  absl::Time at = absl::UnixEpoch();
};

absl::StatusOr<std::string> Render(Format f, const v1::CareRecord& record, const Envelope& envelope);

}  // namespace carebroker::adapters
