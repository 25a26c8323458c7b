#include "adapters/fhir/fhir.h"

#include <array>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "adapters/common/values.h"
#include "core/nhs_number.h"
#include "adapters/fhir/fhir_xml.h"
#include "core/shapes.h"
#include "core/status.h"
#include "core/reasons.h"

namespace carebroker::fhir {
namespace {

using adapters::CheckedNhsNumber;
using adapters::FormatDate;
using adapters::FormatDateTime;
using adapters::ParseDate;
using adapters::ParseDateTime;
using Json = nlohmann::json;

absl::Status Invalid(absl::string_view what) { return InvalidArgument(reason::kFhirInvalid, what); }
absl::Status Unsupported(absl::string_view what) { return InvalidArgument(reason::kFhirUnsupported, what); }

constexpr char kVerificationExtension[] = "NHSNumberVerificationStatus";
constexpr char kUkCoreExtension[] = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-";
constexpr char kActCode[] = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
constexpr char kV2IdentifierType[] = "http://terminology.hl7.org/CodeSystem/v2-0203";

// Every CodeSystem spelling of the NHS-number verification status in use.
constexpr std::array<absl::string_view, 4> kVerificationSystems = {
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland",
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusWales",
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus",
    "https://fhir.hl7.org.uk/CareConnect-NHSNumberVerificationStatus-1",
};
// The words the retired CodeSystem's v2.1.0 used for 01..08.
constexpr std::array<absl::string_view, 8> kVerificationWords = {
    "number-present-and-verified",
    "number-present-but-not-traced",
    "trace-required",
    "trace-attempted-no-match-or-multiple-match-found",
    "trace-needs-to-be-resolved",
    "trace-in-progress",
    "number-not-present-and-trace-not-required",
    "trace-postponed",
};
constexpr std::array<absl::string_view, 8> kVerificationDisplays = {
    "Number present and verified",
    "Number present but not traced",
    "Trace required",
    "Trace attempted - No match or multiple match found",
    "Trace needs to be resolved - (NHS Number or patient detail conflict)",
    "Trace in progress",
    "Number not present and trace not required",
    "Trace postponed (baby under six weeks old)",
};

// Reads one resource with its path for errors ("Patient.identifier[1]").
class Reader {
 public:
  // The member `key` of object `o` (null when absent or `o` is no object).
  static const Json* At(const Json& o, const char* key) {
    if (!o.is_object()) return nullptr;
    const auto it = o.find(key);
    return it == o.end() || it->is_null() ? nullptr : &*it;
  }

