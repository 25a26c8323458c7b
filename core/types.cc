#include "core/types.h"

namespace carebroker {

absl::string_view RoleName(Role r) {
  switch (r) {
    case Role::kAgency: return "agency";
    case Role::kIgOfficer: return "ig-officer";
    case Role::kOperator: return "operator";
  }
  return "unknown";
}

}  // namespace carebroker
