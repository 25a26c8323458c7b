#include "adapters/council/council_json.h"

#include <bitset>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "adapters/common/values.h"
#include "core/status.h"
#include "core/reasons.h"
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

absl::Status Invalid(absl::string_view what) { return InvalidArgument(reason::kCouncilJsonInvalid, what); }

// The two message types written as strings (descriptors fetched once).
bool IsDate(const Descriptor* d) {
  static const Descriptor* const date = v1::Date::descriptor();
  return d == date;
}
bool IsTimestamp(const Descriptor* d) {
  static const Descriptor* const timestamp = google::protobuf::Timestamp::descriptor();
  return d == timestamp;
}

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

constexpr int kMaxFields = 128;  // per message of the record

// Every message and enum the record holds, indexed once by JSON name and
// word; immutable afterwards, so readers share it without a lock.
class Names {
 public:
  static const Names& Get() {
    static const Names* names = new Names(v1::CareRecord::descriptor());
    return *names;
  }

  using Fields = absl::flat_hash_map<std::string, const FieldDescriptor*>;

  // The fields of a message type of the record (never null for one).
  const Fields* FieldsOf(const Descriptor* d) const {
    const auto it = messages_.find(d);
    return it == messages_.end() ? nullptr : &it->second;
  }

  const EnumValueDescriptor* Enum(const EnumDescriptor* e, absl::string_view word) const {
    const auto it = enums_.find(e);
    if (it == enums_.end()) return nullptr;
    const auto v = it->second.find(word);
    return v == it->second.end() ? nullptr : v->second;
  }

 private:
  explicit Names(const Descriptor* root) { Index(root); }

  void Index(const Descriptor* d) {
    if (messages_.contains(d)) return;
    if (d->field_count() > kMaxFields) std::abort();  // a schema change the reader must be told about
    Fields& fields = messages_[d];
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      fields.emplace(f->json_name(), f);
    }
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->enum_type() != nullptr && !enums_.contains(f->enum_type())) {
        auto& words = enums_[f->enum_type()];
        for (int v = 1; v < f->enum_type()->value_count(); ++v) {  // 0 is "unspecified": leave the key out instead
          words.emplace(EnumWord(f->enum_type()->value(v)), f->enum_type()->value(v));
        }
      }
      if (f->message_type() != nullptr) Index(f->message_type());
    }
  }

  absl::flat_hash_map<const Descriptor*, Fields> messages_;
  absl::flat_hash_map<const EnumDescriptor*, absl::flat_hash_map<std::string, const EnumValueDescriptor*>> enums_;
};

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

// Reads the document straight into the record as the JSON parser walks it
// (no document tree): each object is a message, each key a field found by
// its JSON name. The path of a value is spelled out only for an error.
class SaxReader final : public nlohmann::json_sax<Json> {
 public:
  explicit SaxReader(Message* root) : root_(root) {}

  // The first error the reader found; OK when the parser stopped on its own.
  const absl::Status& status() const { return status_; }

  bool null() override { return Scalar(Value{Kind::kNull}); }
  bool boolean(bool b) override { return Scalar(Value{Kind::kBool, b}); }
  bool number_integer(number_integer_t i) override { return Scalar(Value{Kind::kInt, false, i}); }
  bool number_unsigned(number_unsigned_t u) override {
    return Scalar(u <= static_cast<uint64_t>(INT64_MAX) ? Value{Kind::kInt, false, static_cast<int64_t>(u)}
                                                        : Value{Kind::kDouble, false, 0, static_cast<double>(u)});
  }
  bool number_float(number_float_t d, const string_t&) override { return Scalar(Value{Kind::kDouble, false, 0, d}); }
  bool string(string_t& s) override { return Scalar(Value{Kind::kString, false, 0, 0, &s}); }
  bool binary(binary_t&) override { return Fail(Invalid(absl::StrCat(PathOf(), ": expected JSON text"))); }

  bool start_object(std::size_t) override {
    if (stack_.empty()) {
      stack_.push_back(Frame{root_, Names::Get().FieldsOf(root_->GetDescriptor())});
      return true;
    }
    const Slot at = Current();
    if (at.f == nullptr) return Fail(Wrong("an integer"));  // schemaVersion
    if (at.f->is_repeated() && !at.element) return Fail(Invalid(absl::StrCat(PathOf(), ": expected an array")));
    if (at.f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || IsDate(at.f->message_type()) ||
        IsTimestamp(at.f->message_type())) {
      return Fail(Wrong(Want(at.f)));
    }
    if (!OneKind(at)) return false;
    const Reflection* r = at.m->GetReflection();
    stack_.push_back(Frame{at.element ? r->AddMessage(at.m, at.f) : r->MutableMessage(at.m, at.f),
                           Names::Get().FieldsOf(at.f->message_type())});
    return true;
  }

