#include "adapters/cld/cld.h"

#include <array>
#include <optional>

#include <functional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "adapters/common/csv.h"
#include "adapters/common/values.h"
#include "core/status.h"
#include "core/reasons.h"

namespace carebroker::cld {
namespace {

using adapters::CsvRow;

absl::Status Invalid(absl::string_view what) { return InvalidArgument(reason::kCldInvalid, what); }

// Where a value goes while reading one row.
struct RowContext {
  v1::Person* person;  // null when the person was already read from an earlier row
  v1::CareEvent* event;
  size_t row;
  absl::string_view column;
  const adapters::ReadOptions* options;

  // "row N, column X", spelled out only for an error.
  std::string where() const { return absl::StrCat("row ", row, ", column ", column); }
};

// The start and end dates of an event, by its kind (null for other kinds).
v1::Date* StartDate(v1::CareEvent* e) {
  switch (e->detail_case()) {
    case v1::CareEvent::kReferral: return e->mutable_referral()->mutable_received_date();
    case v1::CareEvent::kAssessment: return e->mutable_assessment()->mutable_start_date();
    case v1::CareEvent::kCarePackage: return e->mutable_care_package()->mutable_start_date();
    case v1::CareEvent::kReview: return e->mutable_review()->mutable_start_date();
    default: return nullptr;
  }
}
v1::Date* EndDate(v1::CareEvent* e) {
  switch (e->detail_case()) {
    case v1::CareEvent::kReferral: return e->mutable_referral()->mutable_end_date();
    case v1::CareEvent::kAssessment: return e->mutable_assessment()->mutable_end_date();
    case v1::CareEvent::kCarePackage: return e->mutable_care_package()->mutable_end_date();
    case v1::CareEvent::kReview: return e->mutable_review()->mutable_end_date();
    default: return nullptr;
  }
}
const v1::Date* StartDate(const v1::CareEvent& e) {
  switch (e.detail_case()) {
    case v1::CareEvent::kReferral: return e.referral().has_received_date() ? &e.referral().received_date() : nullptr;
    case v1::CareEvent::kAssessment: return e.assessment().has_start_date() ? &e.assessment().start_date() : nullptr;
    case v1::CareEvent::kCarePackage: return e.care_package().has_start_date() ? &e.care_package().start_date() : nullptr;
    case v1::CareEvent::kReview: return e.review().has_start_date() ? &e.review().start_date() : nullptr;
    default: return nullptr;
  }
}
const v1::Date* EndDate(const v1::CareEvent& e) {
  switch (e.detail_case()) {
    case v1::CareEvent::kReferral: return e.referral().has_end_date() ? &e.referral().end_date() : nullptr;
    case v1::CareEvent::kAssessment: return e.assessment().has_end_date() ? &e.assessment().end_date() : nullptr;
    case v1::CareEvent::kCarePackage: return e.care_package().has_end_date() ? &e.care_package().end_date() : nullptr;
    case v1::CareEvent::kReview: return e.review().has_end_date() ? &e.review().end_date() : nullptr;
    default: return nullptr;
  }
}

absl::Status SetDate(absl::string_view v, const RowContext& c, v1::Date* out) {
  if (out == nullptr) return Invalid(absl::StrCat(c.where(), ": not applicable to this Event Type"));
  auto d = adapters::ParseDate(v, "", /*uk_slashes=*/true);
  if (!d.ok()) return adapters::ParseDate(v, c.where(), /*uk_slashes=*/true).status();
  *out = *d;
  return absl::OkStatus();
}

std::string DateText(const v1::Date* d) { return d == nullptr ? "" : adapters::FormatDate(*d); }

absl::Status SetNumber(absl::string_view v, const RowContext& c, double* out) {
  if (!absl::SimpleAtod(v, out)) return Invalid(absl::StrCat(c.where(), ": expected a number"));
  return absl::OkStatus();
}

std::string NumberText(double d) { return d == 0 ? "" : absl::StrCat(d); }

v1::PersonName* Name(v1::Person* p) { return p->names_size() > 0 ? p->mutable_names(0) : p->add_names(); }
const v1::PersonName& Name(const v1::Person& p) {
  return p.names_size() > 0 ? p.names(0) : v1::PersonName::default_instance();
}

// The person's council id: the local identifier the council assigned.
const v1::LocalIdentifier* LaPersonId(const v1::Person& p) {
  for (const v1::LocalIdentifier& id : p.local_identifiers()) {
    if (id.type() == "LA") return &id;
  }
  return nullptr;
}

constexpr std::pair<v1::Sex, absl::string_view> kGenders[] = {
    {v1::SEX_MALE, "Male"}, {v1::SEX_FEMALE, "Female"}, {v1::SEX_NOT_KNOWN, "Not Known"},
    {v1::SEX_NOT_SPECIFIED, "Not Specified"}};

constexpr std::pair<v1::CareEvent::DetailCase, absl::string_view> kEventTypes[] = {
    {v1::CareEvent::kReferral, "Request"}, {v1::CareEvent::kAssessment, "Assessment"},
    {v1::CareEvent::kCarePackage, "Service"}, {v1::CareEvent::kReview, "Review"}};

using Getter = std::function<std::string(const v1::Person&, const v1::CareEvent&)>;
using Setter = std::function<absl::Status(absl::string_view, const RowContext&)>;

struct Column {
  std::string name;
  bool person;  // a person detail (read from a person's first row)
  Getter get;
  Setter set;
};

// A string field of a message: read through `get` from the const record,
// written through `set` into the one being read.
template <typename M>
using TextGet = const std::string& (M::*)() const;
template <typename M>
using TextSet = std::string* (M::*)();

Column SocialText(std::string name, TextGet<v1::SocialCareProfile> get, TextSet<v1::SocialCareProfile> set) {
  return {std::move(name), true,
          [get](const v1::Person& p, const v1::CareEvent&) { return (p.social_care().*get)(); },
          [set](absl::string_view v, const RowContext& c) {
            *(c.person->mutable_social_care()->*set)() = std::string(v);
            return absl::OkStatus();
          }};
}

// A string field of one kind of event: `detail` is the kind's getter on
// CareEvent and `mutable_detail` its mutable getter.
template <typename D>
Column EventText(std::string name, v1::CareEvent::DetailCase kind, const D& (v1::CareEvent::*detail)() const,
                 D* (v1::CareEvent::*mutable_detail)(), TextGet<D> get, TextSet<D> set) {
  return {std::move(name), false,
          [=](const v1::Person&, const v1::CareEvent& e) {
            return e.detail_case() == kind ? ((e.*detail)().*get)() : std::string();
          },
          [=](absl::string_view v, const RowContext& c) {
            if (c.event->detail_case() != kind) return Invalid(absl::StrCat(c.where(), ": not applicable to this Event Type"));
            *(((c.event)->*mutable_detail)()->*set)() = std::string(v);
            return absl::OkStatus();
          }};
}

Column CostNumber(std::string name, double (v1::CarePackage::*get)() const, void (v1::CarePackage::*set)(double)) {
  return {std::move(name), false,
          [get](const v1::Person&, const v1::CareEvent& e) {
            return e.has_care_package() ? NumberText((e.care_package().*get)()) : "";
          },
          [set](absl::string_view v, const RowContext& c) {
            if (!c.event->has_care_package()) return Invalid(absl::StrCat(c.where(), ": applies to Service events only"));
            double d = 0;
            if (absl::Status s = SetNumber(v, c, &d); !s.ok()) return s;
            (c.event->mutable_care_package()->*set)(d);
            return absl::OkStatus();
          }};
}

const std::vector<Column>& Table() {
  using E = v1::CareEvent;
  static const std::vector<Column>* table = [] {
    auto* t = new std::vector<Column>{
      {"NHS Number", true, [](const v1::Person& p, const E&) { return p.nhs_number(); },
       [](absl::string_view v, const RowContext& c) {
         auto n = adapters::CheckedNhsNumber(v, "", *c.options);
         if (!n.ok()) return adapters::CheckedNhsNumber(v, c.where(), *c.options).status();
         c.person->set_nhs_number(*n);
         return absl::OkStatus();
       }},
      {"LA Person Unique Identifier", true,
       [](const v1::Person& p, const E&) {
         const v1::LocalIdentifier* id = LaPersonId(p);
         return id != nullptr ? id->value() : std::string();
       },
       [](absl::string_view v, const RowContext& c) {
         v1::LocalIdentifier* id = c.person->add_local_identifiers();
         id->set_value(std::string(v));
         id->set_type("LA");
         return absl::OkStatus();
       }},
      {"First Name", true,
       [](const v1::Person& p, const E&) { return Name(p).given_size() > 0 ? Name(p).given(0) : std::string(); },
       [](absl::string_view v, const RowContext& c) {
         Name(c.person)->add_given(std::string(v));
         return absl::OkStatus();
       }},
      {"Last Name", true, [](const v1::Person& p, const E&) { return Name(p).family(); },
       [](absl::string_view v, const RowContext& c) { return Name(c.person)->set_family(std::string(v)), absl::OkStatus(); }},
      SocialText("GP Practice Name", &v1::SocialCareProfile::gp_practice_name, &v1::SocialCareProfile::mutable_gp_practice_name),
      {"GP Practice Code", true, [](const v1::Person& p, const E&) { return p.gp_practice(); },
       [](absl::string_view v, const RowContext& c) { return c.person->set_gp_practice(std::string(v)), absl::OkStatus(); }},
      {"Gender", true,
       [](const v1::Person& p, const E&) {
         for (const auto& [sex, word] : kGenders) {
           if (p.sex() == sex) return std::string(word);
         }
         return std::string();
       },
       [](absl::string_view v, const RowContext& c) {
         for (const auto& [sex, word] : kGenders) {
           if (absl::EqualsIgnoreCase(v, word)) {
             c.person->set_sex(sex);
             return absl::OkStatus();
           }
         }
         if (absl::EqualsIgnoreCase(v, "Unknown")) return c.person->set_sex(v1::SEX_NOT_KNOWN), absl::OkStatus();
         if (absl::EqualsIgnoreCase(v, "Other")) return c.person->set_sex(v1::SEX_NOT_SPECIFIED), absl::OkStatus();
         return Invalid(absl::StrCat(c.where(), ": expected Male, Female, Not Known or Not Specified"));
       }},
      {"Ethnicity", true, [](const v1::Person& p, const E&) { return p.ethnicity(); },
       [](absl::string_view v, const RowContext& c) { return c.person->set_ethnicity(std::string(v)), absl::OkStatus(); }},
      {"Date of Birth", true, [](const v1::Person& p, const E&) { return DateText(p.has_birth_date() ? &p.birth_date() : nullptr); },
       [](absl::string_view v, const RowContext& c) { return SetDate(v, c, c.person->mutable_birth_date()); }},
      {"Date of Death", true, [](const v1::Person& p, const E&) { return DateText(p.has_death_date() ? &p.death_date() : nullptr); },
       [](absl::string_view v, const RowContext& c) { return SetDate(v, c, c.person->mutable_death_date()); }},
      SocialText("Client Type", &v1::SocialCareProfile::client_type, &v1::SocialCareProfile::mutable_client_type),
      SocialText("Primary Support Reason", &v1::SocialCareProfile::primary_support_reason, &v1::SocialCareProfile::mutable_primary_support_reason),
      {"Postcode", true, [](const v1::Person& p, const E&) { return p.address().postcode(); },
       [](absl::string_view v, const RowContext& c) {
         c.person->mutable_address()->set_postcode(absl::AsciiStrToUpper(v));
         return absl::OkStatus();
       }},
      SocialText("Accommodation Status", &v1::SocialCareProfile::accommodation_status, &v1::SocialCareProfile::mutable_accommodation_status),
      SocialText("Employment Status", &v1::SocialCareProfile::employment_status, &v1::SocialCareProfile::mutable_employment_status),
      SocialText("Has Unpaid Carer", &v1::SocialCareProfile::has_unpaid_carer, &v1::SocialCareProfile::mutable_has_unpaid_carer),
      SocialText("Autism Spectrum Disorder (ASD)", &v1::SocialCareProfile::autism_spectrum_disorder, &v1::SocialCareProfile::mutable_autism_spectrum_disorder),
      SocialText("Visual Impairment", &v1::SocialCareProfile::visual_impairment, &v1::SocialCareProfile::mutable_visual_impairment),
      SocialText("Hearing Impairment", &v1::SocialCareProfile::hearing_impairment, &v1::SocialCareProfile::mutable_hearing_impairment),
      SocialText("Dementia", &v1::SocialCareProfile::dementia, &v1::SocialCareProfile::mutable_dementia),
      SocialText("Client Funding Status", &v1::SocialCareProfile::client_funding_status, &v1::SocialCareProfile::mutable_client_funding_status),
      // "Event Type" is read first, before this table (it decides the event's kind).
      {"Event Reference", false, [](const v1::Person&, const E& e) { return e.reference(); },
       [](absl::string_view v, const RowContext& c) { return c.event->set_reference(std::string(v)), absl::OkStatus(); }},
      {"Event Start Date", false, [](const v1::Person&, const E& e) { return DateText(StartDate(e)); },
       [](absl::string_view v, const RowContext& c) { return SetDate(v, c, StartDate(c.event)); }},
      {"Event End Date", false, [](const v1::Person&, const E& e) { return DateText(EndDate(e)); },
       [](absl::string_view v, const RowContext& c) { return SetDate(v, c, EndDate(c.event)); }},
      {"Event Description", false, [](const v1::Person&, const E& e) { return e.description(); },
       [](absl::string_view v, const RowContext& c) { return c.event->set_description(std::string(v)), absl::OkStatus(); }},
      {"Event Outcome", false, [](const v1::Person&, const E& e) { return e.outcome(); },
       [](absl::string_view v, const RowContext& c) { return c.event->set_outcome(std::string(v)), absl::OkStatus(); }},
      EventText("Request: Route of Access", E::kReferral, &E::referral, &E::mutable_referral, &v1::Referral::route_of_access, &v1::Referral::mutable_route_of_access),
      EventText("Assessment Type", E::kAssessment, &E::assessment, &E::mutable_assessment, &v1::Assessment::assessment_type, &v1::Assessment::mutable_assessment_type),
      {"Eligible Needs Identified", false,
       [](const v1::Person&, const E& e) {
         return e.has_assessment() ? std::string(e.assessment().eligible_needs_identified() ? "Yes" : "No") : "";
       },
       [](absl::string_view v, const RowContext& c) {
         if (!c.event->has_assessment()) return Invalid(absl::StrCat(c.where(), ": applies to Assessment events only"));
         if (!absl::EqualsIgnoreCase(v, "Yes") && !absl::EqualsIgnoreCase(v, "No")) {
           return Invalid(absl::StrCat(c.where(), ": expected Yes or No"));
         }
         c.event->mutable_assessment()->set_eligible_needs_identified(absl::EqualsIgnoreCase(v, "Yes"));
         return absl::OkStatus();
       }},
      EventText("Method of Assessment", E::kAssessment, &E::assessment, &E::mutable_assessment, &v1::Assessment::method, &v1::Assessment::mutable_method),
      SocialText("Total Hrs Caring per week", &v1::SocialCareProfile::total_hours_caring_per_week, &v1::SocialCareProfile::mutable_total_hours_caring_per_week),
      SocialText("No. of adults being cared for", &v1::SocialCareProfile::adults_cared_for, &v1::SocialCareProfile::mutable_adults_cared_for),
      EventText("Service Type", E::kCarePackage, &E::care_package, &E::mutable_care_package, &v1::CarePackage::service_type, &v1::CarePackage::mutable_service_type),
      EventText("Service Component", E::kCarePackage, &E::care_package, &E::mutable_care_package, &v1::CarePackage::service_component, &v1::CarePackage::mutable_service_component),
      EventText("Delivery Mechanism", E::kCarePackage, &E::care_package, &E::mutable_care_package, &v1::CarePackage::delivery_mechanism, &v1::CarePackage::mutable_delivery_mechanism),
      EventText("Provider CQC Location Name", E::kCarePackage, &E::care_package, &E::mutable_care_package, &v1::CarePackage::provider, &v1::CarePackage::mutable_provider),
      EventText("Provider CQC Location ID", E::kCarePackage, &E::care_package, &E::mutable_care_package, &v1::CarePackage::provider_cqc_location_id, &v1::CarePackage::mutable_provider_cqc_location_id),
      EventText("Review Reason", E::kReview, &E::review, &E::mutable_review, &v1::Review::review_reason, &v1::Review::mutable_review_reason),
      EventText("Review Outcomes Achieved", E::kReview, &E::review, &E::mutable_review, &v1::Review::outcomes_achieved, &v1::Review::mutable_outcomes_achieved),
      EventText("Method of Review", E::kReview, &E::review, &E::mutable_review, &v1::Review::method, &v1::Review::mutable_method),
      CostNumber("Unit Cost", &v1::CarePackage::unit_cost, &v1::CarePackage::set_unit_cost),
      EventText("Cost Frequency (Unit Type)", E::kCarePackage, &E::care_package, &E::mutable_care_package, &v1::CarePackage::cost_frequency, &v1::CarePackage::mutable_cost_frequency),
      CostNumber("Planned units per week", &v1::CarePackage::planned_units_per_week,
                 &v1::CarePackage::set_planned_units_per_week),
    };
    // The three linked cared-for adults.
    for (int i = 0; i < 3; ++i) {
      t->push_back({absl::StrCat("Adult ", i + 1, " Linked Person_ID"), true,
                    [i](const v1::Person& p, const v1::CareEvent&) {
                      return i < p.social_care().linked_person_ids_size() ? p.social_care().linked_person_ids(i)
                                                                           : std::string();
                    },
                    [](absl::string_view v, const RowContext& c) {
                      c.person->mutable_social_care()->add_linked_person_ids(std::string(v));
                      return absl::OkStatus();
                    }});
    }
    return t;
  }();
  return *table;
}

constexpr int kAbsent = -1, kEventTypeColumn = -2, kSubmissionColumn = -3;
constexpr absl::string_view kLaCode = "LA Code", kPeriodStart = "Reporting Period Start Date",
                            kPeriodEnd = "Reporting Period End Date", kEventType = "Event Type";

std::string Key(absl::string_view column) { return absl::AsciiStrToLower(absl::StripAsciiWhitespace(column)); }

}  // namespace

const std::vector<std::string>& Columns() {
  static const auto* names = [] {
    auto* v = new std::vector<std::string>{std::string(kLaCode), std::string(kPeriodStart), std::string(kPeriodEnd)};
    const auto& t = Table();
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i].name == "Event Reference") v->push_back(std::string(kEventType));
      v->push_back(t[i].name);
    }
    return v;
  }();
  return *names;
}

