#include "policy/minimise.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "core/status.h"
#include "core/reasons.h"
#include "core/sha256.h"
#include "google/protobuf/timestamp.pb.h"

namespace carebroker::policy {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

bool IsSet(const Message& m, const FieldDescriptor* f) {
  const Reflection* r = m.GetReflection();
  return f->is_repeated() ? r->FieldSize(m, f) > 0 : r->HasField(m, f);
}

void GeneraliseDate(Message* m, v1::Generalisation g) {
  const Descriptor* d = m->GetDescriptor();
  const Reflection* r = m->GetReflection();
  if (d->full_name() == "google.protobuf.Timestamp") {
    auto* ts = static_cast<google::protobuf::Timestamp*>(m);
    const absl::CivilSecond cs = absl::ToCivilSecond(absl::FromUnixSeconds(ts->seconds()), absl::UTCTimeZone());
    const absl::CivilDay first = g == v1::GENERALISATION_YEAR ? absl::CivilDay(cs.year(), 1, 1)
                                                               : absl::CivilDay(cs.year(), cs.month(), 1);
    ts->set_seconds(absl::ToUnixSeconds(absl::FromCivil(first, absl::UTCTimeZone())));
    ts->set_nanos(0);
    return;
  }
  // carebroker.v1.Date
  if (g == v1::GENERALISATION_YEAR) r->ClearField(m, d->FindFieldByName("month"));
  r->ClearField(m, d->FindFieldByName("day"));
}

void ApplyLeaf(Message* m, const FieldDescriptor* f, const v1::FieldTransform& spec, absl::string_view key,
               const std::string& path, std::vector<std::string>* withheld) {
  const Reflection* r = m->GetReflection();
  if (!IsSet(*m, f)) return;
  const int n = f->is_repeated() ? r->FieldSize(*m, f) : 1;
  switch (spec.action_case()) {
    case v1::FieldTransform::kRedact:
      r->ClearField(m, f);
      withheld->push_back(path);
      return;
    case v1::FieldTransform::kGeneralise:
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        for (int i = 0; i < n; ++i) {
          GeneraliseDate(f->is_repeated() ? r->MutableRepeatedMessage(m, f, i) : r->MutableMessage(m, f),
                         spec.generalise());
        }
        return;
      }
      for (int i = 0; i < n; ++i) {
        const std::string v = f->is_repeated() ? r->GetRepeatedString(*m, f, i) : r->GetString(*m, f);
        std::string g =
            spec.generalise() == v1::GENERALISATION_DISTRICT ? PostcodeDistrict(v) : PostcodeSector(v);
        if (g.empty()) {  // not a postcode: withhold rather than guess
          r->ClearField(m, f);
          withheld->push_back(path);
          return;
        }
        f->is_repeated() ? r->SetRepeatedString(m, f, i, std::move(g)) : r->SetString(m, f, std::move(g));
      }
      return;
    case v1::FieldTransform::kPseudonymise:
      for (int i = 0; i < n; ++i) {
        const std::string v = f->is_repeated() ? r->GetRepeatedString(*m, f, i) : r->GetString(*m, f);
        if (v.empty()) continue;
        f->is_repeated() ? r->SetRepeatedString(m, f, i, Pseudonym(key, v)) : r->SetString(m, f, Pseudonym(key, v));
      }
      return;
    case v1::FieldTransform::ACTION_NOT_SET:
      return;
  }
}

void ApplyAt(Message* m, const FieldChain& chain, size_t i, const v1::FieldTransform& spec, absl::string_view key,
             const std::string& path, std::vector<std::string>* withheld) {
  const FieldDescriptor* f = chain[i];
  if (i + 1 == chain.size()) {
    ApplyLeaf(m, f, spec, key, path, withheld);
    return;
  }
  const Reflection* r = m->GetReflection();
  if (f->is_repeated()) {
    for (int j = 0; j < r->FieldSize(*m, f); ++j) {
      ApplyAt(r->MutableRepeatedMessage(m, f, j), chain, i + 1, spec, key, path, withheld);
    }
  } else if (r->HasField(*m, f)) {
    ApplyAt(r->MutableMessage(m, f), chain, i + 1, spec, key, path, withheld);
  }
}

}  // namespace

absl::StatusOr<FieldChain> ResolveFieldPath(absl::string_view path) {
  FieldChain chain;
  const Descriptor* d = v1::CareRecord::descriptor();
  if (path.empty()) return InvalidArgument(reason::kFieldPathInvalid, "empty field path");
  for (absl::string_view seg : absl::StrSplit(path, '.')) {
    if (d == nullptr) {
      return InvalidArgument(reason::kFieldPathInvalid,
                             absl::StrCat("'", chain.back()->name(), "' has no fields beneath it (at '", seg, "')"));
    }
    const FieldDescriptor* f = d->FindFieldByName(std::string(seg));
    if (f == nullptr) {
      return InvalidArgument(reason::kFieldPathInvalid,
                             absl::StrCat("'", seg, "' is not a field of ", d->full_name()));
    }
    chain.push_back(f);
    const bool structural = f->message_type() != nullptr &&
                            f->message_type()->full_name() != "google.protobuf.Timestamp" &&
                            f->message_type()->full_name() != "carebroker.v1.Date";
    d = structural ? f->message_type() : nullptr;
  }
  return chain;
}

