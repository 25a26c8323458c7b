#include "adapters/council/council_json.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "adapters/common/values.h"
#include "broker/core/status.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace carebroker::council {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using Json = nlohmann::json;

absl::Status Invalid(absl::string_view what) { return InvalidArgument("COUNCIL_JSON_INVALID", what); }

bool IsDate(const Descriptor* d) { return d == v1::Date::descriptor(); }
bool IsTimestamp(const Descriptor* d) { return d->full_name() == "google.protobuf.Timestamp"; }

// The word for an enum value: NHS-number statuses are their NSTS codes
// ("01".."08"); others drop the type prefix, lower-case, hyphenated
// (SEX_NOT_KNOWN -> "not-known", EVENT_ACTION_CANCEL -> "cancel").
std::string EnumWord(const EnumValueDescriptor* v) {
  if (v->type() == v1::NhsNumberStatus_descriptor()) return absl::StrCat("0", v->number());
  std::string prefix;
  for (char c : v->type()->name()) {
    if (absl::ascii_isupper(static_cast<unsigned char>(c)) && !prefix.empty()) prefix.push_back('_');
    prefix.push_back(absl::ascii_toupper(static_cast<unsigned char>(c)));
  }
  absl::string_view name = v->name();
  absl::ConsumePrefix(&name, prefix + "_");
  return absl::StrReplaceAll(absl::AsciiStrToLower(name), {{"_", "-"}});
}

const EnumValueDescriptor* EnumFromWord(const EnumDescriptor* e, absl::string_view word) {
  for (int i = 1; i < e->value_count(); ++i) {  // 0 is "unspecified": leave the key out instead
    if (EnumWord(e->value(i)) == word) return e->value(i);
  }
  return nullptr;
}

Json Write(const Message& m);

Json WriteValue(const Message& m, const FieldDescriptor* f, int index) {
  const Reflection* r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING: return rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
    case FieldDescriptor::CPPTYPE_DOUBLE: return rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f);
    case FieldDescriptor::CPPTYPE_BOOL: return rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case FieldDescriptor::CPPTYPE_INT32: return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case FieldDescriptor::CPPTYPE_ENUM: return EnumWord(rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f));
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      const Message& sub = rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f);
      if (IsDate(f->message_type())) return adapters::FormatDate(static_cast<const v1::Date&>(sub));
      if (IsTimestamp(f->message_type())) {
        google::protobuf::Timestamp ts;
        ts.CopyFrom(sub);
        return adapters::FormatDateTime(ts);
      }
      return Write(sub);
    }
    default: return nullptr;  // no other types in CareRecord
  }
}

Json Write(const Message& m) {
  Json out = Json::object();
  std::vector<const FieldDescriptor*> fields;
  m.GetReflection()->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    if (f->is_repeated()) {
      Json list = Json::array();
      for (int i = 0; i < m.GetReflection()->FieldSize(m, f); ++i) list.push_back(WriteValue(m, f, i));
      out[f->json_name()] = std::move(list);
    } else {
      out[f->json_name()] = WriteValue(m, f, -1);
    }
  }
  return out;
}

const FieldDescriptor* FieldByJsonName(const Descriptor* d, const std::string& key) {
  for (int i = 0; i < d->field_count(); ++i) {
    if (d->field(i)->json_name() == key) return d->field(i);
  }
  return nullptr;
}

absl::Status Read(const Json& j, const std::string& path, Message* m);

