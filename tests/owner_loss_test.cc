// Owner loss and spawn mode, with real processes: the owner is a separate program killed with
// SIGKILL, so nothing it held can be released politely.
#include <signal.h>
#include <sys/wait.h>

#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/vfio_client.h"
#include "gtest/gtest.h"
#include "tests/daemon_process.h"

namespace vfiod {
namespace {

absl::StatusOr<v1::DeviceState> WaitForState(VfioClient& client,
                                             bool (*predicate)(const v1::DeviceState&)) {
  absl::Time deadline = absl::Now() + absl::Seconds(15);
  absl::StatusOr<v1::DeviceState> state;
  do {
    state = client.GetState();
    if (!state.ok() || predicate(*state)) return state;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < deadline);
  return absl::DeadlineExceededError("state never reached: " + state->DebugString());
}

bool IrqsDisabled(const v1::DeviceState& state) {
  for (const v1::IrqIndexState& index : state.irqs()) {
    if (index.enabled()) return false;
  }
  return true;
}

TEST(OwnerLossTest, KilledOwnerLeavesNothingBehind) {
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon = testing::DaemonProcess::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  absl::StatusOr<std::unique_ptr<VfioClient>> observer =
      VfioClient::Connect((*daemon)->socket_path());
  ASSERT_TRUE(observer.ok()) << observer.status();

  absl::StatusOr<pid_t> owner = testing::SpawnProcess(
      {testing::DaemonProcess::RunfilePath("tests/owner_process"), (*daemon)->socket_path()});
  ASSERT_TRUE(owner.ok()) << owner.status();
  absl::StatusOr<v1::DeviceState> held = WaitForState(**observer, [](const v1::DeviceState& s) {
    return s.dma_mappings_size() == 4 && !IrqsDisabled(s);
  });
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_TRUE(held->owner_attached());
  EXPECT_EQ(held->memory_size(), 1);
  EXPECT_NE(*(*observer)->ReadConfig(0x04, 2) & 0x4, 0u) << "bus master was set by the owner";

  ::kill(*owner, SIGKILL);
  int status;
  ASSERT_EQ(::waitpid(*owner, &status, 0), *owner);

  absl::StatusOr<v1::DeviceState> after = WaitForState(
      **observer, [](const v1::DeviceState& s) { return !s.owner_attached(); });
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->dma_mappings_size(), 0);
  EXPECT_EQ(after->memory_size(), 0);
  EXPECT_TRUE(IrqsDisabled(*after));
  EXPECT_EQ(after->owner_losses(), 1u);
  EXPECT_EQ(*(*observer)->ReadConfig(0x04, 2) & 0x4, 0u) << "bus master must be cleared";

  // The daemon keeps serving, and a new owner can map the same IOVA again.
  ASSERT_TRUE((*observer)->ClaimOwnership().ok());
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("again", 0x10000);
  ASSERT_TRUE(memfd.ok());
  absl::StatusOr<v1::RegisterMemoryResponse> memory =
      (*observer)->RegisterMemory(memfd->get(), 0x10000);
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_TRUE((*observer)->MapDma(0x100000, 0x10000, memory->memory_id(), 0).ok());
}

TEST(SpawnModeTest, SpawnedDaemonServesItsOwnerAndExitsWithIt) {
  SpawnOptions options;
  options.binary_path = testing::DaemonProcess::BinaryPath();
  options.args = testing::DaemonProcess::BaseArgs();
  options.args.push_back("--device=" + testing::DaemonProcess::DeviceName());
  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Spawn(options);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<v1::DeviceState> state = (*client)->GetState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->caller_role(), v1::ROLE_OWNER);
  // The owner can use the fd channel it was spawned with.
  absl::StatusOr<client::UniqueFd> memfd = VfioClient::CreateSealedMemfd("spawn", 0x10000);
  ASSERT_TRUE(memfd.ok());
  EXPECT_TRUE((*client)->RegisterMemory(memfd->get(), 0x10000).ok());
  absl::StatusOr<int> exit_status = (*client)->Terminate();
  ASSERT_TRUE(exit_status.ok()) << exit_status.status();
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0) << *exit_status;
}

}  // namespace
}  // namespace vfiod
