#include "core/nhs_number.h"

namespace carebroker {

bool IsValidNhsNumber(absl::string_view s) {
  if (s.size() != 10) return false;
  int sum = 0;
  for (int i = 0; i < 10; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (i < 9) sum += (s[i] - '0') * (10 - i);
  }
  int check = 11 - sum % 11;
  if (check == 11) check = 0;
  return check != 10 && check == s[9] - '0';
}

}  // namespace carebroker
