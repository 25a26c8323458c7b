#include "broker/exchange/executor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace carebroker {
namespace {

TEST(ExecutorTest, RunsEveryTaskAcceptedBeforeDestruction) {
  std::atomic<int> ran{0};
  {
    Executor e(2, 1000);
    for (int i = 0; i < 500; ++i) ASSERT_TRUE(e.TrySubmit([&ran] { ran.fetch_add(1); }));
  }  // the destructor waits for every accepted task
  EXPECT_EQ(ran.load(), 500);
}

TEST(ExecutorTest, RefusesPastItsCapacityWithoutRunningTheTask) {
  std::atomic<int> ran{0};
  std::atomic<bool> refused_ran{false};
  {
    Executor e(1, 2);
    absl::Notification release, started;
    ASSERT_TRUE(e.TrySubmit([&] {
      started.Notify();
      release.WaitForNotification();
    }));
    started.WaitForNotification();  // the one thread is busy; nothing is waiting
    EXPECT_TRUE(e.TrySubmit([&ran] { ran.fetch_add(1); }));
    EXPECT_TRUE(e.TrySubmit([&ran] { ran.fetch_add(1); }));
    EXPECT_EQ(e.waiting(), 2u);
    EXPECT_FALSE(e.TrySubmit([&refused_ran] { refused_ran = true; }));
    EXPECT_EQ(e.waiting(), 2u);
    release.Notify();
  }  // every accepted task has run
  EXPECT_EQ(ran.load(), 2);
  EXPECT_FALSE(refused_ran.load());  // a refused task is dropped
}

TEST(ExecutorTest, SerialTasksRunOneAtATimeInOrderOnManyThreads) {
  constexpr int kSerials = 8, kEach = 200;
  absl::Mutex mu;
  std::vector<std::vector<int>> seen(kSerials);
  std::vector<std::atomic<int>> running(kSerials);
  std::atomic<bool> overlapped{false};
  {
  Executor e(4, 10000);
  std::vector<std::shared_ptr<Executor::Serial>> serials;
  for (int s = 0; s < kSerials; ++s) serials.push_back(e.NewSerial());
  for (int i = 0; i < kEach; ++i) {
    for (int s = 0; s < kSerials; ++s) {
      ASSERT_TRUE(e.TrySubmit(
          [&, s, i] {
            if (running[s].fetch_add(1) != 0) overlapped = true;
            {
              absl::MutexLock l(&mu);
              seen[s].push_back(i);
            }
            running[s].fetch_sub(1);
          },
          serials[s]));
    }
  }
  serials.clear();  // owners may let go while their tasks wait or run
  }  // every accepted task has run
  absl::MutexLock l(&mu);
  EXPECT_FALSE(overlapped);
  for (int s = 0; s < kSerials; ++s) {
    ASSERT_EQ(seen[s].size(), static_cast<size_t>(kEach)) << "serial " << s;
    for (int i = 0; i < kEach; ++i) ASSERT_EQ(seen[s][i], i) << "serial " << s;
  }
}

}  // namespace
}  // namespace carebroker
