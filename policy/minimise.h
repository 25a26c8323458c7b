// Minimisation: cuts a canonical CareRecord down to the fields a flow
// releases and applies the flow's transforms (redact, generalise,
// pseudonymise). Works by reflection over carebroker.v1.CareRecord, so a new
// canonical field is withheld until an agreement names it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "carebroker/v1/policy.pb.h"
#include "carebroker/v1/record.pb.h"
#include "google/protobuf/descriptor.h"

namespace carebroker::policy {

using FieldChain = std::vector<const google::protobuf::FieldDescriptor*>;

// Resolves a dotted path of CareRecord field names ("person.address.postcode",
// "events.discharge"). Repeated fields are stepped through: the path names
// the field in every element. INVALID_ARGUMENT naming the bad segment.
absl::StatusOr<FieldChain> ResolveFieldPath(absl::string_view path);

// A flow's released fields and transforms, compiled once.
class Minimiser {
 public:
  // `fields` and `transforms` must already be valid (see agreements.cc).
  static absl::StatusOr<Minimiser> Compile(const google::protobuf::RepeatedPtrField<std::string>& fields,
                                           const google::protobuf::RepeatedPtrField<v1::FieldTransform>& transforms);

  // True when some transform pseudonymises (the recipient needs a key).
  bool needs_key() const { return needs_key_; }

  // Cuts `record` down in place. `key` is the recipient's pseudonymisation
  // key (unused unless needs_key()). Returns the paths withheld (fields
  // present in the input that the recipient does not get, or redacted),
  // sorted and without duplicates. Generalised and pseudonymised fields are
  // released, transformed, and not listed.
  std::vector<std::string> Apply(v1::CareRecord* record, absl::string_view key) const;

 private:
  struct Node {
    bool all = false;  // this field and everything beneath it is released
    absl::flat_hash_map<int, std::shared_ptr<Node>> kids;  // by field number
  };
  struct Transform {
    FieldChain chain;
    std::string path;
    v1::FieldTransform spec;
  };
  void Mask(google::protobuf::Message* m, const Node& node, const std::string& prefix,
            std::vector<std::string>* withheld) const;

  std::shared_ptr<Node> root_;
  std::vector<Transform> transforms_;
  bool needs_key_ = false;
};

// The leaf field paths set in a record (Date and Timestamp count as
// leaves), sorted, repeated fields once: what a minimised record releases.
std::vector<std::string> PresentPaths(const google::protobuf::Message& m);

// Generalisations, exposed for tests. A postcode that does not look like a
// UK postcode generalises to "" (withheld rather than guessed).
std::string PostcodeDistrict(absl::string_view postcode);  // "LS1 4AP" -> "LS1"
std::string PostcodeSector(absl::string_view postcode);    // "LS1 4AP" -> "LS1 4"
// Lower-case hex HMAC-SHA256 of `value` under `key`.
std::string Pseudonym(absl::string_view key, absl::string_view value);

}  // namespace carebroker::policy
