// Strong identity types shared by every layer: organisations, messages,
// people, workflows and the roles certificates carry.
#pragma once

#include <compare>
#include <functional>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>

namespace carebroker {

// A string with a type of its own, so an OrgCode cannot be passed where a
// MessageId is expected. Cheap to copy and move; hashable.
template <typename Tag>
class NamedString {
 public:
  NamedString() = default;
  explicit NamedString(std::string v) : v_(std::move(v)) {}
  const std::string& str() const { return v_; }
  bool empty() const { return v_.empty(); }
  auto operator<=>(const NamedString&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const NamedString& s) {
    return H::combine(std::move(h), s.v_);
  }

 private:
  std::string v_;
};

// An ODS organisation code (RR8, Y06601, 503). Upper case, no spaces.
using OrgCode = NamedString<struct OrgCodeTag>;
// A broker-assigned message id: 32 lower-case hex characters.
using MessageId = NamedString<struct MessageIdTag>;
// A ten-digit NHS number (core/nhs_number.h checks it). Patient data: never
// logged, never in an error message or a metric label.
using NhsNumber = NamedString<struct NhsNumberTag>;
// A workflow name, UPPER_SNAKE (core/shapes.h): HOSPITAL_DISCHARGE.
using Workflow = NamedString<struct WorkflowTag>;

// What a verified certificate lets its holder do.
enum class Role { kAgency, kIgOfficer, kOperator };

absl::string_view RoleName(Role r);

// Who is calling: derived only from a verified client certificate.
struct Identity {
  OrgCode org;
  Role role = Role::kAgency;
};

}  // namespace carebroker
