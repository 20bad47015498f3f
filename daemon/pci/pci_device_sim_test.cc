// PciDevice on the simulated edu device: the decode of a real device layout, region access
// through the kernel-like backend, and DMA end to end (the device reads and writes registered
// memory through the mappings PciDevice made).
#include <fcntl.h>
#include <linux/pci_regs.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "daemon/base/fd_count_for_test.h"
#include "daemon/pci/pci_device.h"
#include "daemon/sim/edu_device.h"
#include "daemon/sim/sim_backend.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

using Edu = sim::EduDevice;  // the edu register map, defined once

using Code = absl::StatusCode;
using ::vfiod::testing::CountOpenFds;

// edu's BAR0 registers (QEMU hw/misc/edu.c).
constexpr uint32_t kDmaRun = 0x1;
constexpr uint32_t kDmaToRam = 0x2;
constexpr uint64_t kDmaBuffer = 0x40000;

constexpr uint64_t kMiB = 1 << 20;

UniqueFd MakeMemfd(uint64_t size) {
  int fd = ::memfd_create("pci_device_sim_test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
    return UniqueFd();
  }
  return UniqueFd(fd);
}

std::unique_ptr<PciDevice> MakeEdu(absl::string_view spec = "edu") {
  absl::StatusOr<std::unique_ptr<DeviceBackend>> backend = CreateSimulatedBackend(spec);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<PciDevice>> device =
      PciDevice::Create(*std::move(backend), DeviceLimits());
  EXPECT_TRUE(device.ok()) << device.status();
  if (!device.ok()) return nullptr;
  absl::Status started = (*device)->Start();
  EXPECT_TRUE(started.ok()) << started;
  return *std::move(device);
}

absl::Status Write32(PciDevice& device, uint64_t offset, uint32_t value) {
  uint8_t bytes[4];
  std::memcpy(bytes, &value, 4);
  return device.WriteRegion(0, offset, bytes);
}

absl::StatusOr<uint32_t> Read32(PciDevice& device, uint64_t offset) {
  absl::StatusOr<std::vector<uint8_t>> bytes = device.ReadRegion(0, offset, 4);
  if (!bytes.ok()) return bytes.status();
  uint32_t value;
  std::memcpy(&value, bytes->data(), 4);
  return value;
}

