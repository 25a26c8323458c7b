#include "broker/exchange/executor.h"

#include <pthread.h>

namespace carebroker {

Executor::Executor(int threads, size_t capacity) : capacity_(capacity) {
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      pthread_setname_np(pthread_self(), "cb-intake");
      Work();
    });
  }
}

Executor::~Executor() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  for (auto& t : threads_) t.join();
}

bool Executor::TrySubmit(Task task, const std::shared_ptr<Serial>& serial) {
  absl::MutexLock l(&mu_);
  if (waiting_ >= capacity_) return false;
  ++waiting_;
  if (serial == nullptr) {
    ready_.push_back({std::move(task), nullptr});
    return true;
  }
  serial->tasks.push_back(std::move(task));
  if (!serial->scheduled) {
    serial->scheduled = true;
    ready_.push_back({nullptr, serial});
  }
  return true;
}

size_t Executor::waiting() const {
  absl::MutexLock l(&mu_);
  return waiting_;
}

void Executor::Work() {
  for (;;) {
    Item item;
    {
      absl::MutexLock l(&mu_);
      // Stop only once nothing is left: every submitted task runs.
      mu_.Await(absl::Condition(this, &Executor::WorkOrStop));
      if (ready_.empty()) return;
      item = std::move(ready_.front());
      ready_.pop_front();
      if (item.serial == nullptr) --waiting_;
    }
    if (item.serial == nullptr) {
      std::move(item.task)();
      continue;
    }
    // A serial's tasks run here one after another until it is empty (or
    // has had its turn), so a busy stream costs one hand-over, not one per
    // task.
    for (int n = 0;; ++n) {
      Task task;
      {
        absl::MutexLock l(&mu_);
        if (item.serial->tasks.empty()) {
          item.serial->scheduled = false;
          break;
        }
        if (n == kSerialTurn) {  // let other serials and tasks run
          ready_.push_back(std::move(item));
          break;
        }
        task = std::move(item.serial->tasks.front());
        item.serial->tasks.pop_front();
        --waiting_;
      }
      std::move(task)();
    }
  }
}

}  // namespace carebroker
