// Documents: payloads carebroker carries whole, never altered, decided by
// the consent of the one person the sender declares (policy
// PAYLOAD_KIND_DOCUMENT; docs/mesh.md "Documents"). The person is declared
// in the body, never in a header, and Modulus 11 checked:
//   - a FHIR JSON DocumentReference or document Bundle (fhir::IsDocument);
//   - a multipart body (Content-Type multipart/mixed or multipart/related,
//     with a boundary) whose first part is a JSON manifest,
//     Content-Type application/json: {"nhs_number": "9434765919"}; the
//     file follows as the next part(s). Only the first part is read, so a
//     manifest at the start of a chunked message decides it whole.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace carebroker::adapters {

enum class DocumentForm { kFhirDocumentReference, kFhirDocumentBundle, kMultipartManifest };

struct Document {
  DocumentForm form;
  std::string nhs_number;  // Modulus 11 checked
};

// std::nullopt when `payload` is not declared as a document; otherwise its
// person, or why the declaration is unusable: DOCUMENT_INVALID (a multipart
// body without a boundary, a first part that is not a JSON manifest naming
// an NHS number), FHIR_INVALID, NHS_NUMBER_INVALID. Errors never carry the
// values.
std::optional<absl::StatusOr<Document>> ReadDocument(absl::string_view content_type, absl::string_view payload);

// How an audit entry names the form, e.g. "a FHIR document Bundle".
absl::string_view DocumentFormName(DocumentForm form);

}  // namespace carebroker::adapters
