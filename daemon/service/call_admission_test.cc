#include "daemon/service/call_admission.h"

#include <atomic>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

class CallAdmissionTest : public ::testing::Test {
 protected:
  CallAdmissionTest() : admission_(CallAdmissionOptions{3, 2, 2}) {}

  // Admits a call that runs until release_ is notified.
  absl::Status Hold(ConnectionId connection, CallLane lane) {
    return admission_.Admit(connection, lane, "ReadConfig", [this] {
      release_.WaitForNotification();
      ++finished_;
    });
  }

  absl::Notification release_;
  std::atomic<int> finished_{0};
  CallAdmission admission_;  // last: its destructor runs what it admitted
};

TEST_F(CallAdmissionTest, OwnerInlineRunsBeforeAdmitReturns) {
  bool ran = false;
  ASSERT_TRUE(admission_.Admit(1, CallLane::kOwnerInline, "ReadRegion", [&] { ran = true; }).ok());
  EXPECT_TRUE(ran);
}

TEST_F(CallAdmissionTest, ANonOwnerConnectionIsBoundedAndOthersAreNot) {
  ASSERT_TRUE(Hold(1, CallLane::kObserver).ok());
  ASSERT_TRUE(Hold(1, CallLane::kSetup).ok());
  absl::Status refused = Hold(1, CallLane::kObserver);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StartsWith(refused.message(), "ReadConfig: ")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "--max-observer-calls-per-connection"));
  EXPECT_EQ(Hold(1, CallLane::kSetup).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Hold(2, CallLane::kObserver).ok());
  // The owner's lanes are never refused, however many calls wait.
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Hold(1, CallLane::kOwnerWorker).ok());
  EXPECT_EQ(admission_.GetCounts().refused, 2u);
  release_.Notify();
}

TEST_F(CallAdmissionTest, ObserverCallsAreBoundedInTotalButSetupCallsAreNot) {
  ASSERT_TRUE(Hold(1, CallLane::kObserver).ok());
  ASSERT_TRUE(Hold(2, CallLane::kObserver).ok());
  ASSERT_TRUE(Hold(3, CallLane::kObserver).ok());
  EXPECT_EQ(admission_.GetCounts().observer_calls, 3u);
  absl::Status refused = Hold(4, CallLane::kObserver);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(refused.message(), "--max-observer-calls")) << refused;
  // An owner-to-be's claim still gets through.
  EXPECT_TRUE(Hold(4, CallLane::kSetup).ok());
  release_.Notify();
}

TEST_F(CallAdmissionTest, FinishedCallsMakeRoom) {
  std::atomic<int> ran{0};
  for (int round = 0; round < 20; ++round) {
    absl::Notification done;
    ASSERT_TRUE(admission_
                    .Admit(1, CallLane::kObserver, "GetState",
                           [&] {
                             ++ran;
                             done.Notify();
                           })
                    .ok());
    done.WaitForNotification();
    // The admission is released just after the work returns.
    while (admission_.GetCounts().observer_calls != 0) absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(ran.load(), 20);
  EXPECT_EQ(admission_.GetCounts().refused, 0u);
}

TEST(CallAdmissionShutdownTest, TheDestructorRunsEveryAdmittedCall) {
  std::atomic<int> ran{0};
  {
    CallAdmission admission(CallAdmissionOptions{64, 64, 1});
    for (int i = 0; i < 40; ++i) {
      const CallLane lane = i % 3 == 0   ? CallLane::kObserver
                            : i % 3 == 1 ? CallLane::kSetup
                                         : CallLane::kOwnerWorker;
      ASSERT_TRUE(admission.Admit(i, lane, "GetState", [&] { ++ran; }).ok());
    }
  }
  EXPECT_EQ(ran.load(), 40);
}

}  // namespace
}  // namespace vfiod
