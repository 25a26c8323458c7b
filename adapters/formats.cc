#include "adapters/formats.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "adapters/cld/cld.h"
#include "adapters/council/council_json.h"
#include "adapters/fhir/fhir.h"
#include "adapters/hl7v2/adt.h"
#include "core/status.h"
#include "core/vocabulary.h"
#include "core/reasons.h"
#include "google/protobuf/util/json_util.h"

namespace carebroker::adapters {

const std::vector<FormatInfo>& Formats() {
  static const auto* all = new std::vector<FormatInfo>{
      {Format::kCanonical, "canonical", kCareRecordContentType},
      {Format::kCanonicalJson, "canonical-json", "application/json; proto=carebroker.v1.CareRecord"},
      {Format::kHl7v2, "hl7v2", "x-application/hl7-v2+er7"},
      {Format::kFhir, "fhir", "application/fhir+json"},
      {Format::kCouncilJson, "council-json", "application/vnd.carebroker.council+json"},
      {Format::kCld, "cld", "text/csv; profile=asc-cld-release-1"},
  };
  return *all;
}

const FormatInfo& InfoOf(Format f) {
  for (const FormatInfo& i : Formats()) {
    if (i.format == f) return i;
  }
  return Formats().front();
}

absl::StatusOr<Format> FormatByName(absl::string_view name) {
  std::vector<absl::string_view> names;
  for (const FormatInfo& i : Formats()) {
    if (i.name == name) return i.format;
    names.push_back(i.name);
  }
  return InvalidArgument(reason::kFormatUnknown, absl::StrCat("format must be one of ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<Format> FormatByContentType(absl::string_view content_type) {
  const std::string ct = absl::AsciiStrToLower(absl::StripAsciiWhitespace(content_type));
  for (const FormatInfo& i : Formats()) {
    if (absl::EqualsIgnoreCase(ct, i.content_type)) return i.format;
  }
  // The media types alone, with any parameters (fhirVersion=4.0, charset=utf-8).
  const absl::string_view media = absl::StripAsciiWhitespace(absl::string_view(ct).substr(0, ct.find(';')));
  if (media == "application/fhir+json" || media == "application/fhir+xml") return Format::kFhir;
  if (media == "x-application/hl7-v2+er7" || media == "application/hl7-v2") return Format::kHl7v2;
  if (media == "application/vnd.carebroker.council+json") return Format::kCouncilJson;
  return absl::NotFoundError("not a format carebroker reads: an opaque payload");
}

absl::StatusOr<v1::CareRecord> Parse(Format f, absl::string_view bytes, const ReadOptions& options) {
  switch (f) {
    case Format::kCanonical: {
      v1::CareRecord r;
      if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        return InvalidArgument(reason::kPayloadMalformed, "payload is not a carebroker.v1.CareRecord");
      }
      return r;
    }
    case Format::kCanonicalJson: {
      v1::CareRecord r;
      if (!google::protobuf::util::JsonStringToMessage(std::string(bytes), &r).ok()) {
        return InvalidArgument(reason::kPayloadMalformed, "not a carebroker.v1.CareRecord in protobuf JSON");
      }
      return r;
    }
    case Format::kHl7v2: {
      auto adt = hl7::ReadAdt(bytes, {}, options);
      if (!adt.ok()) return adt.status();
      return std::move(adt->record);
    }
    case Format::kFhir: return fhir::ReadFhir(bytes, {}, options);
    case Format::kCouncilJson: return council::ReadCouncilJson(bytes, options);
    case Format::kCld: {
      auto s = cld::ReadCld(bytes, options);
      if (!s.ok()) return s.status();
      if (s->people.size() != 1) {
        return InvalidArgument(reason::kCldInvalid, absl::StrCat("a message is about one person; this file has ", s->people.size(),
                                                           ": send one message per person"));
      }
      return std::move(s->people.front());
    }
  }
  return InvalidArgument(reason::kFormatUnknown, "unknown format");
}

absl::StatusOr<std::string> Render(Format f, const v1::CareRecord& record, const Envelope& env) {
  switch (f) {
    case Format::kCanonical: return record.SerializeAsString();
    case Format::kCanonicalJson: {
      std::string out;
      google::protobuf::util::JsonPrintOptions o;
      o.add_whitespace = true;
      if (!google::protobuf::util::MessageToJsonString(record, &out, o).ok()) {
        return absl::InternalError("the record could not be written as JSON");
      }
      return out;
    }
    case Format::kHl7v2: {
      hl7::Header h;
      h.sending_application = "CAREBROKER";
      h.sending_facility = env.sender;
      h.receiving_facility = env.recipient;
      h.control_id = env.message_id;
      h.sent_at = env.at;
      return hl7::WriteAdt(record, h);
    }
    case Format::kFhir: return fhir::WriteFhirBundle(record, {env.message_id, env.sender, env.recipient, env.at}, 2);
    case Format::kCouncilJson: return council::WriteCouncilJson(record, 2);
    case Format::kCld: {
      // The reporting period is the quarter the message was made in.
      const absl::CivilDay day = absl::ToCivilDay(env.at, absl::UTCTimeZone());
      const int q = (day.month() - 1) / 3;
      const absl::CivilDay start(day.year(), q * 3 + 1, 1);
      const absl::CivilDay end = absl::CivilDay(absl::CivilMonth(start) + 3) - 1;
      cld::Submission s{env.sender, absl::FormatCivilTime(start), absl::FormatCivilTime(end), {record}};
      return cld::WriteCld(s);
    }
  }
  return InvalidArgument(reason::kFormatUnknown, "unknown format");
}

}  // namespace carebroker::adapters
