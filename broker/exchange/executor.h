// A bounded pool of threads for CPU work that must not run on gRPC's
// callback threads: parsing, deciding, minimising and rendering sends.
//
// Bounded twice: a fixed number of threads, and at most `capacity` tasks
// waiting; TrySubmit refuses past that rather than queueing without bound.
// A Serial runs its tasks one at a time in submission order (on any of the
// pool's threads), so a stream's sends reach the store in request order.
//
// Thread-safe. Tasks must not block on other tasks of the same pool.
// Destruction waits for every submitted task to finish.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace carebroker {

class Executor {
 public:
  using Task = absl::AnyInvocable<void() &&>;

  // A queue whose tasks run one at a time, in order. Held by shared_ptr so
  // it may be released by its owner while a task of it is running.
  class Serial {
   private:
    friend class Executor;
    std::deque<Task> tasks;  // guarded by the executor's lock
    bool scheduled = false;  // in the ready queue or running
  };

  Executor(int threads, size_t capacity);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  std::shared_ptr<Serial> NewSerial() const { return std::make_shared<Serial>(); }

  // Queues `task` (after the earlier tasks of `serial`, if given). False,
  // with `task` dropped unrun, when `capacity` tasks are already waiting.
  bool TrySubmit(Task task, const std::shared_ptr<Serial>& serial = nullptr) ABSL_LOCKS_EXCLUDED(mu_);

  // Tasks waiting, not yet started.
  size_t waiting() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // A ready item: a plain task, or a serial whose front task is next.
  struct Item {
    Task task;
    std::shared_ptr<Serial> serial;
  };

  // Tasks a serial runs in a row before it goes to the back of the queue.
  static constexpr int kSerialTurn = 64;

  void Work() ABSL_LOCKS_EXCLUDED(mu_);
  bool WorkOrStop() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !ready_.empty(); }

  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<Item> ready_ ABSL_GUARDED_BY(mu_);
  size_t waiting_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace carebroker
