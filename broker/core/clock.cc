#include "broker/core/clock.h"

namespace carebroker {

const Clock& SystemClock::Get() {
  static const SystemClock* c = new SystemClock;
  return *c;
}

}  // namespace carebroker
