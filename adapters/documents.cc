#include "adapters/documents.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "adapters/fhir/fhir.h"
#include "adapters/formats.h"
#include "core/nhs_number.h"
#include "core/reasons.h"
#include "core/status.h"

namespace carebroker::adapters {
namespace {

absl::Status Invalid(absl::string_view why) { return InvalidArgument(reason::kDocumentInvalid, why); }

// The boundary parameter of a multipart content type, unquoted ("" when absent).
std::string Boundary(absl::string_view content_type) {
  for (absl::string_view param : absl::StrSplit(content_type, ';')) {
    param = absl::StripAsciiWhitespace(param);
    if (!absl::StartsWithIgnoreCase(param, "boundary=")) continue;
    absl::string_view v = param.substr(9);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return std::string(v);
  }
  return "";
}

// The first part of a multipart body (RFC 2046): its headers and body.
absl::StatusOr<Document> ReadManifest(absl::string_view content_type, absl::string_view payload) {
  const std::string boundary = Boundary(content_type);
  if (boundary.empty() || boundary.size() > 70) {
    return Invalid("a multipart document needs a boundary parameter (1 to 70 characters)");
  }
  const std::string delimiter = "--" + boundary;
  size_t at = absl::StartsWith(payload, delimiter) ? 0 : payload.find("\r\n" + delimiter);
  if (at == absl::string_view::npos) return Invalid("the multipart body has no part");
  at = payload.find("\r\n", at == 0 ? 0 : at + 2);  // the end of the delimiter line
  if (at == absl::string_view::npos) return Invalid("the multipart body has no part");
  const size_t head_end = payload.find("\r\n\r\n", at);
  if (head_end == absl::string_view::npos) return Invalid("the first part's headers do not end");
  const absl::string_view head = payload.substr(at + 2, head_end - at - 2);
  const size_t body_start = head_end + 4;
  const size_t body_end = payload.find("\r\n" + delimiter, body_start);
  if (body_end == absl::string_view::npos) return Invalid("the first part does not end before the file");
  bool json = false;
  for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    if (absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(line.substr(0, colon)), "content-type")) {
      json = absl::StartsWithIgnoreCase(absl::StripAsciiWhitespace(line.substr(colon + 1)), "application/json");
    }
  }
  if (!json) return Invalid("the first part of a multipart document is its manifest, Content-Type application/json");
  const absl::string_view body = payload.substr(body_start, body_end - body_start);
  const nlohmann::json manifest = nlohmann::json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (!manifest.is_object() || !manifest.contains("nhs_number") || !manifest["nhs_number"].is_string()) {
    return Invalid("the manifest is a JSON object naming the person: {\"nhs_number\": \"...\"}");
  }
  Document d{DocumentForm::kMultipartManifest, manifest["nhs_number"].get<std::string>()};
  if (!IsValidNhsNumber(d.nhs_number)) {
    return InvalidArgument(reason::kNhsNumberInvalid, "manifest nhs_number is not a valid NHS number (ten digits, Modulus 11)");
  }
  return d;
}

}  // namespace

std::optional<absl::StatusOr<Document>> ReadDocument(absl::string_view content_type, absl::string_view payload) {
  const absl::string_view type = absl::StripAsciiWhitespace(content_type.substr(0, content_type.find(';')));
  if (absl::EqualsIgnoreCase(type, "multipart/mixed") || absl::EqualsIgnoreCase(type, "multipart/related")) {
    return ReadManifest(content_type, payload);
  }
  auto format = FormatByContentType(content_type);
  if (!format.ok() || *format != Format::kFhir || !fhir::IsDocument(payload)) return std::nullopt;
  auto subject = fhir::ReadDocumentSubject(payload);
  if (!subject.ok()) return absl::StatusOr<Document>(subject.status());
  return Document{subject->bundle ? DocumentForm::kFhirDocumentBundle : DocumentForm::kFhirDocumentReference,
                  std::move(subject->nhs_number)};
}

absl::string_view DocumentFormName(DocumentForm form) {
  switch (form) {
    case DocumentForm::kFhirDocumentReference: return "a FHIR DocumentReference";
    case DocumentForm::kFhirDocumentBundle: return "a FHIR document Bundle";
    case DocumentForm::kMultipartManifest: return "a multipart body with a JSON manifest";
  }
  return "a document";
}

}  // namespace carebroker::adapters