// Runs one edu DMA transfer and waits for it to complete.
void RunDma(PciDevice& device, uint64_t src, uint64_t dst, uint32_t count, bool to_ram) {
  ASSERT_TRUE(Write32(device, Edu::kRegDmaSrc, static_cast<uint32_t>(src)).ok());
  ASSERT_TRUE(Write32(device, Edu::kRegDmaDst, static_cast<uint32_t>(dst)).ok());
  ASSERT_TRUE(Write32(device, Edu::kRegDmaCount, count).ok());
  ASSERT_TRUE(Write32(device, Edu::kRegDmaCmd, kDmaRun | (to_ram ? kDmaToRam : 0)).ok());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<uint32_t> cmd = Read32(device, Edu::kRegDmaCmd);
    ASSERT_TRUE(cmd.ok()) << cmd.status();
    if ((*cmd & kDmaRun) == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  FAIL() << "DMA did not complete";
}

TEST(PciDeviceSimTest, DescribesEdu) {
  std::unique_ptr<PciDevice> device = MakeEdu();
  ASSERT_NE(device, nullptr);
  const DeviceDescription& d = device->description();
  EXPECT_EQ(d.vendor_id, 0x1234);
  EXPECT_EQ(d.device_id, 0x11e8);
  EXPECT_EQ(d.class_code, 0x00ff00u);
  EXPECT_EQ(d.revision, 0x10);
  EXPECT_EQ(d.subsystem_vendor_id, 0x1af4);
  EXPECT_EQ(d.subsystem_id, 0x1100);
  EXPECT_EQ(d.header_type, 0);
  EXPECT_EQ(d.config_size, 256u);
  ASSERT_TRUE(d.bars[0].has_value());
  EXPECT_EQ(d.bars[0]->kind, Bar::Kind::kMemory);
  EXPECT_FALSE(d.bars[0]->is_64bit);
  EXPECT_FALSE(d.bars[0]->prefetchable);
  EXPECT_EQ(d.bars[0]->size, kMiB);
  for (size_t i = 1; i < d.bars.size(); ++i) EXPECT_FALSE(d.bars[i].has_value()) << i;
  ASSERT_EQ(d.capabilities.size(), 1u);
  EXPECT_EQ(d.capabilities[0].name, "MSI");
  EXPECT_EQ(d.capabilities[0].offset, 0x40);
  EXPECT_TRUE(d.extended_capabilities.empty());
  // Sizing restored the BAR.
  EXPECT_EQ(*device->ReadConfig(PCI_BASE_ADDRESS_0, 4), d.bars[0]->address);
  EXPECT_NE(d.bars[0]->address, 0u);
}

TEST(PciDeviceSimTest, RegionAccessAndDecode) {
  std::unique_ptr<PciDevice> device = MakeEdu();
  ASSERT_NE(device, nullptr);
  EXPECT_EQ(*Read32(*device, Edu::kRegIdent), 0x010000edu);
  ASSERT_TRUE(Write32(*device, Edu::kRegLiveness, 0x12345678).ok());
  EXPECT_EQ(*Read32(*device, Edu::kRegLiveness), ~0x12345678u);

  EXPECT_EQ(device->ReadRegion(0, kMiB - 2, 4).status().code(), Code::kOutOfRange);
  EXPECT_EQ(device->ReadRegion(1, 0, 4).status().code(), Code::kNotFound);
  EXPECT_EQ(device->ReadRegion(kRomRegionIndex, 0, 4).status().code(), Code::kNotFound);
  EXPECT_EQ(device->ReadRegion(kConfigRegionIndex, 0, 4).status().code(), Code::kInvalidArgument);

  const uint32_t command = *device->ReadConfig(PCI_COMMAND, 2);
  ASSERT_TRUE(device->WriteConfig(PCI_COMMAND, 2, command & ~PCI_COMMAND_MEMORY).ok());
  absl::Status status = Read32(*device, Edu::kRegIdent).status();
  EXPECT_EQ(status.code(), Code::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(), "ReadRegion")) << status;
  ASSERT_TRUE(device->WriteConfig(PCI_COMMAND, 2, command).ok());
  EXPECT_EQ(*Read32(*device, Edu::kRegIdent), 0x010000edu);
}

