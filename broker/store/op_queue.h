// What both stores' queued operations share: an operation runs inside a
// shared transaction (a batch), keeps its own result, and completes with it
// once the batch commits, or with the batch's error when the batch fails.
// The rule that decides between the two is here once:
//   UNAVAILABLE from an operation fails the whole batch (the transaction
//   cannot commit); any other error is that operation's own answer, and
//   the rest of the batch commits.
#pragma once

#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "broker/store/store.h"
#include "core/reasons.h"
#include "core/status.h"

namespace carebroker {

template <typename T>
class OpResult {
 public:
  explicit OpResult(StoreCallback<T> done) : done_(std::move(done)) {}

  // Keeps the operation's result; returns the status that fails the batch
  // (the result's own when it is UNAVAILABLE), else OK.
  absl::Status Keep(absl::StatusOr<T> result) {
    result_ = std::move(result);
    return result_.status().code() == absl::StatusCode::kUnavailable ? result_.status() : absl::OkStatus();
  }

  // The kept result, for fixing up after the commit (e.g. audit indexes);
  // null when the operation failed.
  T* value() { return result_.ok() ? &*result_ : nullptr; }

  // Answers once: the batch's error when it failed, else the kept result.
  void Finish(const absl::Status& batch) {
    if (!batch.ok()) return std::move(done_)(batch);
    std::move(done_)(std::move(result_));
  }

 private:
  StoreCallback<T> done_;
  absl::StatusOr<T> result_ = absl::UnknownError("not run");
};

// FAILED_PRECONDITION STORE_CLOSED: the answer to any operation after Close.
inline absl::Status StoreClosedError() {
  return Error(absl::StatusCode::kFailedPrecondition, reason::kStoreClosed, "store is closed");
}

}  // namespace carebroker