absl::StatusOr<RowReader> RowReader::FromHeader(const adapters::CsvRowView& names) {
  const auto& table = Table();
  absl::flat_hash_map<std::string, int> known;
  for (size_t i = 0; i < table.size(); ++i) known[Key(table[i].name)] = static_cast<int>(i);
  absl::flat_hash_map<std::string, int> seen;
  RowReader r;
  r.column_of_.assign(names.size(), kAbsent);
  for (size_t c = 0; c < names.size(); ++c) {
    const std::string k = Key(names[c]);
    if (!seen.emplace(k, static_cast<int>(c)).second) {
      return Invalid(absl::StrCat("header: column ", c + 1, " repeats a column name"));
    }
    if (k == Key(kEventType)) r.column_of_[c] = kEventTypeColumn;
    else if (k == Key(kLaCode) || k == Key(kPeriodStart) || k == Key(kPeriodEnd)) r.column_of_[c] = kSubmissionColumn;
    else if (auto it = known.find(k); it != known.end()) r.column_of_[c] = it->second;
    else {
      return Invalid(absl::StrCat("header: column ", c + 1, " \"", absl::CHexEscape(names[c].substr(0, 60)),
                                  "\" is not a CLD Release 1 column"));
    }
  }
  auto at = [&](absl::string_view name) {
    const auto it = seen.find(Key(name));
    return it == seen.end() ? kAbsent : it->second;
  };
  r.event_type_ = at(kEventType);
  r.nhs_number_ = at("NHS Number");
  r.la_person_ = at("LA Person Unique Identifier");
  r.submission_ = {at(kLaCode), at(kPeriodStart), at(kPeriodEnd)};
  if (r.event_type_ == kAbsent) return Invalid("header: the Event Type column is required");
  if (r.nhs_number_ == kAbsent && r.la_person_ == kAbsent) {
    return Invalid("header: NHS Number or LA Person Unique Identifier is required");
  }
  return r;
}