TEST(PciDeviceSimTest, ConfigValidation) {
  std::unique_ptr<PciDevice> device = MakeEdu();
  ASSERT_NE(device, nullptr);
  EXPECT_EQ(device->ReadConfig(4096, 4).status().code(), Code::kOutOfRange);
  EXPECT_EQ(device->ReadConfig(255, 2).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(device->ReadConfig(0, 3).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(device->DumpConfig(0, 0)->size(), 256u);
}

TEST(PciDeviceSimTest, DeviceDmaGoesThroughTheMappings) {
  std::unique_ptr<PciDevice> device = MakeEdu();
  ASSERT_NE(device, nullptr);
  UniqueFd fd = MakeMemfd(kMiB);
  absl::StatusOr<UniqueFd> view = fd.Duplicate();
  ASSERT_TRUE(view.ok());
  absl::StatusOr<MemoryInfo> memory = device->RegisterMemory(std::move(fd), 0);
  ASSERT_TRUE(memory.ok()) << memory.status();

  const std::string pattern = "device memory access through vfiod's IOMMU mappings!";
  ASSERT_EQ(::pwrite(view->get(), pattern.data(), pattern.size(), 0x2000),
            static_cast<ssize_t>(pattern.size()));

  DmaMapRequest map;
  map.iova = 0x100000;
  map.size = 0x10000;
  map.memory_id = memory->id;
  map.device_read = true;
  map.device_write = true;
  ASSERT_TRUE(device->MapDma(map).ok());
  const uint32_t command = *device->ReadConfig(PCI_COMMAND, 2);
  ASSERT_TRUE(device->WriteConfig(PCI_COMMAND, 2, command | PCI_COMMAND_MASTER).ok());

  const uint32_t count = static_cast<uint32_t>(pattern.size());
  RunDma(*device, 0x102000, kDmaBuffer, count, /*to_ram=*/false);
  RunDma(*device, kDmaBuffer, 0x103000, count, /*to_ram=*/true);
  std::string copy(pattern.size(), '\0');
  ASSERT_EQ(::pread(view->get(), copy.data(), copy.size(), 0x3000),
            static_cast<ssize_t>(copy.size()));
  EXPECT_EQ(copy, pattern);
  EXPECT_EQ(device->Snapshot().counters.dma_faults, 0u);

  // After the unmap the device faults instead of reaching the memory.
  ASSERT_TRUE(device->UnmapDma(map.iova, map.size).ok());
  RunDma(*device, kDmaBuffer, 0x104000, count, /*to_ram=*/true);
  EXPECT_EQ(device->Snapshot().counters.dma_faults, 1u);
  ASSERT_EQ(::pread(view->get(), copy.data(), copy.size(), 0x4000),
            static_cast<ssize_t>(copy.size()));
  EXPECT_EQ(copy, std::string(pattern.size(), '\0'));
}

TEST(PciDeviceSimTest, IommuRangesOfTheSimulatedHost) {
  std::unique_ptr<PciDevice> device = MakeEdu();
  ASSERT_NE(device, nullptr);
  absl::StatusOr<MemoryInfo> memory = device->RegisterMemory(MakeMemfd(kMiB), 0);
  ASSERT_TRUE(memory.ok());
  DmaMapRequest map;
  map.size = 0x1000;
  map.memory_id = memory->id;
  map.device_read = true;
  map.iova = 0xfee00000;
  EXPECT_EQ(device->MapDma(map).code(), Code::kOutOfRange);
  map.iova = uint64_t{1} << 39;
  EXPECT_EQ(device->MapDma(map).code(), Code::kOutOfRange);
  map.iova = (uint64_t{1} << 39) - 0x1000;
  EXPECT_TRUE(device->MapDma(map).ok());
  map.iova = 0xfef00000;
  EXPECT_TRUE(device->MapDma(map).ok());
  EXPECT_EQ(device->Snapshot().mappings.size(), 2u);
}

TEST(PciDeviceSimTest, ResetAndOwnerLoss) {
  std::unique_ptr<PciDevice> plain = MakeEdu("edu");
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(plain->Reset().code(), Code::kFailedPrecondition);

  std::unique_ptr<PciDevice> device = MakeEdu("edu,reset");
  ASSERT_NE(device, nullptr);
  EXPECT_TRUE(device->Reset().ok());

  absl::StatusOr<MemoryInfo> memory = device->RegisterMemory(MakeMemfd(kMiB), 0);
  ASSERT_TRUE(memory.ok());
  DmaMapRequest map;
  map.iova = 0x100000;
  map.size = kMiB;
  map.memory_id = memory->id;
  map.device_write = true;
  ASSERT_TRUE(device->MapDma(map).ok());
  const uint32_t command = *device->ReadConfig(PCI_COMMAND, 2);
  ASSERT_TRUE(device->WriteConfig(PCI_COMMAND, 2, command | PCI_COMMAND_MASTER).ok());

  device->ReleaseOwnerResources();
  EXPECT_EQ(*device->ReadConfig(PCI_COMMAND, 2) & PCI_COMMAND_MASTER, 0u);
  DeviceSnapshot snapshot = device->Snapshot();
  EXPECT_TRUE(snapshot.memory.empty());
  EXPECT_TRUE(snapshot.mappings.empty());
  for (const IrqIndexState& irq : snapshot.irqs) EXPECT_FALSE(irq.enabled);
}

TEST(PciDeviceSimTest, MapUnmapLoopLeaksNoFd) {
  std::unique_ptr<PciDevice> device = MakeEdu();
  ASSERT_NE(device, nullptr);
  const int fds = CountOpenFds();
  for (int i = 0; i < 1000; ++i) {
    absl::StatusOr<MemoryInfo> memory = device->RegisterMemory(MakeMemfd(64 * 1024), 0);
    ASSERT_TRUE(memory.ok()) << memory.status();
    DmaMapRequest map;
    map.iova = 0x100000 + (i % 16) * 0x10000;
    map.size = 64 * 1024;
    map.memory_id = memory->id;
    map.device_read = true;
    ASSERT_TRUE(device->MapDma(map).ok());
    absl::StatusOr<UnmapResult> result = device->UnmapDma(map.iova, map.size);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->bytes, map.size);
    ASSERT_TRUE(device->UnregisterMemory(memory->id).ok());
  }
  EXPECT_EQ(CountOpenFds(), fds);
}

}  // namespace
}  // namespace vfiod