absl::StatusOr<Minimiser> Minimiser::Compile(const google::protobuf::RepeatedPtrField<std::string>& fields,
                                             const google::protobuf::RepeatedPtrField<v1::FieldTransform>& transforms) {
  Minimiser m;
  m.root_ = std::make_shared<Node>();
  for (const std::string& path : fields) {
    auto chain = ResolveFieldPath(path);
    if (!chain.ok()) return chain.status();
    Node* n = m.root_.get();
    for (const auto* f : *chain) {
      if (n->all) break;
      auto& kid = n->kids[f->number()];
      if (kid == nullptr) kid = std::make_shared<Node>();
      n = kid.get();
    }
    n->all = true;
    n->kids.clear();
  }
  for (const auto& t : transforms) {
    auto chain = ResolveFieldPath(t.field());
    if (!chain.ok()) return chain.status();
    m.needs_key_ |= t.has_pseudonymise() && t.pseudonymise();
    m.transforms_.push_back(Transform{*std::move(chain), t.field(), t});
  }
  return m;
}

void Minimiser::Mask(Message* m, const Node& node, const std::string& prefix,
                     std::vector<std::string>* withheld) const {
  const Reflection* r = m->GetReflection();
  std::vector<const FieldDescriptor*> set;
  r->ListFields(*m, &set);
  for (const FieldDescriptor* f : set) {
    const std::string path = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    auto it = node.kids.find(f->number());
    if (it == node.kids.end()) {
      r->ClearField(m, f);
      withheld->push_back(path);
      continue;
    }
    const Node& kid = *it->second;
    if (kid.all) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < r->FieldSize(*m, f); ++i) Mask(r->MutableRepeatedMessage(m, f, i), kid, path, withheld);
    } else {
      Mask(r->MutableMessage(m, f), kid, path, withheld);
    }
  }
}

namespace {

bool IsLeafMessage(const Descriptor* d) {
  return d->full_name() == "google.protobuf.Timestamp" || d->full_name() == v1::Date::descriptor()->full_name();
}

// The path of field `f` under `prefix`, itself a path this made (or the
// empty root): made once a thread, as the schema bounds the paths there are.
const std::string& PathOf(const std::string& prefix, const FieldDescriptor* f) {
  thread_local absl::flat_hash_map<std::pair<const std::string*, const FieldDescriptor*>, std::unique_ptr<std::string>>
      paths;
  std::unique_ptr<std::string>& p = paths[{&prefix, f}];
  if (p == nullptr) p = std::make_unique<std::string>(prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name()));
  return *p;
}

void CollectPaths(const Message& m, const std::string& prefix, std::vector<const std::string*>* out) {
  std::vector<const FieldDescriptor*> set;
  m.GetReflection()->ListFields(m, &set);
  for (const FieldDescriptor* f : set) {
    const std::string& path = PathOf(prefix, f);
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || IsLeafMessage(f->message_type())) {
      out->push_back(&path);
    } else if (f->is_repeated()) {
      for (int i = 0; i < m.GetReflection()->FieldSize(m, f); ++i) {
        CollectPaths(m.GetReflection()->GetRepeatedMessage(m, f, i), path, out);
      }
    } else {
      CollectPaths(m.GetReflection()->GetMessage(m, f), path, out);
    }
  }
}

}  // namespace

std::vector<std::string> PresentPaths(const Message& m) {
  static const std::string kRoot;
  std::vector<const std::string*> found;
  CollectPaths(m, kRoot, &found);
  std::sort(found.begin(), found.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
  found.erase(std::unique(found.begin(), found.end()), found.end());  // one string a path
  std::vector<std::string> out;
  out.reserve(found.size());
  for (const std::string* p : found) out.push_back(*p);
  return out;
}

std::vector<std::string> Minimiser::Apply(v1::CareRecord* record, absl::string_view key) const {
  std::vector<std::string> withheld;
  if (!root_->all) Mask(record, *root_, "", &withheld);
  for (const auto& t : transforms_) ApplyAt(record, t.chain, 0, t.spec, key, t.path, &withheld);
  std::sort(withheld.begin(), withheld.end());
  withheld.erase(std::unique(withheld.begin(), withheld.end()), withheld.end());
  return withheld;
}

namespace {

// Upper case without spaces, if it has the shape of a UK postcode: an
// outward code of 2-4 characters starting with a letter, then an inward
// code of a digit and two letters.
std::string CompactPostcode(absl::string_view postcode) {
  std::string s;
  for (char c : postcode) {
    if (c == ' ') continue;
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c))) return "";
    s.push_back(absl::ascii_toupper(static_cast<unsigned char>(c)));
  }
  if (s.size() < 5 || s.size() > 7 || !absl::ascii_isalpha(s[0])) return "";
  const size_t in = s.size() - 3;
  if (!absl::ascii_isdigit(s[in]) || !absl::ascii_isalpha(s[in + 1]) || !absl::ascii_isalpha(s[in + 2])) return "";
  return s;
}

}  // namespace

std::string PostcodeDistrict(absl::string_view postcode) {
  std::string s = CompactPostcode(postcode);
  return s.empty() ? s : s.substr(0, s.size() - 3);
}

std::string PostcodeSector(absl::string_view postcode) {
  std::string s = CompactPostcode(postcode);
  return s.empty() ? s : absl::StrCat(s.substr(0, s.size() - 3), " ", s.substr(s.size() - 3, 1));
}

std::string Pseudonym(absl::string_view key, absl::string_view value) { return HmacSha256Hex(key, value); }

}  // namespace carebroker::policy
