#include "adapters/hl7v2/adt.h"

#include "adapters/common/values.h"

#include <array>
#include <cctype>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/civil_time.h"
#include "core/time.h"
#include "core/clock.h"
#include "core/files.h"
#include "core/status.h"
#include "core/reasons.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker::hl7 {
namespace {

using adapters::ToProto;
using google::protobuf::Timestamp;

absl::Status Invalid(absl::string_view what) { return InvalidArgument(reason::kHl7Invalid, what); }
absl::Status Unsupported(absl::string_view what) { return InvalidArgument(reason::kHl7Unsupported, what); }
absl::Status UnsupportedEvent(absl::string_view what) { return InvalidArgument(reason::kHl7EventUnsupported, what); }
absl::Status Required(absl::string_view what) { return InvalidArgument(reason::kHl7RequiredMissing, what); }

std::string Where(absl::string_view seg, int field) { return absl::StrCat(seg, "-", field); }

bool AllDigits(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

int Digits(absl::string_view s, size_t at, size_t n) {
  int v = 0;
  for (size_t i = at; i < at + n; ++i) v = v * 10 + (s[i] - '0');
  return v;
}

// HL7 DTM: YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]. Without an offset the
// time is UK local time. `where` names the field for errors.
absl::StatusOr<absl::Time> ParseDtm(absl::string_view s, absl::string_view where) {
  // Made only when needed: building a status costs more than the parse.
  const auto bad = [where] { return Invalid(absl::StrCat(where, ": not an HL7 date/time (YYYYMMDD[HHMM[SS]][+ZZZZ])")); };
  absl::string_view zone;
  if (const size_t z = s.find_first_of("+-"); z != absl::string_view::npos) {
    zone = s.substr(z);
    s = s.substr(0, z);
  }
  absl::string_view fraction;
  if (const size_t dot = s.find('.'); dot != absl::string_view::npos) {
    fraction = s.substr(dot + 1);
    s = s.substr(0, dot);
    if (fraction.empty() || fraction.size() > 4 || !AllDigits(fraction) || s.size() != 14) return bad();
  }
  if (!AllDigits(s) || (s.size() != 4 && s.size() != 6 && s.size() != 8 && s.size() != 10 && s.size() != 12 &&
                        s.size() != 14)) {
    return bad();
  }
  const int year = Digits(s, 0, 4);
  const int month = s.size() >= 6 ? Digits(s, 4, 2) : 1;
  const int day = s.size() >= 8 ? Digits(s, 6, 2) : 1;
  const int hour = s.size() >= 10 ? Digits(s, 8, 2) : 0;
  const int minute = s.size() >= 12 ? Digits(s, 10, 2) : 0;
  const int second = s.size() >= 14 ? Digits(s, 12, 2) : 0;
  const absl::CivilSecond cs(year, month, day, hour, minute, second);
  if (cs.year() != year || cs.month() != month || cs.day() != day || cs.hour() != hour || cs.minute() != minute ||
      cs.second() != second) {
    return bad();
  }
  absl::Time t;
  if (zone.empty()) {
    t = absl::FromCivil(cs, UkZone());
  } else {
    if (zone.size() != 5 || !AllDigits(zone.substr(1))) return bad();
    const int hh = Digits(zone, 1, 2), mm = Digits(zone, 3, 2);
    if (hh > 14 || mm > 59) return bad();
    const int offset = (zone[0] == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
    t = absl::FromCivil(cs, absl::UTCTimeZone()) - absl::Seconds(offset);
  }
  if (!fraction.empty()) {
    int us = 0;
    for (size_t i = 0; i < 6; ++i) us = us * 10 + (i < fraction.size() ? fraction[i] - '0' : 0);
    t += absl::Microseconds(us);
  }
  return t;
}

// A timestamp field: `at()` gives where to put it, asked only when the field
// is present (so an absent time leaves no empty message behind).
template <typename At>
absl::Status ReadTime(const Segment* seg, int field, At at, bool* present = nullptr) {
  if (present != nullptr) *present = false;
  if (seg == nullptr) return absl::OkStatus();
  const std::string v = seg->Get(field);
  if (v.empty()) return absl::OkStatus();
  auto t = ParseDtm(v, Where(seg->id(), field));
  if (!t.ok()) return t.status();
  *at() = ToProto(*t);
  if (present != nullptr) *present = true;
  return absl::OkStatus();
}

// A date field (birth, death): the date part of a DTM, as written.
absl::Status ReadDate(const Segment& seg, int field, v1::Date* out) {
  const std::string v = seg.Get(field);
  if (v.empty()) return absl::OkStatus();
  if (!ParseDtm(v, Where(seg.id(), field)).ok()) {
    return Invalid(absl::StrCat(Where(seg.id(), field),
                                ": not an HL7 date (YYYY[MM[DD]], a time of day HHMM[SS] and a +/-ZZZZ offset may follow)"));
  }
  out->set_year(Digits(v, 0, 4));
  if (v.size() >= 6) out->set_month(Digits(v, 4, 2));
  if (v.size() >= 8) out->set_day(Digits(v, 6, 2));
  return absl::OkStatus();
}

std::string FormatDtm(const Timestamp& ts) {
  const absl::Time t = FromTimestamp(ts);
  return absl::StrCat(absl::FormatTime("%Y%m%d%H%M%S", t, absl::UTCTimeZone()), "+0000");
}

std::string FormatDate(const v1::Date& d) {
  if (d.year() == 0) return "";
  std::string s = absl::StrFormat("%04d", d.year());
  if (d.month() != 0) absl::StrAppendFormat(&s, "%02d", d.month());
  if (d.month() != 0 && d.day() != 0) absl::StrAppendFormat(&s, "%02d", d.day());
  return s;
}

// The repetitions of a CX field (PID-3, MRG-1) as NHS number and local ids.
absl::Status ReadIdentifiers(const Segment& seg, int field, const adapters::ReadOptions& options, std::string* nhs,
                             google::protobuf::RepeatedPtrField<v1::LocalIdentifier>* locals) {
  for (int r = 0; r < seg.Repetitions(field); ++r) {
    const std::string where = absl::StrCat(Where(seg.id(), field), " repetition ", r + 1);
    const std::string value = seg.Get(field, 1, 1, r);
    const std::string authority = seg.Get(field, 4, 1, r);
    if (value.empty()) {
      if (authority.empty()) continue;  // an empty repetition
      return Invalid(absl::StrCat(where, ": identifier has an assigning authority but no value"));
    }
    if (absl::EqualsIgnoreCase(authority, "NHS")) {
      if (!nhs->empty()) return Invalid(absl::StrCat(where, ": a second NHS number"));
      auto n = adapters::CheckedNhsNumber(value, where, options);
      if (!n.ok()) return n.status();
      *nhs = *std::move(n);
      continue;
    }
    v1::LocalIdentifier* id = locals->Add();
    id->set_value(value);
    id->set_assigner(authority);
    id->set_type(seg.Get(field, 5, 1, r));
  }
  return absl::OkStatus();
}

// Table 0001 as ITK uses it (0, 1, 2, 9), and the HL7 letters.
absl::StatusOr<v1::Sex> SexOf(absl::string_view code) {
  const std::string c = absl::AsciiStrToUpper(code);
  if (c.empty()) return v1::SEX_UNSPECIFIED;
  if (c == "1" || c == "M") return v1::SEX_MALE;
  if (c == "2" || c == "F") return v1::SEX_FEMALE;
  if (c == "0" || c == "U") return v1::SEX_NOT_KNOWN;
  if (c == "9" || c == "O" || c == "A" || c == "N") return v1::SEX_NOT_SPECIFIED;
  return Invalid("PID-8: sex is not a code of table 0001 (0, 1, 2, 9 or M, F, U, O, A, N)");
}

absl::string_view SexCode(v1::Sex s) {
  switch (s) {
    case v1::SEX_MALE: return "1";
    case v1::SEX_FEMALE: return "2";
    case v1::SEX_NOT_KNOWN: return "0";
    case v1::SEX_NOT_SPECIFIED: return "9";
    default: return "";
  }
}

// XPN-7 name type <-> the canonical (FHIR) name use.
// HL7 table 0200 name types and FHIR name uses, after the HL7 v2-to-FHIR
// ConceptMap: only S (v2.4's coded pseudo-name to ensure anonymity) is
// anonymous; A (alias or assigned), B, C, T (tribal) and the rest have no
// FHIR use.
constexpr std::array<std::pair<absl::string_view, absl::string_view>, 9> kNameUses = {{
    {"L", "official"}, {"R", "official"}, {"D", "usual"}, {"M", "maiden"}, {"N", "nickname"},
    {"S", "anonymous"}, {"TEMP", "temp"}, {"NAV", "temp"}, {"BAD", "old"},
}};
// The type written for each use: v2.4's codes (temp and old have none).
constexpr std::array<std::pair<absl::string_view, absl::string_view>, 5> kNameTypes = {{
    {"official", "L"}, {"usual", "D"}, {"maiden", "M"}, {"nickname", "N"}, {"anonymous", "S"},
}};

absl::string_view NameUseOf(absl::string_view code) {
  for (const auto& [hl7, use] : kNameUses) {
    if (absl::EqualsIgnoreCase(code, hl7)) return use;
  }
  return "";
}

absl::string_view NameTypeOf(absl::string_view use) {
  for (const auto& [u, hl7] : kNameTypes) {
    if (use == u) return hl7;
  }
  return "";
}

void ReadNames(const Segment& pid, v1::Person* p) {
  for (int r = 0; r < pid.Repetitions(5); ++r) {
    v1::PersonName n;
    n.set_family(pid.Get(5, 1, 1, r));
    for (int c : {2, 3}) {
      for (absl::string_view g : absl::StrSplit(pid.Get(5, c, 1, r), ' ', absl::SkipEmpty())) n.add_given(std::string(g));
    }
    n.set_prefix(pid.Get(5, 5, 1, r));
    n.set_use(std::string(NameUseOf(pid.Get(5, 7, 1, r))));
    if (!n.family().empty() || n.given_size() > 0) *p->add_names() = std::move(n);
  }
}

void ReadAddress(const Segment& pid, v1::Person* p) {
  // The home address (XAD-7 H) if one is marked, else the first.
  int rep = 0;
  for (int r = 0; r < pid.Repetitions(11); ++r) {
    if (absl::EqualsIgnoreCase(pid.Get(11, 7, 1, r), "H")) {
      rep = r;
      break;
    }
  }
  if (pid.Repetitions(11) == 0) return;
  v1::Address* a = p->mutable_address();
  for (int c : {1, 2}) {
    if (std::string line = pid.Get(11, c, 1, rep); !line.empty()) a->add_lines(std::move(line));
  }
  a->set_city(pid.Get(11, 3, 1, rep));
  a->set_district(pid.Get(11, 4, 1, rep));
  a->set_postcode(absl::AsciiStrToUpper(pid.Get(11, 5, 1, rep)));
  a->set_country(pid.Get(11, 6, 1, rep));
  a->set_type(absl::AsciiStrToUpper(pid.Get(11, 7, 1, rep)));
}

absl::Status ReadPerson(const Message& m, const adapters::ReadOptions& options, v1::Person* p) {
  const Segment* pid = m.Find("PID");
  if (pid == nullptr) return Required("PID: the segment is required");
  if (absl::Status s = ReadIdentifiers(*pid, 3, options, p->mutable_nhs_number(), p->mutable_local_identifiers()); !s.ok()) {
    return s;
  }
  for (int r = 0; r < pid->Repetitions(32); ++r) {
    const std::string code = absl::AsciiStrToUpper(pid->Get(32, 1, 1, r));
    if (code.size() == 6 && absl::StartsWith(code, "NSTS0") && code[5] >= '1' && code[5] <= '8') {
      p->set_nhs_number_status(static_cast<v1::NhsNumberStatus>(code[5] - '0'));
    }
  }
  ReadNames(*pid, p);
  if (absl::Status s = ReadDate(*pid, 7, p->mutable_birth_date()); !s.ok()) return s;
  auto sex = SexOf(pid->Get(8));
  if (!sex.ok()) return sex.status();
  p->set_sex(*sex);
  ReadAddress(*pid, p);
  p->set_ethnicity(pid->Get(22));
  if (absl::Status s = ReadDate(*pid, 29, p->mutable_death_date()); !s.ok()) return s;
  if (const Segment* pd1 = m.Find("PD1"); pd1 != nullptr) {
    // XON-3 carries the practice's ODS code in v2.4; XON-10 in v2.5.
    std::string gp = pd1->Get(3, 3);
    if (gp.empty()) gp = pd1->Get(3, 10);
    p->set_gp_practice(std::move(gp));
  }
  if (!p->has_birth_date() || p->birth_date().year() == 0) p->clear_birth_date();
  if (!p->has_death_date() || p->death_date().year() == 0) p->clear_death_date();
  return absl::OkStatus();
}

// PV1-3 PL: .2 ward, .4 facility (ODS site code); .1 point of care when .2 is empty.
std::string WardOf(const Segment& pv1, int field) {
  std::string ward = pv1.Get(field, 2);
  return ward.empty() ? pv1.Get(field, 1) : ward;
}

absl::Status ReadAdmission(const Message& m, const Segment& pv1, v1::Admission* a) {
  a->set_patient_class(pv1.Get(2));
  a->set_ward(WardOf(pv1, 3));
  a->set_site(pv1.Get(3, 4));
  a->set_admission_method(pv1.Get(4));
  a->set_consultant(pv1.Get(7, 1));
  if (absl::Status s = ReadTime(&pv1, 44, [&] { return a->mutable_admitted_at(); }); !s.ok()) return s;
  const Segment* pv2 = m.Find("PV2");
  if (!a->has_admitted_at()) {
    if (absl::Status s = ReadTime(pv2, 8, [&] { return a->mutable_admitted_at(); }); !s.ok()) return s;
  }
  return ReadTime(pv2, 9, [&] { return a->mutable_expected_discharge_at(); });
}

absl::Status ReadDischarge(const Segment& pv1, v1::Discharge* d) {
  d->set_patient_class(pv1.Get(2));
  d->set_ward(WardOf(pv1, 3));
  if (absl::Status s = ReadTime(&pv1, 44, [&] { return d->mutable_admitted_at(); }); !s.ok()) return s;
  d->set_discharge_method(pv1.Get(36));
  d->set_discharge_destination(pv1.Get(37));
  d->set_site(pv1.Get(3, 4));
  return ReadTime(&pv1, 45, [&] { return d->mutable_discharged_at(); });
}

constexpr std::array<absl::string_view, 13> kEvents = {"A01", "A02", "A03", "A04", "A05", "A08", "A11",
                                                       "A12", "A13", "A16", "A28", "A31", "A40"};

absl::Status ReadEvent(const Message& m, absl::string_view trigger, const adapters::ReadOptions& options,
                       v1::CareEvent* e) {
  const Segment* pv1 = m.Find("PV1");
  const bool needs_visit = trigger != "A28" && trigger != "A31" && trigger != "A40";
  if (needs_visit && pv1 == nullptr) return Required(absl::StrCat("PV1: the segment is required in ", trigger));
  if (needs_visit) e->set_visit_number(pv1->Get(19));
  if (trigger == "A01" || trigger == "A04" || trigger == "A05" || trigger == "A11") {
    if (trigger == "A05") e->set_action(v1::EVENT_ACTION_PLANNED);
    if (trigger == "A11") e->set_action(v1::EVENT_ACTION_CANCEL);
    e->mutable_admission()->set_registration(trigger == "A04");
    return ReadAdmission(m, *pv1, e->mutable_admission());
  }
  if (trigger == "A03" || trigger == "A13") {
    if (trigger == "A13") e->set_action(v1::EVENT_ACTION_CANCEL);
    return ReadDischarge(*pv1, e->mutable_discharge());
  }
  if (trigger == "A16") {  // pending discharge: the expected time (PV2-9), the council's earliest notice
    e->set_action(v1::EVENT_ACTION_PLANNED);
    v1::Discharge* d = e->mutable_discharge();
    if (absl::Status s = ReadDischarge(*pv1, d); !s.ok()) return s;
    if (d->has_discharged_at()) return absl::OkStatus();
    return ReadTime(m.Find("PV2"), 9, [&] { return d->mutable_discharged_at(); });
  }
  if (trigger == "A02" || trigger == "A12") {
    if (trigger == "A12") e->set_action(v1::EVENT_ACTION_CANCEL);
    v1::Transfer* t = e->mutable_transfer();
    t->set_patient_class(pv1->Get(2));
    t->set_to_ward(WardOf(*pv1, 3));
    t->set_from_ward(WardOf(*pv1, 6));
    *t->mutable_transferred_at() = e->occurred_at();
    return absl::OkStatus();
  }
  if (trigger == "A08") {
    e->set_action(v1::EVENT_ACTION_UPDATE);
    if (pv1->Has(45)) return ReadDischarge(*pv1, e->mutable_discharge());
    return ReadAdmission(m, *pv1, e->mutable_admission());
  }
  if (trigger == "A28" || trigger == "A31") {
    e->mutable_person_change()->set_created(trigger == "A28");
    return absl::OkStatus();
  }
  // A40: MRG-1 names the identifiers retired into the PID's record.
  const Segment* mrg = m.Find("MRG");
  if (mrg == nullptr || mrg->Repetitions(1) == 0) return Invalid("MRG-1: A40 must name the identifiers to retire");
  v1::Merge* merge = e->mutable_merge();
  return ReadIdentifiers(*mrg, 1, options, merge->mutable_retired_nhs_number(), merge->mutable_retired_identifiers());
}

}  // namespace

absl::StatusOr<Adt> ReadAdt(const Message& m, const adapters::ReadOptions& options) {
  Adt out;
  const Segment& msh = m.msh();
  if (!absl::EqualsIgnoreCase(msh.Get(9, 1), "ADT")) {
    return Unsupported("MSH-9: only ADT messages are accepted");
  }
  Header& h = out.header;
  h.trigger = absl::AsciiStrToUpper(msh.Get(9, 2));
  if (std::find(kEvents.begin(), kEvents.end(), h.trigger) == kEvents.end()) {
    return UnsupportedEvent(absl::StrCat("MSH-9: event ", absl::CHexEscape(h.trigger.substr(0, 3)),
                                         " is not supported (A01 A02 A03 A04 A05 A08 A11 A12 A13 A16 A28 A31 A40)"));
  }
  h.sending_application = msh.Get(3);
  h.sending_facility = msh.Get(4);
  h.receiving_application = msh.Get(5);
  h.receiving_facility = msh.Get(6);
  h.control_id = msh.Get(10);
  if (h.control_id.empty()) return Required("MSH-10: the message control id is required");
  Timestamp sent;
  bool have_sent = false;
  if (absl::Status s = ReadTime(&msh, 7, [&] { return &sent; }, &have_sent); !s.ok()) return s;
  if (have_sent) h.sent_at = FromTimestamp(sent);

  if (absl::Status s = ReadPerson(m, options, out.record.mutable_person()); !s.ok()) return s;
  v1::CareEvent* e = out.record.add_events();
  e->set_reference(h.control_id);
  // When it happened: EVN-6, else EVN-2, else MSH-7.
  const Segment* evn = m.Find("EVN");
  bool have = false;
  if (absl::Status s = ReadTime(evn, 6, [&] { return e->mutable_occurred_at(); }, &have); !s.ok()) return s;
  if (!have) {
    if (absl::Status s = ReadTime(evn, 2, [&] { return e->mutable_occurred_at(); }, &have); !s.ok()) return s;
  }
  if (!have && h.sent_at != absl::InfinitePast()) *e->mutable_occurred_at() = ToProto(h.sent_at);
  if (absl::Status s = ReadEvent(m, h.trigger, options, e); !s.ok()) return s;
  return out;
}

absl::StatusOr<Adt> ReadAdt(absl::string_view er7, const Limits& limits, const adapters::ReadOptions& options) {
  auto m = Message::Parse(er7, limits);
  if (!m.ok()) return m.status();
  return ReadAdt(*m, options);
}

namespace {

// Components joined with ^, each escaped; trailing empties dropped.
std::string Components(std::vector<std::string> parts, const Encoding& enc) {
  while (!parts.empty() && parts.back().empty()) parts.pop_back();
  for (std::string& p : parts) p = Escape(p, enc);
  return absl::StrJoin(parts, std::string(1, enc.component));
}

class SegmentText {
 public:
  explicit SegmentText(absl::string_view id) { fields_.emplace_back(id); }
  // Field n (HL7 numbering), already encoded.
  SegmentText& Set(int n, std::string encoded) {
    if (static_cast<int>(fields_.size()) <= n) fields_.resize(n + 1);
    fields_[n] = std::move(encoded);
    return *this;
  }
  std::string Finish() const { return absl::StrJoin(fields_, "|") + "\r"; }

 private:
  std::vector<std::string> fields_;
};

// The v2.4 message structure (MSH-9.3) of each event ITK names.
absl::string_view StructureOf(absl::string_view trigger) {
  if (trigger == "A02" || trigger == "A03") return trigger == "A02" ? "ADT_A02" : "ADT_A03";
  if (trigger == "A05" || trigger == "A28" || trigger == "A31") return "ADT_A05";
  if (trigger == "A11" || trigger == "A12") return "ADT_A09";
  if (trigger == "A40") return "ADT_A39";
  if (trigger == "A16") return "ADT_A16";
  return "ADT_A01";  // A01, A04, A08, A13
}

absl::string_view TriggerOf(const v1::CareRecord& r, std::string* error) {
  if (r.events_size() > 1) {
    *error = absl::StrCat("an ADT message carries one event; this record has ", r.events_size());
    return "";
  }
  if (r.events_size() == 0) return "A31";
  const v1::CareEvent& e = r.events(0);
  const bool cancel = e.action() == v1::EVENT_ACTION_CANCEL, update = e.action() == v1::EVENT_ACTION_UPDATE;
  switch (e.detail_case()) {
    case v1::CareEvent::kAdmission:
      if (cancel) return "A11";
      if (update) return "A08";
      if (e.action() == v1::EVENT_ACTION_PLANNED) return "A05";
      return e.admission().registration() || e.admission().patient_class() == "O" ? "A04" : "A01";
    case v1::CareEvent::kTransfer: return cancel ? "A12" : "A02";
    case v1::CareEvent::kDischarge:
      return cancel ? "A13" : update ? "A08" : e.action() == v1::EVENT_ACTION_PLANNED ? "A16" : "A03";
    case v1::CareEvent::kPersonChange: return e.person_change().created() ? "A28" : "A31";
    case v1::CareEvent::kMerge: return "A40";
    default:
      *error = "HL7 v2 ADT carries admissions, transfers, discharges, person changes and merges only";
      return "";
  }
}

std::string CxRepetitions(const std::string& nhs, const google::protobuf::RepeatedPtrField<v1::LocalIdentifier>& ids,
                          const Encoding& enc) {
  std::vector<std::string> reps;
  if (!nhs.empty()) reps.push_back(Components({nhs, "", "", "NHS", "NH"}, enc));
  for (const v1::LocalIdentifier& id : ids) reps.push_back(Components({id.value(), "", "", id.assigner(), id.type()}, enc));
  return absl::StrJoin(reps, "~");
}

std::string PidSegment(const v1::Person& p, const Encoding& enc) {
  SegmentText pid("PID");
  pid.Set(3, CxRepetitions(p.nhs_number(), p.local_identifiers(), enc));
  std::vector<std::string> names;
  for (const v1::PersonName& n : p.names()) {
    const std::string first = n.given_size() > 0 ? n.given(0) : "";
    std::vector<absl::string_view> rest(n.given().begin() + std::min(1, n.given_size()), n.given().end());
    names.push_back(Components({n.family(), first, absl::StrJoin(rest, " "), "", n.prefix(), "",
                                std::string(NameTypeOf(n.use()))},
                               enc));
  }
  pid.Set(5, absl::StrJoin(names, "~"));
  pid.Set(7, FormatDate(p.birth_date()));
  pid.Set(8, std::string(SexCode(p.sex())));
  if (p.has_address()) {
    const v1::Address& a = p.address();
    // XAD-1 the first line, XAD-2 every other (v2.4 has two line components).
    std::vector<absl::string_view> rest(a.lines().begin() + std::min(1, a.lines_size()), a.lines().end());
    pid.Set(11, Components({a.lines_size() > 0 ? a.lines(0) : "", absl::StrJoin(rest, ", "), a.city(), a.district(),
                            a.postcode(), a.country(), a.type()},
                           enc));
  }
  pid.Set(22, Escape(p.ethnicity(), enc));
  pid.Set(29, FormatDate(p.death_date()));
  if (p.nhs_number_status() != v1::NHS_NUMBER_STATUS_UNSPECIFIED) {
    pid.Set(32, absl::StrCat("NSTS0", static_cast<int>(p.nhs_number_status())));
  }
  return pid.Finish();
}

std::string Location(absl::string_view ward, absl::string_view site, const Encoding& enc) {
  return Components({"", std::string(ward), "", std::string(site)}, enc);
}

}  // namespace

absl::StatusOr<std::string> WriteAdt(const v1::CareRecord& r, const Header& h) {
  std::string error;
  const absl::string_view trigger = TriggerOf(r, &error);
  if (trigger.empty()) return Unsupported(error);
  const Encoding enc;
  const absl::string_view structure = StructureOf(trigger);
  const v1::CareEvent* e = r.events_size() > 0 ? &r.events(0) : nullptr;
  std::string control = h.control_id;
  if (control.empty() && e != nullptr) control = e->reference();
  if (control.empty()) return Invalid("MSH-10: the message control id is required (the event's reference)");
  const absl::Time sent = h.sent_at == absl::InfinitePast() ? absl::Now() : h.sent_at;

  std::string out = absl::StrCat("MSH|^~\\&|", Escape(h.sending_application, enc), "|",
                                 Escape(h.sending_facility, enc), "|", Escape(h.receiving_application, enc), "|",
                                 Escape(h.receiving_facility, enc), "|", FormatDtm(ToProto(sent)), "||ADT^", trigger,
                                 "^", structure, "|", Escape(control, enc), "|P|2.4|||||GBR|UNICODE UTF-8|EN||ITKv1.0\r");
  SegmentText evn("EVN");
  evn.Set(1, std::string(trigger));
  evn.Set(2, FormatDtm(ToProto(sent)));
  if (e != nullptr && e->has_occurred_at()) evn.Set(6, FormatDtm(e->occurred_at()));
  absl::StrAppend(&out, evn.Finish(), PidSegment(r.person(), enc));
  if (!r.person().gp_practice().empty()) {
    absl::StrAppend(&out, "PD1|||", Components({"", "", r.person().gp_practice()}, enc), "\r");
  }
  if (e == nullptr) return out;
  if (e->has_merge()) {
    SegmentText mrg("MRG");
    mrg.Set(1, CxRepetitions(e->merge().retired_nhs_number(), e->merge().retired_identifiers(), enc));
    absl::StrAppend(&out, mrg.Finish());
    return out;
  }
  if (e->has_person_change()) return out;
  SegmentText pv1("PV1");
  if (e->has_admission()) {
    const v1::Admission& a = e->admission();
    pv1.Set(2, Escape(a.patient_class().empty() ? "I" : a.patient_class(), enc));
    pv1.Set(3, Location(a.ward(), a.site(), enc));
    pv1.Set(4, Escape(a.admission_method(), enc));
    pv1.Set(7, Components({a.consultant()}, enc));
    pv1.Set(19, Escape(e->visit_number(), enc));
    if (a.has_admitted_at()) pv1.Set(44, FormatDtm(a.admitted_at()));
    absl::StrAppend(&out, pv1.Finish());
    if (a.has_expected_discharge_at()) {
      absl::StrAppend(&out, SegmentText("PV2").Set(9, FormatDtm(a.expected_discharge_at())).Finish());
    }
  } else if (e->has_discharge()) {
    const v1::Discharge& d = e->discharge();
    pv1.Set(2, Escape(d.patient_class().empty() ? "I" : d.patient_class(), enc));
    pv1.Set(3, Location(d.ward(), d.site(), enc));
    pv1.Set(19, Escape(e->visit_number(), enc));
    if (d.has_admitted_at()) pv1.Set(44, FormatDtm(d.admitted_at()));
    pv1.Set(36, Escape(d.discharge_method(), enc));
    pv1.Set(37, Escape(d.discharge_destination(), enc));
    const bool pending = e->action() == v1::EVENT_ACTION_PLANNED;  // A16: expected, in PV2-9
    if (d.has_discharged_at() && !pending) pv1.Set(45, FormatDtm(d.discharged_at()));
    absl::StrAppend(&out, pv1.Finish());
    if (d.has_discharged_at() && pending) {
      absl::StrAppend(&out, SegmentText("PV2").Set(9, FormatDtm(d.discharged_at())).Finish());
    }
  } else if (e->has_transfer()) {
    const v1::Transfer& t = e->transfer();
    pv1.Set(2, Escape(t.patient_class().empty() ? "I" : t.patient_class(), enc));
    pv1.Set(3, Location(t.to_ward(), "", enc));
    pv1.Set(6, Location(t.from_ward(), "", enc));
    pv1.Set(19, Escape(e->visit_number(), enc));
    absl::StrAppend(&out, pv1.Finish());
  }
  return out;
}

namespace {

absl::string_view AckCodeText(AckCode c) {
  switch (c) {
    case AckCode::kAccept: return "AA";
    case AckCode::kError: return "AE";
    case AckCode::kReject: return "AR";
  }
  return "AE";
}

}  // namespace

std::string MakeAck(absl::string_view original, AckCode code, const AckError& error, absl::Time now,
                    absl::string_view control_id) {
  return MakeAckWithErrors(original, code,
                           code == AckCode::kAccept ? std::vector<AckError>() : std::vector<AckError>{error}, now,
                           control_id);
}

std::string MakeAckWithErrors(absl::string_view original, AckCode code, const std::vector<AckError>& errors,
                              absl::Time now, absl::string_view control_id) {
  // What can be read of the original's MSH; a broken message still gets an answer.
  std::array<std::string, 13> msh;  // MSH-1.. as text, unescaped
  if (auto m = Message::Parse(original); m.ok()) {
    for (int f = 3; f <= 12; ++f) msh[f] = m->msh().Get(f, 1);
    msh[9] = m->msh().Get(9, 2);  // the trigger
  } else if (absl::StartsWith(original, "MSH") && original.size() > 8) {
    // Too broken to parse: take MSH-10 by position with the declared separator.
    const absl::string_view first = original.substr(0, original.find_first_of("\r\n"));
    std::vector<absl::string_view> f = absl::StrSplit(first, original[3]);
    for (int i = 2; i < static_cast<int>(f.size()) && i <= 11; ++i) {
      // f[0] "MSH", f[1] MSH-2, f[i] MSH-(i+1).
      const absl::string_view v = f[i].substr(0, f[i].find('^'));
      if (v.size() <= 64 && i + 1 != 9) msh[i + 1] = std::string(v);
    }
  }
  const Encoding out_enc{Charset::kUtf8};
  auto esc = [&](absl::string_view s) { return Escape(s, out_enc); };
  std::string ack = absl::StrCat(
      "MSH|^~\\&|", esc(msh[5]), "|", esc(msh[6]), "|", esc(msh[3]), "|", esc(msh[4]), "|",
      absl::FormatTime("%Y%m%d%H%M%S", now, absl::UTCTimeZone()), "+0000||ACK^", esc(msh[9]), "^ACK|",
      esc(control_id), "|", esc(msh[11].empty() ? "P" : msh[11]), "|", esc(msh[12].empty() ? "2.4" : msh[12]),
      "|||||GBR|UNICODE UTF-8|EN\r", "MSA|", AckCodeText(code), "|", esc(msh[10]));
  if (code != AckCode::kAccept && !errors.empty()) absl::StrAppend(&ack, "|", esc(errors.front().text));
  absl::StrAppend(&ack, "\r");
  // ERR-1 in the v2.4 form (the code in its 4th component), and ERR-3/ERR-4
  // as v2.5 receivers read them.
  const std::string sub(1, out_enc.subcomponent);
  for (const AckError& error : errors) {
    absl::StrAppend(&ack, "ERR|^^^", esc(error.code), sub, esc(error.text), sub, "HL70357||", esc(error.code), "^",
                    esc(error.text), "^HL70357|", esc(error.severity), "\r");
  }
  return ack;
}

AckError AckErrorFor(const absl::Status& status) {
  // HL7 table 0357 (message error condition codes), chosen by the reason.
  const std::string r = ReasonOf(status);
  const char* code = "207";  // application internal error: any other refusal
  if (r == reason::kHl7EventUnsupported) {
    code = "201";  // unsupported event code
  } else if (r == reason::kHl7Unsupported) {
    code = "200";  // unsupported message type
  } else if (r == reason::kHl7RequiredMissing) {
    code = "101";  // required field missing
  } else if (r == reason::kHl7Invalid || r == reason::kNhsNumberInvalid || r == reason::kDateInvalid) {
    code = "102";  // data type error
  }
  return AckError{code, std::string(status.message())};
}

}  // namespace carebroker::hl7