absl::StatusOr<RowReader::Row> RowReader::Read(const adapters::CsvRowView& cells, size_t row_number, Submission* seen,
                                               const adapters::ReadOptions& options) const {
  const auto& table = Table();
  auto row_name = [&] { return absl::StrCat("row ", row_number); };
  if (cells.size() != column_of_.size()) {
    return Invalid(absl::StrCat(row_name(), ": has ", cells.size(), " fields; the header has ", column_of_.size()));
  }
  auto cell = [&](int c) { return c == kAbsent ? absl::string_view() : absl::StripAsciiWhitespace(cells[c]); };
  // Submission details, the same on every row.
  const std::array<absl::string_view, 3> names = {kLaCode, kPeriodStart, kPeriodEnd};
  const std::array<std::string*, 3> fields = {&seen->la_code, &seen->period_start, &seen->period_end};
  for (size_t i = 0; i < names.size(); ++i) {
    const absl::string_view v = cell(submission_[i]);
    if (v.empty()) continue;
    std::string& field = *fields[i];
    if (!field.empty() && field != v) {
      return Invalid(absl::StrCat(row_name(), ", column ", names[i], ": differs from the rows before"));
    }
    field = std::string(v);
  }
  Row out;
  // Whose row it is.
  if (const absl::string_view nhs = cell(nhs_number_); !nhs.empty()) {
    auto n = adapters::CheckedNhsNumber(nhs, "", options);
    if (!n.ok()) return adapters::CheckedNhsNumber(nhs, absl::StrCat(row_name(), ", column NHS Number"), options).status();
    out.person_key = absl::StrCat("n:", *n);
  } else if (const absl::string_view la = cell(la_person_); !la.empty()) {
    out.person_key = absl::StrCat("l:", la);
  } else {
    return Invalid(absl::StrCat(row_name(), ": neither NHS Number nor LA Person Unique Identifier"));
  }
  v1::CareEvent* event = out.record.add_events();
  const absl::string_view type = cell(event_type_);
  bool kind_known = false;
  for (const auto& [kind, word] : kEventTypes) {
    if (!absl::EqualsIgnoreCase(type, word)) continue;
    kind_known = true;
    switch (kind) {
      case v1::CareEvent::kReferral: event->mutable_referral(); break;
      case v1::CareEvent::kAssessment: event->mutable_assessment(); break;
      case v1::CareEvent::kCarePackage: event->mutable_care_package(); break;
      default: event->mutable_review(); break;
    }
  }
  if (!kind_known) {
    return Invalid(absl::StrCat(row_name(), ", column Event Type: expected Request, Assessment, Service or Review"));
  }
  RowContext ctx{out.record.mutable_person(), event, row_number, {}, &options};
  for (size_t c = 0; c < column_of_.size(); ++c) {
    if (column_of_[c] < 0) continue;
    const Column& col = table[column_of_[c]];
    const absl::string_view v = absl::StripAsciiWhitespace(cells[c]);
    if (v.empty()) continue;
    ctx.column = col.name;
    if (absl::Status s = col.set(v, ctx); !s.ok()) return s;
  }
  for (v1::LocalIdentifier& id : *out.record.mutable_person()->mutable_local_identifiers()) {
    if (id.type() == "LA") id.set_assigner(seen->la_code);
  }
  return out;
}

