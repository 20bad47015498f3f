// Owner loss and spawn mode, with real processes: the owner is a separate program killed with
// SIGKILL, so nothing it held can be released politely.
#include <signal.h>
#include <sys/wait.h>

#include <memory>
#include <string>
#include <vector>

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

// Nothing of one owner's device state reaches the next (the edu device: scratch register 0x04,
// DMA source 0x80, memory decode). With a reset (sim:edu,reset; a real device whose VFIO offers
// one) the next owner finds the device's reset values; without, decode and bus mastering are
// off and GetState says so.
void NextOwnerInheritsNoDeviceState(const std::vector<std::string>& args) {
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
      testing::DaemonProcess::Start(args);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  absl::StatusOr<std::unique_ptr<VfioClient>> observer =
      VfioClient::Connect((*daemon)->socket_path());
  ASSERT_TRUE(observer.ok()) << observer.status();
  {
    absl::StatusOr<std::unique_ptr<VfioClient>> a = VfioClient::Connect((*daemon)->socket_path());
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE((*a)->ClaimOwnership().ok());
    ASSERT_TRUE((*a)->WriteConfig(0x04, 2, 0x0006).ok());
    ASSERT_TRUE((*a)->WriteRegion32(0, 0x04, 0x12345678).ok());
    ASSERT_TRUE((*a)->WriteRegion32(0, 0x80, 0x00abc000).ok());
  }
  absl::StatusOr<v1::DeviceState> after = WaitForState(
      **observer, [](const v1::DeviceState& s) { return !s.owner_attached(); });
  ASSERT_TRUE(after.ok()) << after.status();
  absl::StatusOr<std::unique_ptr<VfioClient>> b = VfioClient::Connect((*daemon)->socket_path());
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE((*b)->ClaimOwnership().ok());
  absl::StatusOr<v1::DeviceInfo> info = (*b)->GetDeviceInfo();
  ASSERT_TRUE(info.ok());
  if (info->flags().reset()) {
    EXPECT_EQ(after->last_owner_loss(), v1::OWNER_LOSS_RESET_DEVICE_RESET);
    ASSERT_TRUE((*b)->WriteConfig(0x04, 2, 0x0002).ok());
    EXPECT_NE(*(*b)->ReadRegion32(0, 0x04), ~0x12345678u) << "the scratch register kept A's value";
    EXPECT_EQ(*(*b)->ReadRegion32(0, 0x80), 0u) << "the DMA source kept A's value";
  } else {
    EXPECT_EQ(after->last_owner_loss(), v1::OWNER_LOSS_RESET_DECODE_DISABLED);
    EXPECT_EQ(*(*b)->ReadConfig(0x04, 2) & 0x7, 0u) << "decode or bus mastering survived A";
  }
}

TEST(OwnerLossTest, NextOwnerInheritsNoDeviceState) { NextOwnerInheritsNoDeviceState({}); }

TEST(OwnerLossTest, NextOwnerOfAResettableDeviceFindsItReset) {
  if (testing::DaemonProcess::DeviceName().rfind("sim:", 0) != 0) {
    GTEST_SKIP() << "the device under test (" << testing::DaemonProcess::DeviceName()
                 << ") is real; NextOwnerInheritsNoDeviceState covers it as it is";
  }
  NextOwnerInheritsNoDeviceState({"--device=sim:edu,reset"});
}

}  // namespace
}  // namespace vfiod
