#include "daemon/base/serial_worker.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

TEST(SerialWorkerTest, RunsInOrderOnItsOwnThreadAndStopRunsWhatWasPosted) {
  SerialWorker worker;
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

TEST(SerialWorkerTest, PostDoesNotWaitForSlowWork) {
  SerialWorker worker;
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

TEST(SerialWorkerTest, WorkOutsideStartAndStopRunsAtOnce) {
  SerialWorker worker;
  bool ran = false;
  worker.Post([&] { ran = true; });
  EXPECT_TRUE(ran) << "before Start";
  worker.Start();
  worker.Stop();
  ran = false;
  worker.Post([&] { ran = true; });
  EXPECT_TRUE(ran) << "after Stop";
}

}  // namespace
}  // namespace vfiod