absl::StatusOr<Submission> ReadCld(absl::string_view csv, const adapters::ReadOptions& options) {
  std::optional<RowReader> reader;
  Submission out;
  absl::flat_hash_map<std::string, size_t> person_of;  // person key -> index in out.people
  size_t r = 0;  // rows read, the header being row 1
  absl::Status s = adapters::ForEachCsvRow(csv, {}, [&](const adapters::CsvRowView& cells) -> absl::Status {
    if (++r == 1) {
      auto header = RowReader::FromHeader(cells);
      if (!header.ok()) return header.status();
      reader = *std::move(header);
      return absl::OkStatus();
    }
    auto row = reader->Read(cells, r, &out, options);
    if (!row.ok()) return row.status();
    // A person's details come from their first row; later rows add events.
    const auto [it, first] = person_of.emplace(std::move(row->person_key), out.people.size());
    if (first) {
      out.people.push_back(std::move(row->record));
    } else {
      out.people[it->second].add_events()->Swap(row->record.mutable_events(0));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (r == 0) return Invalid("the file has no header row");
  return out;
}

absl::Status AppendCldRows(const Submission& details, const v1::CareRecord& record, std::string* out,
                           absl::string_view which) {
  if (record.events_size() == 0) {
    return InvalidArgument(reason::kCldUnsupported, absl::StrCat(which, ": CLD has one row per event; there is none"));
  }
  const auto& table = Table();
  CsvRow row;
  for (int e = 0; e < record.events_size(); ++e) {
    const v1::CareEvent& event = record.events(e);
    absl::string_view type;
    for (const auto& [kind, word] : kEventTypes) {
      if (event.detail_case() == kind) type = word;
    }
    if (type.empty()) {
      return InvalidArgument(reason::kCldUnsupported,
                             absl::StrCat(which, ", event ", e + 1,
                                          ": CLD carries requests, assessments, services and reviews only"));
    }
    row = {details.la_code, details.period_start, details.period_end};
    for (const Column& col : table) {
      if (col.name == "Event Reference") row.push_back(std::string(type));
      row.push_back(col.get(record.person(), event));
    }
    adapters::AppendCsvRow(row, out);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> WriteCld(const Submission& s) {
  std::string out;
  adapters::AppendCsvRow(Columns(), &out);
  for (size_t p = 0; p < s.people.size(); ++p) {
    if (absl::Status e = AppendCldRows(s, s.people[p], &out, absl::StrCat("person ", p + 1)); !e.ok()) return e;
  }
  return out;
}

}  // namespace carebroker::cld
