// The owner always gets through (item 1 of the hardening issue): observers that hold every call
// they can must not make the owner's calls fail. A real daemon; observers that (a) start 16
// calls on an HTTP/2 connection whose stream window is 0 and never read, so no response can
// ever be written, (b) keep 2000 calls in flight through one channel, and (c) hold a WatchIrqs
// stream they never read while the owner raises interrupts for it. Through all of it the owner
// claims the device, binds its fd channel, registers and maps memory, reads BAR0 500 times,
// raises 50 interrupts and resets the device 50 times at once: every call must succeed.
#include <iostream>
#include <memory>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/attack/attacks.h"
#include "tests/attack/owner_workflow.h"
#include "tests/daemon_process.h"

namespace vfiod {
namespace {

using attack::AttackReport;
using attack::AttackSignals;
using attack::AttackTarget;
using attack::RunningAttack;

constexpr absl::Duration kMountTimeout = absl::Seconds(15);

TEST(OwnerCapacityTest, ObserversHoldingCallsDoNotStopTheOwner) {
  // sim:edu,reset: the simulated edu device with a function reset, so the owner can Reset.
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
      testing::DaemonProcess::Start({"--device=sim:edu,reset"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const AttackTarget target{(*daemon)->socket_path(), (*daemon)->vfio_user_path()};

  RunningAttack window_zero(
      [](const AttackTarget& t, AttackSignals& s) {
        return attack::WindowZeroCalls(t, attack::WindowZeroOptions{1, 16}, s);
      },
      target);
  ASSERT_TRUE(window_zero.WaitReady(kMountTimeout).ok());
  RunningAttack observers(
      [](const AttackTarget& t, AttackSignals& s) {
        return attack::ManyObserverCalls(t, attack::ObserverCallsOptions{2000}, s);
      },
      target);
  ASSERT_TRUE(observers.WaitReady(kMountTimeout).ok());
  RunningAttack unread_watch(
      [](const AttackTarget& t, AttackSignals& s) { return attack::UnreadIrqWatches(t, 1, s); },
      target);
  ASSERT_TRUE(unread_watch.WaitReady(kMountTimeout).ok());

  attack::OwnerWorkflowOptions options;
  options.bar_reads = 500;
  options.irq_triggers = 50;
  options.concurrent_resets = 50;
  const attack::OwnerWorkflowResult owner = attack::RunOwnerWorkflow(target.socket_path, options);

  const AttackReport& watch_report = unread_watch.Stop();
  const AttackReport& observer_report = observers.Stop();
  const AttackReport& window_report = window_zero.Stop();
  std::cout << "owner: " << owner.StepSummary() << "\n"
            << "window 0: " << window_report.status << ": " << window_report.summary << "\n"
            << "observer calls: " << observer_report.status << ": " << observer_report.summary
            << "\n"
            << "unread watch: " << watch_report.status << ": " << watch_report.summary << "\n";
  // The attacks were in place: the daemon dealt with every held call and the watch stream.
  EXPECT_TRUE(window_report.status.ok()) << window_report.status;
  EXPECT_TRUE(watch_report.status.ok()) << watch_report.status;

  EXPECT_EQ(owner.failed(), 0) << owner.StepSummary()
                               << "; first failure: " << owner.FirstFailure();
  // Every step was reached, with every call made.
  ASSERT_EQ(owner.steps.size(), 9u) << owner.StepSummary();
  EXPECT_EQ(owner.steps[6].calls, 500) << owner.StepSummary();
  EXPECT_EQ(owner.steps[7].calls, 51) << owner.StepSummary();
  EXPECT_EQ(owner.steps[8].calls, 50) << owner.StepSummary();
  EXPECT_TRUE((*daemon)->Running());
}

}  // namespace
}  // namespace vfiod
