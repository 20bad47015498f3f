#include "daemon/base/worker_threads.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

TEST(WorkerThreadsTest, RunsInOrderOnItsOwnThreadAndStopRunsWhatWasPosted) {
  WorkerThreads worker;
  worker.Start();
  std::vector<int> order;
  std::atomic<bool> other_thread{true};
  const std::thread::id poster = std::this_thread::get_id();
  for (int i = 0; i < 100; ++i) {
    worker.Post([&, i] {
      order.push_back(i);
      if (std::this_thread::get_id() == poster) other_thread = false;
    });
  }
  worker.Stop();
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
  EXPECT_TRUE(other_thread);
}

TEST(WorkerThreadsTest, PostDoesNotWaitForSlowWork) {
  WorkerThreads worker;
  worker.Start();
  absl::Notification release;
  absl::Notification second_ran;
  worker.Post([&] { release.WaitForNotification(); });
  worker.Post([&] { second_ran.Notify(); });
  // The poster is free while the first item blocks; the second waits its turn.
  EXPECT_FALSE(second_ran.HasBeenNotified());
  release.Notify();
  worker.Drain();
  EXPECT_TRUE(second_ran.HasBeenNotified());
}

TEST(WorkerThreadsTest, WorkOutsideStartAndStopRunsAtOnce) {
  WorkerThreads worker;
  bool ran = false;
  worker.Post([&] { ran = true; });
  EXPECT_TRUE(ran) << "before Start";
  worker.Start();
  worker.Stop();
  ran = false;
  worker.Post([&] { ran = true; });
  EXPECT_TRUE(ran) << "after Stop";
}

TEST(WorkerThreadsTest, SeveralThreadsRunItemsAtOnceAndStopRunsEverything) {
  WorkerThreads workers(3);
  workers.Start();
  // Three items that each wait for the other two: only three threads at once get them all done.
  absl::Mutex mu;
  int arrived = 0;
  std::atomic<int> done{0};
  for (int i = 0; i < 3; ++i) {
    workers.Post([&] {
      absl::MutexLock lock(&mu);
      ++arrived;
      mu.Await(absl::Condition(
          +[](int* n) { return *n == 3; }, &arrived));
      ++done;
    });
  }
  workers.Drain();
  EXPECT_EQ(done.load(), 3);
  for (int i = 0; i < 50; ++i) workers.Post([&] { ++done; });
  workers.Stop();
  EXPECT_EQ(done.load(), 53);
}

}  // namespace
}  // namespace vfiod
