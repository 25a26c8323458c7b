// The store conformance suite: one set of behaviours every Store
// implementation must show. An implementation's test file instantiates it:
//
//   INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformance,
//                            ::testing::Values(StoreFactory{"sqlite", ...}));
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "absl/status/statusor.h"
#include "broker/store/store.h"

namespace carebroker {

struct StoreFactory {
  std::string name;
  // Opens the store called `instance` in a fresh test; opening the same
  // instance again (after the first is destroyed) must see its data.
  std::function<absl::StatusOr<std::unique_ptr<Store>>(const std::string& instance)> open;
};

class StoreConformance : public ::testing::TestWithParam<StoreFactory> {};

}  // namespace carebroker