absl::Status ReadValue(const Json& j, const std::string& path, Message* m, const FieldDescriptor* f) {
  const Reflection* r = m->GetReflection();
  const bool rep = f->is_repeated();
  auto wrong = [&](absl::string_view want) { return Invalid(absl::StrCat(path, ": expected ", want)); };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      if (!j.is_string()) return wrong("a string");
      rep ? r->AddString(m, f, j.get<std::string>()) : r->SetString(m, f, j.get<std::string>());
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_DOUBLE:
      if (!j.is_number()) return wrong("a number");
      rep ? r->AddDouble(m, f, j.get<double>()) : r->SetDouble(m, f, j.get<double>());
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_BOOL:
      if (!j.is_boolean()) return wrong("true or false");
      rep ? r->AddBool(m, f, j.get<bool>()) : r->SetBool(m, f, j.get<bool>());
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_INT32:
      if (!j.is_number_integer() || j.get<int64_t>() < INT32_MIN || j.get<int64_t>() > INT32_MAX) {
        return wrong("an integer");
      }
      rep ? r->AddInt32(m, f, j.get<int32_t>()) : r->SetInt32(m, f, j.get<int32_t>());
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumValueDescriptor* v = j.is_string() ? EnumFromWord(f->enum_type(), j.get<std::string>()) : nullptr;
      if (v == nullptr) {
        std::vector<std::string> words;
        for (int i = 1; i < f->enum_type()->value_count(); ++i) words.push_back(EnumWord(f->enum_type()->value(i)));
        return wrong(absl::StrCat("one of ", absl::StrJoin(words, ", ")));
      }
      rep ? r->AddEnum(m, f, v) : r->SetEnum(m, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      Message* sub = rep ? r->AddMessage(m, f) : r->MutableMessage(m, f);
      if (IsDate(f->message_type())) {
        if (!j.is_string()) return wrong("a date YYYY-MM-DD");
        auto d = adapters::ParseDate(j.get<std::string>(), path);
        if (!d.ok()) return d.status();
        sub->CopyFrom(*d);
        return absl::OkStatus();
      }
      if (IsTimestamp(f->message_type())) {
        if (!j.is_string()) return wrong("a date-time YYYY-MM-DDThh:mm:ssZ");
        auto t = adapters::ParseDateTime(j.get<std::string>(), path);
        if (!t.ok()) return t.status();
        sub->CopyFrom(*t);
        return absl::OkStatus();
      }
      return Read(j, path, sub);
    }
    default: return wrong("a supported value");
  }
}

absl::Status Read(const Json& j, const std::string& path, Message* m) {
  if (!j.is_object()) return Invalid(absl::StrCat(path, ": expected an object"));
  const Descriptor* d = m->GetDescriptor();
  for (const auto& [key, value] : j.items()) {
    const std::string at = path.empty() ? key : absl::StrCat(path, ".", key);
    if (path.empty() && key == "schemaVersion") {
      if (!value.is_number_integer() || value.get<int64_t>() != kSchemaVersion) {
        return Invalid(absl::StrCat("schemaVersion: this broker reads version ", kSchemaVersion));
      }
      continue;
    }
    const FieldDescriptor* f = FieldByJsonName(d, key);
    if (f == nullptr) {
      return Invalid(absl::StrCat(path.empty() ? "$" : path, ": unknown key \"",
                                  absl::CHexEscape(key.substr(0, 40)), "\""));
    }
    if (value.is_null()) continue;
    if (const auto* oneof = f->containing_oneof(); oneof != nullptr) {
      if (const FieldDescriptor* set = m->GetReflection()->GetOneofFieldDescriptor(*m, oneof); set != nullptr) {
        return Invalid(absl::StrCat(path, ": an event has one kind, not both ", set->json_name(), " and ", key));
      }
    }
    if (f->is_repeated()) {
      if (!value.is_array()) return Invalid(absl::StrCat(at, ": expected an array"));
      for (size_t i = 0; i < value.size(); ++i) {
        if (absl::Status s = ReadValue(value[i], absl::StrCat(at, "[", i, "]"), m, f); !s.ok()) return s;
      }
    } else if (absl::Status s = ReadValue(value, at, m, f); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::CareRecord> ReadCouncilJson(absl::string_view text, const adapters::ReadOptions& options,
                                               size_t max_bytes) {
  if (text.size() > max_bytes) return Invalid(absl::StrCat("the document exceeds ", max_bytes, " bytes"));
  const Json doc = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Invalid("not well-formed JSON");
  v1::CareRecord out;
  if (absl::Status s = Read(doc, "", &out); !s.ok()) return s;
  if (!out.person().nhs_number().empty()) {
    auto n = adapters::CheckedNhsNumber(out.person().nhs_number(), "person.nhsNumber", options);
    if (!n.ok()) return n.status();
    out.mutable_person()->set_nhs_number(*n);
  }
  for (int i = 0; i < out.events_size(); ++i) {
    v1::CareEvent& e = *out.mutable_events(i);
    if (e.has_merge() && !e.merge().retired_nhs_number().empty()) {
      auto n = adapters::CheckedNhsNumber(e.merge().retired_nhs_number(),
                                          absl::StrCat("events[", i, "].merge.retiredNhsNumber"), options);
      if (!n.ok()) return n.status();
      e.mutable_merge()->set_retired_nhs_number(*n);
    }
  }
  return out;
}

std::string WriteCouncilJson(const v1::CareRecord& record, int indent) {
  Json out = Write(record);
  out["schemaVersion"] = kSchemaVersion;
  return out.dump(indent, ' ', false, Json::error_handler_t::replace);
}

}  // namespace carebroker::council