  // A string member; FHIR_INVALID when present with another type.
  static absl::Status Str(const Json& o, const char* key, const std::string& path, std::string* out) {
    const Json* v = At(o, key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Invalid(absl::StrCat(path, ".", key, ": expected a string"));
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  // The elements of an array member (a lone object counts as one, as
  // tolerant readers of FHIR do); FHIR_INVALID for any other type.
  static absl::StatusOr<std::vector<const Json*>> Each(const Json& o, const char* key, const std::string& path) {
    std::vector<const Json*> out;
    const Json* v = At(o, key);
    if (v == nullptr) return out;
    if (v->is_object()) {
      out.push_back(v);
    } else if (v->is_array()) {
      for (const Json& e : *v) {
        if (!e.is_object()) return Invalid(absl::StrCat(path, ".", key, ": expected objects"));
        out.push_back(&e);
      }
    } else {
      return Invalid(absl::StrCat(path, ".", key, ": expected an array"));
    }
    return out;
  }
};

// Resource types of FHIR STU3 and DSTU2 that R4 renamed or removed.
constexpr std::array<absl::string_view, 20> kPreR4Types = {
    "ReferralRequest",  "ProcedureRequest", "DiagnosticOrder",   "DiagnosticRequest", "DeviceUseRequest",
    "Order",            "OrderResponse",    "ProcessRequest",    "ProcessResponse",   "EligibilityRequest",
    "EligibilityResponse", "DataElement",   "ExpansionProfile",  "ImagingManifest",   "ImagingObjectSelection",
    "BodySite",         "Conformance",      "MedicationOrder",   "Sequence",          "ServiceDefinition"};

absl::Status OtherVersion(const std::string& path, absl::string_view what) {
  return InvalidArgument(reason::kFhirVersionUnsupported,
                         absl::StrCat(path, ": ", what, ", which is FHIR STU3 or DSTU2; carebroker reads FHIR R4 "
                                                        "(UK Core): send R4, or convert the message first"));
}

// Refuses a resource whose shape is that of FHIR before R4: read as R4 its
// elements would be misread or dropped. Looks at the resource itself, not
// the resources inside it.
absl::Status CheckR4(const Json& r, const std::string& path) {
  if (!r.is_object()) return absl::OkStatus();
  const std::string type = r.value("resourceType", "");
  for (absl::string_view old : kPreR4Types) {
    if (type == old) return OtherVersion(path, absl::StrCat("resource type ", type));
  }
  if (const Json* meta = Reader::At(r, "meta"); meta != nullptr && meta->is_object()) {
    const Json* profiles = Reader::At(*meta, "profile");
    for (size_t i = 0; profiles != nullptr && profiles->is_array() && i < profiles->size(); ++i) {
      const Json& p = (*profiles)[i];
      if (!p.is_string()) continue;
      const std::string url = p.get<std::string>();
      if (absl::StrContains(url, "/STU3/") || absl::StrContains(url, "/DSTU2/") ||
          absl::StrContains(url, "CareConnect-")) {
        return OtherVersion(absl::StrCat(path, ".meta.profile[", i, "]"), "a profile of FHIR STU3 (CareConnect)");
      }
    }
  }
  if (type == "Encounter") {
    if (r.contains("patient")) return OtherVersion(path + ".patient", "Encounter.patient (R4 has subject)");
    if (const Json* c = Reader::At(r, "class"); c != nullptr && c->is_string()) {
      return OtherVersion(path + ".class", "a code-valued Encounter.class (R4 has a Coding)");
    }
    if (r.contains("incomingReferral")) return OtherVersion(path + ".incomingReferral", "Encounter.incomingReferral");
  }
  if (type == "Patient") {
    if (r.contains("careProvider")) return OtherVersion(path + ".careProvider", "Patient.careProvider");
    if (r.contains("animal")) return OtherVersion(path + ".animal", "Patient.animal");
  }
  if (type == "MessageHeader" && (r.contains("event") || r.contains("timestamp"))) {
    return OtherVersion(path, "MessageHeader.event or .timestamp (R4 has eventCoding, and no timestamp)");
  }
  return absl::OkStatus();
}

std::string Index(const std::string& path, const char* key, size_t i) { return absl::StrCat(path, ".", key, "[", i, "]"); }

// The first coding's code of a CodeableConcept member, "" when none.
std::string FirstCode(const Json& concept_holder, const char* key) {
  const Json* cc = Reader::At(concept_holder, key);
  if (cc == nullptr) return "";
  const Json* codings = Reader::At(*cc, "coding");
  if (codings == nullptr || !codings->is_array() || codings->empty()) {
    // A Coding, not a CodeableConcept (Encounter.class); or a concept the
    // sender gave as its own text only.
    const Json* code = Reader::At(*cc, "code");
    if (code == nullptr) code = Reader::At(*cc, "text");
    return code != nullptr && code->is_string() ? code->get<std::string>() : "";
  }
  const Json* code = Reader::At((*codings)[0], "code");
  return code != nullptr && code->is_string() ? code->get<std::string>() : "";
}

// The extension whose url ends with `name` (UK Core or NHS England spelling).
const Json* FindExtension(const Json& o, absl::string_view name) {
  const Json* exts = Reader::At(o, "extension");
  if (exts == nullptr || !exts->is_array()) return nullptr;
  for (const Json& e : *exts) {
    const Json* url = Reader::At(e, "url");
    if (url != nullptr && url->is_string() && absl::StrContains(url->get<std::string>(), name)) return &e;
  }
  return nullptr;
}

v1::NhsNumberStatus VerificationStatusOf(const Json& identifier) {
  const Json* ext = FindExtension(identifier, kVerificationExtension);
  if (ext == nullptr) return v1::NHS_NUMBER_STATUS_UNSPECIFIED;
  const Json* cc = Reader::At(*ext, "valueCodeableConcept");
  const Json* codings = cc != nullptr ? Reader::At(*cc, "coding") : nullptr;
  if (codings == nullptr || !codings->is_array()) return v1::NHS_NUMBER_STATUS_UNSPECIFIED;
  for (const Json& c : *codings) {
    const Json* system = Reader::At(c, "system");
    const Json* code = Reader::At(c, "code");
    if (code == nullptr || !code->is_string()) continue;
    if (system != nullptr && system->is_string() &&
        std::find(kVerificationSystems.begin(), kVerificationSystems.end(), system->get<std::string>()) ==
            kVerificationSystems.end()) {
      continue;
    }
    const std::string v = code->get<std::string>();
    if (v.size() == 2 && v[0] == '0' && v[1] >= '1' && v[1] <= '8') return static_cast<v1::NhsNumberStatus>(v[1] - '0');
    for (size_t i = 0; i < kVerificationWords.size(); ++i) {
      if (v == kVerificationWords[i]) return static_cast<v1::NhsNumberStatus>(i + 1);
    }
  }
  return v1::NHS_NUMBER_STATUS_UNSPECIFIED;
}

bool IsNhsNumberSystem(absl::string_view s) {
  return absl::EqualsIgnoreCase(s, kNhsNumberSystem) || s == "http://fhir.nhs.net/Id/nhs-number" ||
         s == "urn:oid:2.16.840.1.113883.2.1.4.1";
}

bool IsOdsSystem(absl::string_view s) {
  return absl::EqualsIgnoreCase(s, kOdsOrganisationSystem) || absl::EqualsIgnoreCase(s, kOdsSiteSystem);
}

absl::Status ReadIdentifiers(const Json& patient, const std::string& path, const adapters::ReadOptions& options,
                             v1::Person* p) {
  auto ids = Reader::Each(patient, "identifier", path);
  if (!ids.ok()) return ids.status();
  for (size_t i = 0; i < ids->size(); ++i) {
    const Json& id = *(*ids)[i];
    const std::string at = Index(path, "identifier", i);
    std::string system, value;
    if (absl::Status s = Reader::Str(id, "system", at, &system); !s.ok()) return s;
    if (absl::Status s = Reader::Str(id, "value", at, &value); !s.ok()) return s;
    if (IsNhsNumberSystem(system)) {
      if (!p->nhs_number().empty()) return Invalid(absl::StrCat(at, ": a second NHS number"));
      auto n = CheckedNhsNumber(value, absl::StrCat(at, ".value"), options);
      if (!n.ok()) return n.status();
      p->set_nhs_number(*std::move(n));
      p->set_nhs_number_status(VerificationStatusOf(id));
      continue;
    }
    if (value.empty()) continue;
    v1::LocalIdentifier* local = p->add_local_identifiers();
    local->set_value(value);
    std::string assigner;
    if (const Json* a = Reader::At(id, "assigner"); a != nullptr) {
      if (const Json* aid = Reader::At(*a, "identifier"); aid != nullptr) {
        if (absl::Status s = Reader::Str(*aid, "value", at + ".assigner.identifier", &assigner); !s.ok()) return s;
      }
    }
    local->set_assigner(assigner.empty() ? system : assigner);
    local->set_type(FirstCode(id, "type"));
  }
  return absl::OkStatus();
}

absl::Status ReadNames(const Json& patient, const std::string& path, v1::Person* p) {
  auto names = Reader::Each(patient, "name", path);
  if (!names.ok()) return names.status();
  for (size_t i = 0; i < names->size(); ++i) {
    const Json& n = *(*names)[i];
    const std::string at = Index(path, "name", i);
    v1::PersonName* out = p->add_names();
    if (absl::Status s = Reader::Str(n, "family", at, out->mutable_family()); !s.ok()) return s;
    if (absl::Status s = Reader::Str(n, "use", at, out->mutable_use()); !s.ok()) return s;
    for (const char* key : {"given", "prefix"}) {
      const Json* list = Reader::At(n, key);
      if (list == nullptr) continue;
      if (!list->is_array()) return Invalid(absl::StrCat(at, ".", key, ": expected an array of strings"));
      for (const Json& g : *list) {
        if (!g.is_string()) return Invalid(absl::StrCat(at, ".", key, ": expected an array of strings"));
        if (key[0] == 'g') {
          out->add_given(g.get<std::string>());
        } else if (out->prefix().empty()) {
          out->set_prefix(g.get<std::string>());
        }
      }
    }
  }
  return absl::OkStatus();
}

// HL7 table 0190 address types and FHIR address uses, after the v2-to-FHIR
// ConceptMaps (both ways; a use read back takes its first type). M, a
// mailing address, is a FHIR type (postal), not a use.
constexpr std::array<std::pair<absl::string_view, absl::string_view>, 5> kAddressUses = {{
    {"H", "home"}, {"B", "work"}, {"O", "work"}, {"C", "temp"}, {"BA", "old"},
}};

absl::Status ReadAddress(const Json& patient, const std::string& path, v1::Person* p) {
  auto addresses = Reader::Each(patient, "address", path);
  if (!addresses.ok()) return addresses.status();
  if (addresses->empty()) return absl::OkStatus();
  size_t pick = 0;  // the home address if one is marked, else the first
  for (size_t i = 0; i < addresses->size(); ++i) {
    const Json* use = Reader::At(*(*addresses)[i], "use");
    if (use != nullptr && use->is_string() && use->get<std::string>() == "home") {
      pick = i;
      break;
    }
  }
  const Json& a = *(*addresses)[pick];
  const std::string at = Index(path, "address", pick);
  v1::Address* out = p->mutable_address();
  if (const Json* lines = Reader::At(a, "line"); lines != nullptr) {
    if (!lines->is_array()) return Invalid(absl::StrCat(at, ".line: expected an array of strings"));
    for (const Json& l : *lines) {
      if (!l.is_string()) return Invalid(absl::StrCat(at, ".line: expected an array of strings"));
      out->add_lines(l.get<std::string>());
    }
  }
  if (absl::Status s = Reader::Str(a, "city", at, out->mutable_city()); !s.ok()) return s;
  if (absl::Status s = Reader::Str(a, "district", at, out->mutable_district()); !s.ok()) return s;
  std::string postcode;
  if (absl::Status s = Reader::Str(a, "postalCode", at, &postcode); !s.ok()) return s;
  out->set_postcode(absl::AsciiStrToUpper(postcode));
  if (absl::Status s = Reader::Str(a, "country", at, out->mutable_country()); !s.ok()) return s;
  std::string use, type;
  if (absl::Status s = Reader::Str(a, "use", at, &use); !s.ok()) return s;
  if (absl::Status s = Reader::Str(a, "type", at, &type); !s.ok()) return s;
  if (type == "postal") {
    out->set_type("M");
  } else {
    for (const auto& [hl7, fhir] : kAddressUses) {
      if (use == fhir) {
        out->set_type(std::string(hl7));
        break;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ReadPatient(const Json& r, const std::string& path, const adapters::ReadOptions& options, v1::Person* p) {
  if (absl::Status s = ReadIdentifiers(r, path, options, p); !s.ok()) return s;
  if (absl::Status s = ReadNames(r, path, p); !s.ok()) return s;
  std::string gender, birth, deceased;
  if (absl::Status s = Reader::Str(r, "gender", path, &gender); !s.ok()) return s;
  if (gender == "male") p->set_sex(v1::SEX_MALE);
  else if (gender == "female") p->set_sex(v1::SEX_FEMALE);
  else if (gender == "other") p->set_sex(v1::SEX_NOT_SPECIFIED);
  else if (gender == "unknown") p->set_sex(v1::SEX_NOT_KNOWN);
  else if (!gender.empty()) return Invalid(absl::StrCat(path, ".gender: expected male, female, other or unknown"));
  if (absl::Status s = Reader::Str(r, "birthDate", path, &birth); !s.ok()) return s;
  if (!birth.empty()) {
    auto d = ParseDate(birth, path + ".birthDate");
    if (!d.ok()) return d.status();
    *p->mutable_birth_date() = *d;
  }
  if (absl::Status s = Reader::Str(r, "deceasedDateTime", path, &deceased); !s.ok()) return s;
  if (!deceased.empty()) {
    auto d = ParseDate(deceased.substr(0, 10), path + ".deceasedDateTime");
    if (!d.ok()) return d.status();
    *p->mutable_death_date() = *d;
  }
  if (absl::Status s = ReadAddress(r, path, p); !s.ok()) return s;
  auto gps = Reader::Each(r, "generalPractitioner", path);
  if (!gps.ok()) return gps.status();
  for (const Json* gp : *gps) {
    const Json* id = Reader::At(*gp, "identifier");
    if (id == nullptr) continue;
    std::string system, value;
    if (absl::Status s = Reader::Str(*id, "system", path + ".generalPractitioner.identifier", &system); !s.ok()) return s;
    if (absl::Status s = Reader::Str(*id, "value", path + ".generalPractitioner.identifier", &value); !s.ok()) return s;
    if (IsOdsSystem(system) && p->gp_practice().empty()) p->set_gp_practice(value);
  }
  if (const Json* eth = FindExtension(r, "EthnicCategory"); eth != nullptr) p->set_ethnicity(FirstCode(*eth, "valueCodeableConcept"));
  return absl::OkStatus();
}

// The identifier value of a Reference, or its display.
std::string ReferenceCode(const Json* ref) {
  if (ref == nullptr) return "";
  if (const Json* id = Reader::At(*ref, "identifier"); id != nullptr) {
    const Json* v = Reader::At(*id, "value");
    if (v != nullptr && v->is_string()) return v->get<std::string>();
  }
  return "";
}

absl::Status ReadTime(const Json& o, const char* key, const std::string& path, google::protobuf::Timestamp* out,
                      bool* present) {
  *present = false;
  std::string v;
  if (absl::Status s = Reader::Str(o, key, path, &v); !s.ok()) return s;
  if (v.empty()) return absl::OkStatus();
  auto t = ParseDateTime(v, absl::StrCat(path, ".", key));
  if (!t.ok()) return t.status();
  *out = *t;
  *present = true;
  return absl::OkStatus();
}

const Json* NhsIdentifier(const Json* identifiers);

// HL7 PV1-2 from an Encounter.class code (v3 ActCode).
std::string ClassFromFhir(const std::string& code) {
  return code == "IMP" ? "I" : code == "AMB" ? "O" : code == "EMER" ? "E" : code;
}

// An Encounter: what it is follows the message's event (MessageHeader
// eventCoding, "" for none) where that says more than the Encounter can:
// A13 cancels a discharge (the encounter is in progress again), A16 is a
// pending discharge. Otherwise its status and period: an end with a
// finished status is a discharge, an end on an encounter still in progress
// a planned discharge. `subject_nhs` is set to the subject's NHS number
// identifier when it gives one (a message may send no Patient).
absl::Status ReadEncounter(const Json& r, const std::string& path, absl::string_view event, v1::CareEvent* e,
                           const Json** subject_nhs) {
  if (const Json* subject = Reader::At(r, "subject"); subject != nullptr && subject->is_object()) {
    if (const Json* ids = Reader::At(*subject, "identifier"); ids != nullptr) *subject_nhs = NhsIdentifier(ids);
  }
  std::string status;
  if (absl::Status s = Reader::Str(r, "status", path, &status); !s.ok()) return s;
  if (status.empty()) return Invalid(absl::StrCat(path, ".status: required"));
  // The visit number: the identifier typed VN (HL7 table 0203), else the
  // first (an encounter's identifier in the sender's system).
  auto ids = Reader::Each(r, "identifier", path);
  if (!ids.ok()) return ids.status();
  for (size_t i = 0; i < ids->size(); ++i) {
    const bool visit = FirstCode(*(*ids)[i], "type") == "VN";
    if (i > 0 && !visit) continue;
    if (absl::Status s = Reader::Str(*(*ids)[i], "value", Index(path, "identifier", i), e->mutable_visit_number());
        !s.ok()) {
      return s;
    }
    if (visit) break;
  }
  const std::string cls = ClassFromFhir(FirstCode(r, "class"));
  google::protobuf::Timestamp start, end;
  bool has_start = false, has_end = false;
  if (const Json* period = Reader::At(r, "period"); period != nullptr) {
    if (absl::Status s = ReadTime(*period, "start", path + ".period", &start, &has_start); !s.ok()) return s;
    if (absl::Status s = ReadTime(*period, "end", path + ".period", &end, &has_end); !s.ok()) return s;
  }
  const Json* hosp = Reader::At(r, "hospitalization");
  const Json* sp = Reader::At(r, "serviceProvider");
  std::string site = ReferenceCode(sp);
  if (site.empty() && sp != nullptr && sp->is_object()) {
    if (absl::Status s = Reader::Str(*sp, "display", path + ".serviceProvider", &site); !s.ok()) return s;
  }
  // Wards: the active (or only) location, and a completed one before it.
  std::string ward, from_ward;
  auto locations = Reader::Each(r, "location", path);
  if (!locations.ok()) return locations.status();
  for (const Json* l : *locations) {
    std::string lstatus;
    if (absl::Status s = Reader::Str(*l, "status", path + ".location", &lstatus); !s.ok()) return s;
    std::string code = ReferenceCode(Reader::At(*l, "location"));
    if (code.empty()) {
      if (const Json* loc = Reader::At(*l, "location"); loc != nullptr) {
        if (absl::Status s = Reader::Str(*loc, "display", path + ".location.location", &code); !s.ok()) return s;
      }
    }
    (lstatus == "completed" ? from_ward : ward) = code;
  }
  const bool cancelled = status == "cancelled" || status == "entered-in-error";
  if (cancelled || event == "A13") e->set_action(v1::EVENT_ACTION_CANCEL);
  const bool planned_discharge =
      event == "A16" || (event != "A13" && has_end && !cancelled && status != "finished" && status != "planned");
  if (planned_discharge) e->set_action(v1::EVENT_ACTION_PLANNED);
  if (status == "finished" || (has_end && status != "planned") || event == "A13" || event == "A16") {
    v1::Discharge* d = e->mutable_discharge();
    if (has_end) *d->mutable_discharged_at() = end;
    if (has_start) *d->mutable_admitted_at() = start;
    d->set_ward(ward.empty() ? from_ward : ward);
    d->set_site(site);
    d->set_patient_class(cls);
    if (const Json* m = FindExtension(r, "DischargeMethod"); m != nullptr) {
      d->set_discharge_method(FirstCode(*m, "valueCodeableConcept"));
    }
    if (hosp != nullptr) d->set_discharge_destination(FirstCode(*hosp, "dischargeDisposition"));
    if (has_end) *e->mutable_occurred_at() = end;
    return absl::OkStatus();
  }
  if (!from_ward.empty() && !ward.empty()) {
    v1::Transfer* t = e->mutable_transfer();
    t->set_from_ward(from_ward);
    t->set_to_ward(ward);
    t->set_patient_class(cls);
    return absl::OkStatus();
  }
  if (status == "planned") e->set_action(v1::EVENT_ACTION_PLANNED);
  v1::Admission* a = e->mutable_admission();
  if (has_start) *a->mutable_admitted_at() = start;
  if (has_start) *e->mutable_occurred_at() = start;
  if (has_end) *a->mutable_expected_discharge_at() = end;  // a planned encounter's planned end
  a->set_patient_class(cls);
  a->set_registration(event == "A04");
  a->set_ward(ward);
  a->set_site(site);
  if (hosp != nullptr) {
    if (const Json* m = FindExtension(*hosp, "AdmissionMethod"); m != nullptr) {
      a->set_admission_method(FirstCode(*m, "valueCodeableConcept"));
    }
  }
  auto participants = Reader::Each(r, "participant", path);
  if (!participants.ok()) return participants.status();
  for (const Json* part : *participants) {
    std::string code = ReferenceCode(Reader::At(*part, "individual"));
    if (!code.empty()) {
      a->set_consultant(code);
      break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::CareRecord> ReadDocument(const Json& doc, const ReadLimits& limits,
                                            const adapters::ReadOptions& options);

// What a message's resources say about its person beyond the Patient.
struct Subjects {
  bool person_seen = false;  // a Patient was read
  const Json* encounter_nhs = nullptr;  // an Encounter's subject identifier
  std::string encounter_path;
};

absl::Status ReadResource(const Json& r, const std::string& path, const adapters::ReadOptions& options,
                          absl::string_view event, v1::CareRecord* out, Subjects* subjects) {
  const Json* type = Reader::At(r, "resourceType");
  if (type == nullptr || !type->is_string()) return Invalid(absl::StrCat(path, ": not a FHIR resource (no resourceType)"));
  if (absl::Status s = CheckR4(r, path); !s.ok()) return s;
  const std::string t = type->get<std::string>();
  bool* person_seen = &subjects->person_seen;
  if (t == "Patient") {
    if (*person_seen) return Unsupported(absl::StrCat(path, ": a second Patient; one message is about one person"));
    *person_seen = true;
    return ReadPatient(r, path, options, out->mutable_person());
  }
  if (t == "Encounter") {
    const Json* nhs = nullptr;
    if (absl::Status s = ReadEncounter(r, path, event, out->add_events(), &nhs); !s.ok()) return s;
    if (nhs != nullptr && subjects->encounter_nhs == nullptr) {
      subjects->encounter_nhs = nhs;
      subjects->encounter_path = path + ".subject.identifier";
    }
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat(path, ": resource type ", absl::CHexEscape(t.substr(0, 40)),
                                  " is not carried (Patient, Encounter, or a Bundle of them)"));
}

}  // namespace

namespace {

bool IsDocumentJson(const Json& doc) {
  if (!doc.is_object()) return false;
  const std::string type = doc.value("resourceType", "");
  return type == "DocumentReference" || (type == "Bundle" && doc.value("type", "") == "document");
}

// The NHS number among `identifiers` (one Identifier or an array), or null.
const Json* NhsIdentifier(const Json* identifiers) {
  if (identifiers == nullptr) return nullptr;
  auto is_nhs = [](const Json& i) {
    return i.is_object() && i.value("system", "") == kNhsNumberSystem && i.contains("value") && i["value"].is_string();
  };
  if (identifiers->is_object()) return is_nhs(*identifiers) ? identifiers : nullptr;
  for (size_t k = 0; identifiers->is_array() && k < identifiers->size(); ++k) {
    if (is_nhs((*identifiers)[k])) return &(*identifiers)[k];
  }
  return nullptr;
}

// A document Bundle's person: the Composition's subject identifier, else
// the Patient entry its subject references (by fullUrl or Patient/id).
const Json* BundleSubject(const Json& bundle) {
  const Json* entries = Reader::At(bundle, "entry");
  if (entries == nullptr || !entries->is_array() || entries->empty()) return nullptr;
  const Json* composition = Reader::At((*entries)[0], "resource");
  if (composition == nullptr || !composition->is_object() || composition->value("resourceType", "") != "Composition") {
    return nullptr;
  }
  const Json* subject = Reader::At(*composition, "subject");
  if (subject == nullptr || !subject->is_object()) return nullptr;
  if (const Json* id = NhsIdentifier(Reader::At(*subject, "identifier"))) return id;
  const std::string ref = subject->value("reference", "");
  if (ref.empty()) return nullptr;
  for (const Json& e : *entries) {
    const Json* r = e.is_object() ? Reader::At(e, "resource") : nullptr;
    if (r == nullptr || !r->is_object() || r->value("resourceType", "") != "Patient") continue;
    if (e.value("fullUrl", "") == ref || "Patient/" + r->value("id", "") == ref) {
      return NhsIdentifier(Reader::At(*r, "identifier"));
    }
  }
  return nullptr;
}

}  // namespace

namespace {

// FHIR JSON, or discarded when it is not well formed or an object gives a
// key twice: FHIR's JSON format does not allow it, and a parser keeping the
// last of them would read what the sender's own tools did not. `*twice`
// says which.
Json ParseFhirJson(absl::string_view text, bool* twice) {
  *twice = false;
  std::vector<absl::flat_hash_set<std::string>> keys;  // of each open object, by depth
  size_t open = 0;
  Json doc = Json::parse(
      text.begin(), text.end(),
      [&](int, Json::parse_event_t event, Json& parsed) {
        switch (event) {
          case Json::parse_event_t::object_start:
            if (open == keys.size()) keys.emplace_back();
            keys[open++].clear();
            break;
          case Json::parse_event_t::key:
            if (!keys[open - 1].insert(parsed.get_ref<const std::string&>()).second) *twice = true;
            break;
          case Json::parse_event_t::object_end:
            --open;
            break;
          default:
            break;
        }
        return true;
      },
      /*allow_exceptions=*/false);
  if (*twice) doc = Json(Json::value_t::discarded);
  return doc;
}

}  // namespace

bool IsDocument(absl::string_view text) {
  if (!absl::StrContains(text, "DocumentReference") && !absl::StrContains(text, "\"document\"")) {
    return false;  // most payloads stop here
  }
  bool twice;
  return IsDocumentJson(ParseFhirJson(text, &twice));
}

absl::StatusOr<DocumentSubject> ReadDocumentSubject(absl::string_view text) {
  bool twice;
  const Json doc = ParseFhirJson(text, &twice);
  if (twice) return Invalid("an object gives a key twice");
  if (!IsDocumentJson(doc)) return Invalid("not a FHIR JSON DocumentReference or document Bundle");
  const bool bundle = doc.value("resourceType", "") == "Bundle";
  if (bundle) {
    const Json* entries = Reader::At(doc, "entry");
    const Json* first = entries != nullptr && entries->is_array() && !entries->empty()
                            ? Reader::At((*entries)[0], "resource")
                            : nullptr;
    if (first == nullptr || !first->is_object() || first->value("resourceType", "") != "Composition") {
      return Invalid("Bundle.entry[0]: a document Bundle starts with its Composition");
    }
  }
  const Json* subject = Reader::At(doc, "subject");
  const Json* identifier = bundle ? BundleSubject(doc)
                                  : NhsIdentifier(subject != nullptr && subject->is_object()
                                                      ? Reader::At(*subject, "identifier")
                                                      : nullptr);
  const std::string where = bundle ? "Composition.subject" : "DocumentReference.subject.identifier";
  if (identifier == nullptr) {
    return Invalid(where + ": the person's NHS number (system " + std::string(kNhsNumberSystem) + ") is required");
  }
  DocumentSubject out;
  out.nhs_number = (*identifier)["value"].get<std::string>();
  out.bundle = bundle;
  if (!IsValidNhsNumber(out.nhs_number)) {
    return InvalidArgument(reason::kNhsNumberInvalid, where + " is not a valid NHS number (ten digits, Modulus 11)");
  }
  if (bundle) return out;
  const Json* content = Reader::At(doc, "content");
  bool attached = false;
  for (size_t i = 0; content != nullptr && content->is_array() && i < content->size(); ++i) {
    const Json& c = (*content)[i];
    const Json* a = c.is_object() ? Reader::At(c, "attachment") : nullptr;
    attached |= a != nullptr && a->is_object() && a->contains("contentType") &&
                (a->contains("data") || a->contains("url"));
  }
  if (!attached) return Invalid("DocumentReference.content: an attachment with contentType and data (or url) is required");
  return out;
}

absl::StatusOr<v1::CareRecord> ReadFhir(absl::string_view text, const ReadLimits& limits,
                                        const adapters::ReadOptions& options) {
  if (text.size() > limits.max_bytes) return Invalid(absl::StrCat("the document exceeds ", limits.max_bytes, " bytes"));
  // FHIR XML (after any byte-order mark) starts with '<'; JSON never does.
  absl::string_view trimmed = absl::StripLeadingAsciiWhitespace(text);
  absl::ConsumePrefix(&trimmed, "\xEF\xBB\xBF");
  if (absl::StartsWith(trimmed, "<")) {
    auto doc = FhirXmlToJson(trimmed);
    if (!doc.ok()) return doc.status();
    return ReadDocument(*doc, limits, options);
  }
  bool twice;
  const Json doc = ParseFhirJson(text, &twice);
  if (twice) return Invalid("an object gives a key twice (FHIR JSON does not allow it)");
  if (doc.is_discarded()) return Invalid("not well-formed JSON");
  return ReadDocument(doc, limits, options);
}

namespace {

absl::StatusOr<v1::CareRecord> ReadDocument(const Json& doc, const ReadLimits& limits,
                                            const adapters::ReadOptions& options) {
  if (!doc.is_object()) return Invalid("the document is not a JSON object");
  v1::CareRecord out;
  Subjects subjects;
  const Json* type = Reader::At(doc, "resourceType");
  if (type != nullptr && type->is_string() && type->get<std::string>() == "Bundle") {
    if (absl::Status s = CheckR4(doc, "Bundle"); !s.ok()) return s;
    std::string header_id, event;
    // The message's own id (HL7 MSH-10) is the Bundle's identifier.
    if (const Json* id = Reader::At(doc, "identifier"); id != nullptr && id->is_object()) {
      if (absl::Status s = Reader::Str(*id, "value", "Bundle.identifier", &header_id); !s.ok()) return s;
    }
    auto entries = Reader::Each(doc, "entry", "Bundle");
    if (!entries.ok()) return entries.status();
    if (entries->size() > limits.max_entries) return Invalid("Bundle.entry: too many entries");
    for (size_t i = 0; i < entries->size(); ++i) {
      const Json* r = Reader::At(*(*entries)[i], "resource");
      if (r == nullptr) continue;  // a request-only entry (e.g. DELETE)
      const std::string path = Index("Bundle", "entry", i) + ".resource";
      const Json* rt = Reader::At(*r, "resourceType");
      const std::string rtype = rt != nullptr && rt->is_string() ? rt->get<std::string>() : "";
      if (rtype == "Patient" || rtype == "Encounter") {
        if (absl::Status s = ReadResource(*r, path, options, event, &out, &subjects); !s.ok()) return s;
        continue;
      }
      // Other resources in a Bundle (Organization, Practitioner, ...) are
      // context, not the record, but tell its version as well.
      if (absl::Status s = CheckR4(*r, path); !s.ok()) return s;
      if (rtype == "MessageHeader" && i == 0) {
        if (header_id.empty()) {
          if (absl::Status s = Reader::Str(*r, "id", path, &header_id); !s.ok()) return s;
        }
        if (const Json* coding = Reader::At(*r, "eventCoding"); coding != nullptr && coding->is_object()) {
          if (absl::Status s = Reader::Str(*coding, "code", path + ".eventCoding", &event); !s.ok()) return s;
        }
      }
    }
    for (v1::CareEvent& e : *out.mutable_events()) {
      if (e.reference().empty()) e.set_reference(header_id);
    }
    if (!subjects.person_seen && out.events_size() == 0) {
      return Unsupported("Bundle: holds no Patient or Encounter");
    }
  } else if (absl::Status s = ReadResource(doc, type != nullptr && type->is_string() ? type->get<std::string>() : "$",
                                           options, "", &out, &subjects);
             !s.ok()) {
    return s;
  }
  // The person: the Patient, or an Encounter's subject identifier when no
  // Patient is sent; never a record about no one.
  if (subjects.encounter_nhs != nullptr) {
    auto n = CheckedNhsNumber(subjects.encounter_nhs->value("value", ""), subjects.encounter_path + ".value", options);
    if (!n.ok()) return n.status();
    if (out.person().nhs_number().empty()) {  // no Patient, or one known by local identifiers only
      out.mutable_person()->set_nhs_number(*n);
    } else if (out.person().nhs_number() != *n) {
      return Invalid(absl::StrCat(subjects.encounter_path,
                                  ": the Encounter's subject is not the Patient sent (another NHS number); one "
                                  "message is about one person"));
    }
  } else if (!subjects.person_seen) {
    return Invalid("Encounter.subject: no Patient is sent, so the Encounter's subject must identify the person by "
                   "NHS number (identifier with system https://fhir.nhs.uk/Id/nhs-number)");
  }
  return out;
}

Json Coding(absl::string_view system, absl::string_view code, absl::string_view display = "") {
  Json c = {{"system", system}, {"code", code}};
  if (!display.empty()) c["display"] = display;
  return c;
}

Json Concept(absl::string_view system, absl::string_view code) { return {{"coding", Json::array({Coding(system, code)})}}; }

// The codes of the NHS Data Dictionary value sets UK Core publishes as
// CodeSystems for England (admission method, discharge method, discharge
// destination of a hospital provider spell).
constexpr std::array<absl::string_view, 20> kAdmissionMethods = {"11", "12", "13", "21", "22", "23", "24",
                                                                 "25", "2A", "2B", "2C", "2D", "28", "31",
                                                                 "32", "81", "82", "83", "98", "99"};
constexpr std::array<absl::string_view, 8> kDischargeMethods = {"1", "3", "4", "5", "6", "7", "8", "9"};
constexpr std::array<absl::string_view, 21> kDischargeDestinations = {"19", "29", "30", "37", "38", "48", "49",
                                                                      "50", "51", "52", "53", "54", "65", "66",
                                                                      "79", "84", "85", "87", "88", "98", "99"};

// `value` under the NHS Data Dictionary code system `system` only when it
// is one of that value set's `codes`; any other (a trust's local code, free
// text such as "Home") is the sender's own, carried as the concept's text
// and never relabelled as a Data Dictionary code.
template <size_t N>
Json DataDictionaryConcept(absl::string_view system, const std::array<absl::string_view, N>& codes,
                           absl::string_view value) {
  for (absl::string_view c : codes) {
    if (c == value) return Concept(system, value);
  }
  return {{"text", value}};
}

Json OdsReference(absl::string_view system, absl::string_view code);

// A hospital site: an ODS site code as such, anything else by name only.
Json SiteReference(absl::string_view site) {
  if (IsOdsCodeShape(site)) return OdsReference(kOdsSiteSystem, site);
  return {{"display", site}};
}

Json OdsReference(absl::string_view system, absl::string_view code) {
  return {{"identifier", {{"system", system}, {"value", code}}}};
}

bool LooksLikeUri(absl::string_view s) {
  return absl::StartsWith(s, "http://") || absl::StartsWith(s, "https://") || absl::StartsWith(s, "urn:");
}

Json PatientJson(const v1::Person& p, const std::string& id) {
  Json r = {{"resourceType", "Patient"}, {"id", id}};
  Json ids = Json::array();
  if (!p.nhs_number().empty()) {
    Json nhs = {{"system", kNhsNumberSystem}, {"value", p.nhs_number()}};
    if (p.nhs_number_status() != v1::NHS_NUMBER_STATUS_UNSPECIFIED) {
      const int n = static_cast<int>(p.nhs_number_status());
      nhs["extension"] = Json::array(
          {{{"url", absl::StrCat(kUkCoreExtension, "NHSNumberVerificationStatus")},
            {"valueCodeableConcept",
             {{"coding", Json::array({Coding(kVerificationSystems[0], absl::StrCat("0", n), kVerificationDisplays[n - 1])})}}}}});
    }
    ids.push_back(std::move(nhs));
  }
  for (const v1::LocalIdentifier& l : p.local_identifiers()) {
    Json id_json = {{"value", l.value()}};
    if (LooksLikeUri(l.assigner())) {
      id_json["system"] = l.assigner();
    } else if (!l.assigner().empty()) {
      id_json["assigner"] = OdsReference(kOdsOrganisationSystem, l.assigner());
    }
    if (!l.type().empty()) id_json["type"] = Concept(kV2IdentifierType, l.type());
    ids.push_back(std::move(id_json));
  }
  if (!ids.empty()) r["identifier"] = std::move(ids);
  Json names = Json::array();
  for (const v1::PersonName& n : p.names()) {
    Json name = Json::object();
    if (!n.use().empty()) name["use"] = n.use();
    if (!n.family().empty()) name["family"] = n.family();
    if (n.given_size() > 0) name["given"] = Json(std::vector<std::string>(n.given().begin(), n.given().end()));
    if (!n.prefix().empty()) name["prefix"] = Json::array({n.prefix()});
    names.push_back(std::move(name));
  }
  if (!names.empty()) r["name"] = std::move(names);
  switch (p.sex()) {
    case v1::SEX_MALE: r["gender"] = "male"; break;
    case v1::SEX_FEMALE: r["gender"] = "female"; break;
    case v1::SEX_NOT_SPECIFIED: r["gender"] = "other"; break;
    case v1::SEX_NOT_KNOWN: r["gender"] = "unknown"; break;
    default: break;
  }
  if (p.has_birth_date() && p.birth_date().year() != 0) r["birthDate"] = FormatDate(p.birth_date());
  if (p.has_death_date() && p.death_date().year() != 0) r["deceasedDateTime"] = FormatDate(p.death_date());
  if (p.has_address()) {
    const v1::Address& a = p.address();
    Json addr = Json::object();
    // A use, or for a mailing address a type (kAddressUses); unstated, neither.
    if (a.type() == "M") addr["type"] = "postal";
    for (const auto& [hl7, fhir] : kAddressUses) {
      if (a.type() == hl7) addr["use"] = fhir;
    }
    if (a.lines_size() > 0) addr["line"] = Json(std::vector<std::string>(a.lines().begin(), a.lines().end()));
    if (!a.city().empty()) addr["city"] = a.city();
    if (!a.district().empty()) addr["district"] = a.district();
    if (!a.postcode().empty()) addr["postalCode"] = a.postcode();
    if (!a.country().empty()) addr["country"] = a.country();
    r["address"] = Json::array({std::move(addr)});
  }
  if (!p.gp_practice().empty()) {
    r["generalPractitioner"] = Json::array({OdsReference(kOdsOrganisationSystem, p.gp_practice())});
    r["generalPractitioner"][0]["type"] = "Organization";
  }
  if (!p.ethnicity().empty()) {
    r["extension"] = Json::array(
        {{{"url", absl::StrCat(kUkCoreExtension, "EthnicCategory")},
          {"valueCodeableConcept", Concept("https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategoryEngland", p.ethnicity())}}});
  }
  return r;
}

Json LocationEntry(absl::string_view ward, absl::string_view status) {
  return {{"location", {{"identifier", {{"value", ward}}}, {"display", ward}}}, {"status", status}};
}

Json ClassOf(absl::string_view patient_class) {
  if (patient_class == "O") return Coding(kActCode, "AMB", "ambulatory");
  if (patient_class == "E") return Coding(kActCode, "EMER", "emergency");
  return Coding(kActCode, "IMP", "inpatient encounter");
}

absl::StatusOr<Json> EncounterJson(const v1::CareEvent& e, const std::string& id, const std::string& patient_url,
                                   absl::string_view sender) {
  Json r = {{"resourceType", "Encounter"}, {"id", id}};
  if (!e.visit_number().empty()) {  // HL7 v2-to-FHIR: PV1-19 is an identifier of type VN, assigned by the sender
    Json visit = {{"type", Concept(kV2IdentifierType, "VN")}, {"value", e.visit_number()}};
    if (!sender.empty()) visit["assigner"] = OdsReference(kOdsOrganisationSystem, sender);
    r["identifier"] = Json::array({std::move(visit)});
  }
  const bool cancel = e.action() == v1::EVENT_ACTION_CANCEL;
  r["subject"] = {{"reference", patient_url}};
  if (e.has_admission()) {
    const v1::Admission& a = e.admission();
    r["status"] = cancel ? "cancelled" : e.action() == v1::EVENT_ACTION_PLANNED ? "planned" : "in-progress";
    r["class"] = ClassOf(a.patient_class());
    if (a.has_admitted_at()) r["period"] = {{"start", FormatDateTime(a.admitted_at())}};
    if (!a.admission_method().empty()) {
      r["hospitalization"]["extension"] = Json::array(
          {{{"url", absl::StrCat(kUkCoreExtension, "AdmissionMethod")},
            {"valueCodeableConcept",
             DataDictionaryConcept("https://fhir.hl7.org.uk/CodeSystem/UKCore-AdmissionMethodEngland",
                                   kAdmissionMethods, a.admission_method())}}});
    }
    if (!a.ward().empty()) r["location"] = Json::array({LocationEntry(a.ward(), "active")});
    if (!a.consultant().empty()) {
      Json individual = {{"identifier", {{"value", a.consultant()}}}};
      r["participant"] = Json::array({Json{{"individual", std::move(individual)}}});
    }
    if (!a.site().empty()) r["serviceProvider"] = SiteReference(a.site());
  } else if (e.has_discharge()) {
    const v1::Discharge& d = e.discharge();
    // A cancelled discharge (A13) leaves the encounter in progress again; a
    // planned one (A16) is in progress with the planned end.
    const bool planned = e.action() == v1::EVENT_ACTION_PLANNED;
    r["status"] = cancel || planned ? "in-progress" : "finished";
    r["class"] = ClassOf(d.patient_class());
    if (d.has_admitted_at()) r["period"]["start"] = FormatDateTime(d.admitted_at());
    if (d.has_discharged_at() && !cancel) r["period"]["end"] = FormatDateTime(d.discharged_at());
    if (!d.ward().empty()) {
      r["location"] = Json::array({LocationEntry(d.ward(), cancel || planned ? "active" : "completed")});
    }
    if (!d.discharge_method().empty()) {
      r["extension"] = Json::array(
          {{{"url", absl::StrCat(kUkCoreExtension, "DischargeMethod")},
            {"valueCodeableConcept",
             DataDictionaryConcept("https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeMethodEngland",
                                   kDischargeMethods, d.discharge_method())}}});
    }
    if (!d.discharge_destination().empty()) {
      r["hospitalization"]["dischargeDisposition"] =
          DataDictionaryConcept("https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeDestinationEngland",
                                kDischargeDestinations, d.discharge_destination());
    }
    if (!d.site().empty()) r["serviceProvider"] = SiteReference(d.site());
  } else if (e.has_transfer()) {
    const v1::Transfer& t = e.transfer();
    r["status"] = cancel ? "cancelled" : "in-progress";
    r["class"] = ClassOf(t.patient_class());
    Json locations = Json::array();
    if (!t.from_ward().empty()) locations.push_back(LocationEntry(t.from_ward(), "completed"));
    if (!t.to_ward().empty()) locations.push_back(LocationEntry(t.to_ward(), "active"));
    if (!locations.empty()) r["location"] = std::move(locations);
  } else {
    return Unsupported(
        "FHIR output carries hospital events (admissions, transfers, discharges); send this event as council JSON or CLD");
  }
  return r;
}

// A UUID from a 32-hex id and an entry number, so a Bundle's fullUrls are
// stable for one message.
std::string EntryUuid(absl::string_view id, int n) {
  std::string hex(id);
  if (hex.size() != 32) hex = std::string(32, '0');
  const std::string suffix = absl::StrCat(absl::Hex(n, absl::kZeroPad4));
  hex.replace(28, 4, suffix);
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-", hex.substr(16, 4), "-",
                      hex.substr(20));
}

}  // namespace

absl::StatusOr<std::string> WriteFhirBundle(const v1::CareRecord& record, const MessageInfo& info, int indent) {
  const std::string patient_id = EntryUuid(info.id, 1);
  const std::string patient_url = "urn:uuid:" + patient_id;
  Json entries = Json::array();
  Json focus = Json::array();
  entries.push_back({{"fullUrl", patient_url}, {"resource", PatientJson(record.person(), patient_id)}});
  absl::string_view event_code = "A31";
  for (int i = 0; i < record.events_size(); ++i) {
    const v1::CareEvent& e = record.events(i);
    const std::string enc_id = EntryUuid(info.id, i + 2);
    auto enc = EncounterJson(e, enc_id, patient_url, info.source);
    if (!enc.ok()) return enc.status();
    entries.push_back({{"fullUrl", "urn:uuid:" + enc_id}, {"resource", *std::move(enc)}});
    focus.push_back({{"reference", "urn:uuid:" + enc_id}});
    event_code = e.has_discharge() ? "A03" : e.has_transfer() ? "A02" : e.admission().registration() ? "A04" : "A01";
    if (e.action() == v1::EVENT_ACTION_CANCEL) event_code = e.has_discharge() ? "A13" : e.has_transfer() ? "A12" : "A11";
    if (e.action() == v1::EVENT_ACTION_UPDATE) event_code = "A08";
    if (e.action() == v1::EVENT_ACTION_PLANNED) event_code = e.has_discharge() ? "A16" : "A05";
  }
  if (focus.empty()) focus.push_back({{"reference", patient_url}});
  const std::string header_id = EntryUuid(info.id, 0);
  Json header = {
      {"resourceType", "MessageHeader"},
      {"id", header_id},
      {"eventCoding", Coding("http://terminology.hl7.org/CodeSystem/v2-0003", event_code)},
      {"source", {{"endpoint", absl::StrCat("urn:nhs-uk:addressing:ods:", info.source)}}},
      {"focus", std::move(focus)},
  };
  if (!info.source.empty()) header["sender"] = OdsReference(kOdsOrganisationSystem, info.source);
  if (!info.destination.empty()) {
    header["destination"] = Json::array({{{"endpoint", absl::StrCat("urn:nhs-uk:addressing:ods:", info.destination)},
                                          {"receiver", OdsReference(kOdsOrganisationSystem, info.destination)}}});
  }
  entries.insert(entries.begin(), Json{{"fullUrl", "urn:uuid:" + header_id}, {"resource", std::move(header)}});
  Json bundle = {
      {"resourceType", "Bundle"},
      {"type", "message"},
      {"timestamp", FormatDateTime(adapters::ToProto(info.timestamp))},
      {"entry", std::move(entries)},
  };
  // The message's id: the sender's own (HL7 MSH-10, the event's reference)
  // assigned by the sender, as the HL7 v2-to-FHIR map gives MSH-10 to
  // Bundle.identifier; else carebroker's.
  const std::string& reference = record.events_size() > 0 ? record.events(0).reference() : "";
  if (!reference.empty()) {
    bundle["identifier"] = {{"value", reference}};
    if (!info.source.empty()) bundle["identifier"]["assigner"] = OdsReference(kOdsOrganisationSystem, info.source);
  } else if (!info.id.empty()) {
    bundle["identifier"] = {{"system", "https://carebroker.nhs.uk/Id/message"}, {"value", info.id}};
  }
  return bundle.dump(indent, ' ', false, Json::error_handler_t::replace);
}

}  // namespace carebroker::fhir
