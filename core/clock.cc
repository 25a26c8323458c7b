#include "core/clock.h"

namespace carebroker {

absl::TimeZone UkZone() {
  static const absl::TimeZone* tz = [] {
    auto* z = new absl::TimeZone;
    if (!absl::LoadTimeZone("Europe/London", z)) *z = absl::UTCTimeZone();
    return z;
  }();
  return *tz;
}

const Clock& SystemClock::Get() {
  static const SystemClock* c = new SystemClock;
  return *c;
}

}  // namespace carebroker
