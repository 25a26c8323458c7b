// FHIR XML to the FHIR JSON form, so one reader serves both
// (https://hl7.org/fhir/R4/xml.html and json.html).
//
// The mapping: the root element names the resourceType; an element with a
// value attribute is a primitive (its extensions and id go to "_name"); an
// element whose child is a resource (Bundle.entry.resource, contained)
// holds that resource; every other element is an object. An element is an
// array when FHIR always repeats it (extension, modifierExtension, coding,
// given, prefix, suffix, line) or when it occurs more than once; the JSON
// reader takes a lone object where it expects an array. Primitives stay
// strings. Narrative (xhtml) is dropped.
//
// Hostile input: a DOCTYPE is refused (FHIR XML has none; entity
// declarations live only inside one, so no entity is ever expanded), as are elements outside the FHIR
// namespace other than narrative, text outside value attributes, and
// nesting deeper than 64.
#pragma once

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace carebroker::fhir {

// FHIR_INVALID (INVALID_ARGUMENT) naming the line when the XML is not
// well-formed FHIR XML; never quoting data.
absl::StatusOr<nlohmann::json> FhirXmlToJson(absl::string_view xml);

}  // namespace carebroker::fhir