  bool key(string_t& k) override {
    Frame& top = stack_.back();
    top.f = nullptr;
    if (stack_.size() == 1 && k == "schemaVersion") return true;
    const auto it = top.fields->find(k);
    if (it == top.fields->end()) {
      const std::string where = ContainerPath();
      return Fail(Invalid(absl::StrCat(where.empty() ? "$" : where, ": unknown key \"",
                                       absl::CHexEscape(k.substr(0, 40)), "\"")));
    }
    top.f = it->second;
    if (top.seen.test(static_cast<size_t>(top.f->index()))) {
      return Fail(Invalid(absl::StrCat(PathOf(), ": a key given twice")));
    }
    top.seen.set(static_cast<size_t>(top.f->index()));
    return true;
  }

  bool end_object() override {
    stack_.pop_back();
    Done();
    return true;
  }

  bool start_array(std::size_t) override {
    if (stack_.empty()) return Fail(Invalid("$: expected an object"));
    const Slot at = Current();
    if (at.f == nullptr) return Fail(Wrong("an integer"));
    if (!at.f->is_repeated() || at.element) return Fail(Wrong(Want(at.f)));
    stack_.push_back(Frame{at.m, nullptr, at.f, /*array=*/true});
    return true;
  }

  bool end_array() override {
    stack_.pop_back();
    Done();
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  enum class Kind { kNull, kBool, kInt, kDouble, kString };
  struct Value {
    Kind kind;
    bool b = false;
    int64_t i = 0;
    double d = 0;
    std::string* s = nullptr;
  };
  // An open object (a message) or array (a repeated field's elements).
  struct Frame {
    Message* m;
    const Names::Fields* fields;         // object: its message's fields
    const FieldDescriptor* f = nullptr;  // object: the current key's field (null: schemaVersion); array: the repeated field
    bool array = false;
    size_t index = 0;                                          // array: the current element
    std::bitset<kMaxFields> seen = {};                    // object: keys given so far, by field index
  };
  // Where the next value goes.
  struct Slot {
    Message* m;
    const FieldDescriptor* f;  // null for schemaVersion
    bool element;              // an element of a repeated field
  };

  Slot Current() const {
    const Frame& top = stack_.back();
    return Slot{top.m, top.f, top.array};
  }

  // A value (scalar, object or array) in an array is done: the next has the next index.
  void Done() {
    if (!stack_.empty() && stack_.back().array) ++stack_.back().index;
  }

  bool Fail(absl::Status s) {
    if (status_.ok()) status_ = std::move(s);
    return false;
  }

  // The path of the value being read ("events[0].carePackage.weeklyCost").
  std::string PathOf(size_t frames) const {
    std::string out;
    for (size_t i = 0; i < frames; ++i) {
      const Frame& f = stack_[i];
      if (f.array) {
        absl::StrAppend(&out, "[", f.index, "]");
      } else {
        absl::StrAppend(&out, out.empty() ? "" : ".", f.f != nullptr ? f.f->json_name() : "schemaVersion");
      }
    }
    return out;
  }
  std::string PathOf() const { return PathOf(stack_.size()); }
  // The path of the object being read.
  std::string ContainerPath() const { return PathOf(stack_.size() - 1); }

  absl::Status Wrong(absl::string_view want) const { return Invalid(absl::StrCat(PathOf(), ": expected ", want)); }

  static std::string Want(const FieldDescriptor* f) {
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING: return "a string";
      case FieldDescriptor::CPPTYPE_DOUBLE: return "a number";
      case FieldDescriptor::CPPTYPE_BOOL: return "true or false";
      case FieldDescriptor::CPPTYPE_INT32: return "an integer";
      case FieldDescriptor::CPPTYPE_ENUM: {
        std::vector<std::string> words;
        for (int i = 1; i < f->enum_type()->value_count(); ++i) words.push_back(EnumWord(f->enum_type()->value(i)));
        return absl::StrCat("one of ", absl::StrJoin(words, ", "));
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        if (IsDate(f->message_type())) return "a date YYYY-MM-DD";
        if (IsTimestamp(f->message_type())) return "a date-time YYYY-MM-DDThh:mm:ssZ";
        return "an object";
      default: return "a supported value";
    }
  }

  // An event has one kind: a second kind's key is refused.
  bool OneKind(const Slot& at) {
    const auto* oneof = at.f->containing_oneof();
    if (oneof == nullptr) return true;
    const FieldDescriptor* set = at.m->GetReflection()->GetOneofFieldDescriptor(*at.m, oneof);
    if (set == nullptr || set == at.f) return true;
    return Fail(Invalid(absl::StrCat(ContainerPath(), ": an event has one kind, not both ", set->json_name(), " and ",
                                     at.f->json_name())));
  }

  bool Scalar(const Value& v) {
    if (stack_.empty()) return Fail(Invalid("$: expected an object"));
    const Slot at = Current();
    if (at.f == nullptr) {  // schemaVersion
      if (v.kind != Kind::kInt || v.i != kSchemaVersion) {
        return Fail(Invalid(absl::StrCat("schemaVersion: this broker reads version ", kSchemaVersion)));
      }
      return true;
    }
    if (v.kind == Kind::kNull && !at.element) return true;  // a key with null is a key left out
    if (at.f->is_repeated() && !at.element) return Fail(Invalid(absl::StrCat(PathOf(), ": expected an array")));
    if (!OneKind(at) || !Set(at, v)) return false;
    Done();
    return true;
  }

  bool Set(const Slot& at, const Value& v) {
    Message* m = at.m;
    const FieldDescriptor* f = at.f;
    const Reflection* r = m->GetReflection();
    const bool rep = at.element;
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        if (v.kind != Kind::kString) break;
        rep ? r->AddString(m, f, std::move(*v.s)) : r->SetString(m, f, std::move(*v.s));
        return true;
      case FieldDescriptor::CPPTYPE_DOUBLE: {
        if (v.kind != Kind::kInt && v.kind != Kind::kDouble) break;
        const double d = v.kind == Kind::kInt ? static_cast<double>(v.i) : v.d;
        rep ? r->AddDouble(m, f, d) : r->SetDouble(m, f, d);
        return true;
      }
      case FieldDescriptor::CPPTYPE_BOOL:
        if (v.kind != Kind::kBool) break;
        rep ? r->AddBool(m, f, v.b) : r->SetBool(m, f, v.b);
        return true;
      case FieldDescriptor::CPPTYPE_INT32:
        if (v.kind != Kind::kInt || v.i < INT32_MIN || v.i > INT32_MAX) break;
        rep ? r->AddInt32(m, f, static_cast<int32_t>(v.i)) : r->SetInt32(m, f, static_cast<int32_t>(v.i));
        return true;
      case FieldDescriptor::CPPTYPE_ENUM: {
        const EnumValueDescriptor* e = v.kind == Kind::kString ? Names::Get().Enum(f->enum_type(), *v.s) : nullptr;
        if (e == nullptr) break;
        rep ? r->AddEnum(m, f, e) : r->SetEnum(m, f, e);
        return true;
      }
      case FieldDescriptor::CPPTYPE_MESSAGE: {
        if (v.kind != Kind::kString) break;
        if (IsDate(f->message_type())) {
          auto d = adapters::ParseDate(*v.s, "");
          if (!d.ok()) return Fail(adapters::ParseDate(*v.s, PathOf()).status());
          (rep ? r->AddMessage(m, f) : r->MutableMessage(m, f))->CopyFrom(*d);
          return true;
        }
        if (IsTimestamp(f->message_type())) {
          auto t = adapters::ParseDateTime(*v.s, "");
          if (!t.ok()) return Fail(adapters::ParseDateTime(*v.s, PathOf()).status());
          (rep ? r->AddMessage(m, f) : r->MutableMessage(m, f))->CopyFrom(*t);
          return true;
        }
        break;
      }
      default: break;
    }
    return Fail(Wrong(Want(f)));
  }

  Message* const root_;
  std::vector<Frame> stack_;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<v1::CareRecord> ReadCouncilJson(absl::string_view text, const adapters::ReadOptions& options,
                                               size_t max_bytes) {
  if (text.size() > max_bytes) return Invalid(absl::StrCat("the document exceeds ", max_bytes, " bytes"));
  v1::CareRecord out;
  SaxReader reader(&out);
  if (!Json::sax_parse(text.begin(), text.end(), &reader)) {
    return reader.status().ok() ? Invalid("not well-formed JSON") : reader.status();
  }
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
