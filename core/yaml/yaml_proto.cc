#include "core/yaml/yaml_proto.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/enum_names.h"
#include "core/status.h"
#include "core/time.h"
#include "core/reasons.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

class Reader {
 public:
  // `budget`: the most values the document may yield (see YamlToProto).
  Reader(absl::string_view file, YamlLines* lines, size_t budget) : file_(file), lines_(lines), budget_(budget) {}

  absl::Status Fail(const YAML::Node& n, absl::string_view path, absl::string_view reason) const {
    return InvalidArgument(reason::kConfigInvalid, absl::StrCat(file_, ":", n.Mark().line + 1, ": ",
                                                          path.empty() ? "(top)" : path, ": ",
                                                          reason));
  }

  absl::Status ReadMessage(const YAML::Node& n, const std::string& path, Message* msg) {
    const Descriptor* d = msg->GetDescriptor();
    if (d->full_name() == "google.protobuf.Duration") return ReadDuration(n, path, msg);
    if (n.IsNull()) return absl::OkStatus();  // an empty section is an empty message
    if (!n.IsMap()) return Fail(n, path, "expected a mapping of keys");
    const Reflection* r = msg->GetReflection();
    absl::flat_hash_set<std::string> seen;
    for (const auto& kv : n) {
      if (!kv.first.IsScalar()) return Fail(kv.first, path, "keys must be plain words");
      const std::string& key = kv.first.Scalar();
      const std::string sub = path.empty() ? key : absl::StrCat(path, ".", key);
      if (!seen.insert(key).second) return Fail(kv.first, sub, "appears twice");
      Record(sub, kv.first);
      const FieldDescriptor* f = d->FindFieldByName(key);
      if (f == nullptr) return Fail(kv.first, sub, "unknown key");
      if (f->is_map()) {
        // A YAML mapping of entries: each key and value read like fields.
        if (kv.second.IsNull()) continue;
        if (!kv.second.IsMap()) return Fail(kv.second, sub, "expected a mapping of key: value");
        const Descriptor* entry = f->message_type();
        for (const auto& item : kv.second) {
          if (!item.first.IsScalar()) return Fail(item.first, sub, "keys must be plain words");
          const std::string ip = absl::StrCat(sub, ".", item.first.Scalar());
          Record(ip, item.first);
          Message* e = r->AddMessage(msg, f);
          if (auto s = ReadField(item.first, ip, e, entry->map_key(), false); !s.ok()) return s;
          if (auto s = ReadField(item.second, ip, e, entry->map_value(), false); !s.ok()) return s;
        }
        continue;
      }
      if (const auto* oneof = f->containing_oneof()) {
        if (const FieldDescriptor* set = r->GetOneofFieldDescriptor(*msg, oneof)) {
          return Fail(kv.first, sub,
                      absl::StrCat("conflicts with '", set->name(), "': only one of them may be given"));
        }
      }
      if (f->is_repeated()) {
        if (kv.second.IsNull()) continue;
        if (!kv.second.IsSequence()) return Fail(kv.second, sub, "expected a list");
        int i = 0;
        for (const auto& item : kv.second) {
          const std::string ip = absl::StrCat(sub, "[", i++, "]");
          Record(ip, item);
          if (auto s = ReadField(item, ip, msg, f, /*repeated=*/true); !s.ok()) return s;
        }
      } else if (auto s = ReadField(kv.second, sub, msg, f, false); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

 private:
  void Record(const std::string& path, const YAML::Node& n) {
    if (lines_ != nullptr) lines_->emplace(path, n.Mark().line + 1);
  }

  absl::Status ReadDuration(const YAML::Node& n, const std::string& path, Message* msg) {
    if (!n.IsScalar()) return Fail(n, path, "expected a duration such as 30s, 15m, 2h or 5d");
    auto d = ParseDurationWithDays(n.Scalar());
    if (!d.ok()) return Fail(n, path, d.status().message());
    auto* out = static_cast<google::protobuf::Duration*>(msg);
    *out = google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(*d));
    return absl::OkStatus();
  }

  absl::Status ReadField(const YAML::Node& n, const std::string& path, Message* msg,
                         const FieldDescriptor* f, bool repeated) {
    if (++values_ > budget_) {
      return Fail(n, path, absl::StrCat("anchors and aliases make this file more than ", budget_,
                                        " values, more than its size allows; write the repeated parts out"));
    }
    const Reflection* r = msg->GetReflection();
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      Message* sub = repeated ? r->AddMessage(msg, f) : r->MutableMessage(msg, f);
      return ReadMessage(n, path, sub);
    }
    if (!n.IsScalar()) return Fail(n, path, "expected a single value");
    const std::string& v = n.Scalar();
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        repeated ? r->AddString(msg, f, v) : r->SetString(msg, f, v);
        return absl::OkStatus();
      case FieldDescriptor::CPPTYPE_BOOL: {
        bool b;
        if (!absl::SimpleAtob(v, &b)) return Fail(n, path, "expected true or false");
        repeated ? r->AddBool(msg, f, b) : r->SetBool(msg, f, b);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_INT32: {
        int32_t x;
        if (!absl::SimpleAtoi(v, &x)) return Fail(n, path, "expected a whole number");
        repeated ? r->AddInt32(msg, f, x) : r->SetInt32(msg, f, x);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_INT64: {
        int64_t x;
        if (!absl::SimpleAtoi(v, &x)) return Fail(n, path, "expected a whole number");
        repeated ? r->AddInt64(msg, f, x) : r->SetInt64(msg, f, x);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_UINT32: {
        uint32_t x;
        if (!absl::SimpleAtoi(v, &x)) return Fail(n, path, "expected a whole number, 0 or more");
        repeated ? r->AddUInt32(msg, f, x) : r->SetUInt32(msg, f, x);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t x;
        if (!absl::SimpleAtoi(v, &x)) return Fail(n, path, "expected a whole number, 0 or more");
        repeated ? r->AddUInt64(msg, f, x) : r->SetUInt64(msg, f, x);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT: {
        double x;
        if (!absl::SimpleAtod(v, &x) || !std::isfinite(x)) return Fail(n, path, "expected a number");
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) {
          repeated ? r->AddDouble(msg, f, x) : r->SetDouble(msg, f, x);
        } else {
          repeated ? r->AddFloat(msg, f, static_cast<float>(x)) : r->SetFloat(msg, f, static_cast<float>(x));
        }
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_ENUM: {
        const EnumValueDescriptor* ev = FindEnumValue(f->enum_type(), v);
        if (ev == nullptr || ev->number() == 0) {
          return Fail(n, path, absl::StrCat("'", v, "' is not one of ", EnumChoices(f->enum_type())));
        }
        repeated ? r->AddEnumValue(msg, f, ev->number()) : r->SetEnumValue(msg, f, ev->number());
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
    return Fail(n, path, "unsupported field type");
  }

  static std::string EnumChoices(const EnumDescriptor* e) {
    std::string out;
    for (int i = 1; i < e->value_count(); ++i) {
      absl::StrAppend(&out, i > 1 ? ", " : "", EnumShortName(e, e->value(i)->number()));
    }
    return out;
  }

  std::string file_;
  YamlLines* lines_;
  const size_t budget_;
  size_t values_ = 0;
};

}  // namespace

absl::Status YamlToProto(absl::string_view text, absl::string_view file, Message* msg,
                         YamlLines* lines) {
  msg->Clear();
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::DeepRecursion& e) {
    return InvalidArgument(reason::kConfigInvalid, absl::StrCat(file, ":", e.mark.line + 1, ": not valid YAML: nested ",
                                                                e.depth(), " levels deep or more"));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(reason::kConfigInvalid,
                           absl::StrCat(file, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  }
  // A document without aliases yields at most one value for every byte
  // (`a,` is two bytes); aliases can make a few kilobytes yield millions
  // (an alias of a list of aliases...), so a document yielding more than
  // that is refused before it can exhaust the broker's memory.
  Reader reader(file, lines, std::max<size_t>(text.size(), 1024));
  try {
    return reader.ReadMessage(root, "", msg);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(reason::kConfigInvalid, absl::StrCat(file, ":", e.mark.line + 1, ": ", e.msg));
  }
}

absl::Status YamlError(absl::string_view file, const YamlLines& lines, absl::string_view path,
                       absl::string_view reason) {
  std::string p(path);
  int line = 0;
  while (true) {
    if (auto it = lines.find(p); it != lines.end()) {
      line = it->second;
      break;
    }
    const auto cut = p.find_last_of(".[");
    if (cut == std::string::npos) break;
    p.resize(cut);
  }
  return InvalidArgument(reason::kConfigInvalid, line > 0 ? absl::StrCat(file, ":", line, ": ", path, ": ", reason)
                                                    : absl::StrCat(file, ": ", path, ": ", reason));
}

}  // namespace carebroker
