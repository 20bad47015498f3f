#include "daemon/vfio_user/dma_windows.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>

#include "daemon/sim/sim_backend.h"
#include "daemon/vfio_user/protocol.h"
#include "gtest/gtest.h"

namespace vfiod::vfio_user {
namespace {

constexpr uint32_t kRW = kDmaMapRead | kDmaMapWrite;
constexpr uint64_t kRamSize = 1 << 20;

class DmaWindowsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<DeviceBackend>> backend = CreateSimulatedBackend("edu");
    ASSERT_TRUE(backend.ok()) << backend.status();
    DeviceLimits limits;
    limits.max_memory_regions = 2;
    absl::StatusOr<std::unique_ptr<PciDevice>> device =
        PciDevice::Create(*std::move(backend), limits);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = *std::move(device);
    windows_ = std::make_unique<DmaWindows>(device_.get());
  }

  static UniqueFd Ram(uint64_t size = kRamSize, bool seal = true) {
    UniqueFd fd(::memfd_create("ram", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    EXPECT_EQ(::ftruncate(fd.get(), size), 0);
    if (seal) EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
    return fd;
  }

  // A second fd for the same file, as QEMU sends its RAM memfd again for each window.
  static UniqueFd Again(const UniqueFd& fd) { return UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0)); }

  std::unique_ptr<PciDevice> device_;
  std::unique_ptr<DmaWindows> windows_;
};

TEST_F(DmaWindowsTest, OneRegistrationPerFileCountedByItsWindows) {
  UniqueFd ram = Ram();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(windows_->Map(0x100000 + i * 0x40000, 0x40000, i * 0x40000, kRW, Again(ram), 100)
                    .ok());
  }
  EXPECT_EQ(device_->Snapshot().memory.size(), 1u);
  EXPECT_EQ(device_->Snapshot().mappings.size(), 4u);
  // Unmapped and mapped again several times, as QEMU does during boot.
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(windows_->Unmap(0x100000 + i * 0x40000, 0x40000, 0).ok());
    EXPECT_TRUE(device_->Snapshot().memory.empty()) << "the last window releases the file";
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(
          windows_->Map(0x100000 + i * 0x40000, 0x40000, i * 0x40000, kRW, Again(ram), 100).ok());
    }
  }
  EXPECT_EQ(device_->Snapshot().memory.size(), 1u);
}

TEST_F(DmaWindowsTest, WindowsWithoutAnFdAreRecordedButNeverMapped) {
  ASSERT_TRUE(windows_->Map(0xfffc0000, 0x40000, 0, kDmaMapRead, std::nullopt, 100).ok());
  EXPECT_TRUE(device_->Snapshot().mappings.empty());
  ASSERT_EQ(windows_->List().size(), 1u);
  EXPECT_FALSE(windows_->List()[0].memory_id.has_value());
  EXPECT_EQ(windows_->Map(0xfffc1000, 0x1000, 0, kDmaMapRead, std::nullopt, 100).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(windows_->Unmap(0xfffc0000, 0x40000, 0).ok());
  EXPECT_TRUE(windows_->List().empty());
}

TEST_F(DmaWindowsTest, FailuresChangeNothing) {
  UniqueFd ram = Ram();
  ASSERT_TRUE(windows_->Map(0x100000, 0x10000, 0, kRW, Again(ram), 100).ok());
  const auto before = windows_->List().size();
  // A new file whose mapping the device model refuses (unaligned) is not left registered.
  UniqueFd other = Ram();
  EXPECT_EQ(windows_->Map(0x400800, 0x1000, 0, kRW, std::move(other), 100).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(device_->Snapshot().memory.size(), 1u);
  // An unsealed file is refused by the memory rules.
  EXPECT_FALSE(windows_->Map(0x400000, 0x1000, 0, kRW, Ram(kRamSize, /*seal=*/false), 100).ok());
  // The window limit.
  EXPECT_EQ(windows_->Map(0x400000, 0x1000, 0, kRW, Again(ram), 1).code(),
            absl::StatusCode::kResourceExhausted);
  // Overlap, on either side.
  EXPECT_EQ(windows_->Map(0xff000, 0x2000, 0, kRW, Again(ram), 100).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(windows_->Map(0x10f000, 0x2000, 0, kRW, Again(ram), 100).code(),
            absl::StatusCode::kAlreadyExists);
  // Unmaps that name no window exactly.
  EXPECT_EQ(windows_->Unmap(0x200000, 0x1000, 0).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(windows_->Unmap(0x100000, 0x1000, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(windows_->Unmap(0x100000, 0x10000, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(windows_->List().size(), before);
  EXPECT_EQ(device_->Snapshot().mappings.size(), 1u);
  EXPECT_EQ(device_->Snapshot().memory.size(), 1u);
}

TEST_F(DmaWindowsTest, UnmapAllAndClear) {
  UniqueFd ram = Ram();
  ASSERT_TRUE(windows_->Map(0x100000, 0x10000, 0, kRW, Again(ram), 100).ok());
  ASSERT_TRUE(windows_->Map(0xfffc0000, 0x40000, 0, kDmaMapRead, std::nullopt, 100).ok());
  EXPECT_EQ(windows_->Unmap(0x100000, 0, VFIO_DMA_UNMAP_FLAG_ALL).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(windows_->Unmap(0, 0, VFIO_DMA_UNMAP_FLAG_ALL).ok());
  EXPECT_TRUE(windows_->List().empty());
  EXPECT_TRUE(device_->Snapshot().memory.empty());
  EXPECT_TRUE(device_->Snapshot().mappings.empty());

  // Owner loss: the device model releases its state, then Clear() forgets the windows.
  ASSERT_TRUE(windows_->Map(0x100000, 0x10000, 0, kRW, Again(ram), 100).ok());
  device_->ReleaseOwnerResources();
  windows_->Clear();
  EXPECT_TRUE(windows_->List().empty());
  EXPECT_TRUE(windows_->Map(0x100000, 0x10000, 0, kRW, Again(ram), 100).ok());
}

}  // namespace
}  // namespace vfiod::vfio_user
