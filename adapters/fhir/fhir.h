// FHIR R4 (UK Core) to and from the canonical CareRecord.
//
// Read: FHIR JSON or FHIR XML (fhir_xml.h), a Patient, an Encounter, or a Bundle holding them (a message Bundle
// with its MessageHeader, or a searchset/collection/transaction). The NHS
// number is the identifier with system https://fhir.nhs.uk/Id/nhs-number,
// checked with Modulus 11; its verification status is read from the UK Core
// extension under every spelling in use (England, Wales, the retired
// UKCore-NHSNumberVerificationStatus with codes 01..08 or the v2.1.0 words,
// CareConnect). Each Encounter becomes one event: finished (or ended) is a
// discharge, planned an admission PLANNED, cancelled a CANCEL, a current
// location with a completed one a transfer, otherwise an admission.
//
// Write (FHIR JSON): a message Bundle (MessageHeader first, then the Patient, then one
// Encounter per hospital event) in UK Core identifier systems and extensions.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "adapters/common/values.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker::fhir {

inline constexpr char kNhsNumberSystem[] = "https://fhir.nhs.uk/Id/nhs-number";
inline constexpr char kOdsOrganisationSystem[] = "https://fhir.nhs.uk/Id/ods-organization-code";
inline constexpr char kOdsSiteSystem[] = "https://fhir.nhs.uk/Id/ods-site-code";

struct ReadLimits {
  size_t max_bytes = 16 << 20;
  size_t max_entries = 10000;
};

// Errors are INVALID_ARGUMENT with reason FHIR_INVALID (not JSON, wrong
// shapes, bad dates, naming the element path; XML that is not well-formed,
// naming the line), FHIR_UNSUPPORTED (a resource type not listed above) or
// NHS_NUMBER_INVALID; never patient data.
// A FHIR JSON document about one person, named by NHS number: a
// DocumentReference (a PDF, a letter, any file in content[].attachment; the
// person in subject.identifier) or a document Bundle (type "document", its
// first entry the Composition, whose subject is the person: an identifier,
// or a reference to a Patient entry with an NHS number identifier).
// carebroker carries it whole and decides it by that person's consent
// (policy PAYLOAD_KIND_DOCUMENT).
struct DocumentSubject {
  std::string nhs_number;  // Modulus 11 checked
  bool bundle = false;     // a document Bundle, not a DocumentReference
};
// Whether `text` is one of the two (cheap: it must parse).
bool IsDocument(absl::string_view text);
// The person the document is about. FHIR_INVALID when no NHS number
// identifies them (system https://fhir.nhs.uk/Id/nhs-number), when a
// DocumentReference has no attachment with a contentType and data or a url,
// or a document Bundle does not start with its Composition;
// NHS_NUMBER_INVALID when the number fails Modulus 11.
absl::StatusOr<DocumentSubject> ReadDocumentSubject(absl::string_view text);

absl::StatusOr<v1::CareRecord> ReadFhir(absl::string_view text, const ReadLimits& limits = {},
                                        const adapters::ReadOptions& options = {});

// What the MessageHeader says.
struct MessageInfo {
  std::string id;           // Bundle.identifier and MessageHeader.id; 32 hex makes the entries' UUIDs
  std::string source;       // ODS code of the sender
  std::string destination;  // ODS code of the recipient
  absl::Time timestamp = absl::UnixEpoch();
};

// A message Bundle, pretty-printed when `indent` >= 0. FHIR_UNSUPPORTED for
// events FHIR does not carry here (care packages, assessments, reviews,
// referrals, safeguarding): those go to councils as council JSON or CLD.
absl::StatusOr<std::string> WriteFhirBundle(const v1::CareRecord& record, const MessageInfo& info, int indent = -1);

}  // namespace carebroker::fhir
