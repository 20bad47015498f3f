#include "daemon/sim/sim_backend.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "daemon/sim/edu_device.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

using Edu = sim::EduDevice;  // the edu register map, defined once

using ::testing::HasSubstr;

constexpr uint32_t kDmaRun = 0x1;
constexpr uint32_t kDmaToRam = 0x2;
constexpr uint32_t kDmaIrq = 0x4;
constexpr uint32_t kDmaBuffer = 0x40000;
constexpr uint16_t kCommandMemory = 0x2;
constexpr uint16_t kCommandMaster = 0x4;
constexpr uint16_t kCommandIntxDisable = 0x400;
constexpr uint32_t kMsiFlags = 0x42;
constexpr auto kTimeout = std::chrono::seconds(10);

bool WaitFor(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// Reads and clears the counter.
uint64_t Take(const EventFd& fd) {
  absl::StatusOr<uint64_t> value = fd.Read();
  return value.ok() ? *value : 0;
}

bool WaitSignalled(const EventFd& fd) {
  return WaitFor([&] { return Take(fd) > 0; });
}

// Page-aligned anonymous memory, unmapped on destruction.
class Memory {
 public:
  explicit Memory(size_t size) : size_(size) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~Memory() { Release(); }
  void Release() {
    if (data_ != nullptr) munmap(data_, size_);
    data_ = nullptr;
  }
  uint8_t* data() const { return data_; }

 private:
  size_t size_;
  uint8_t* data_;
};

class SimBackendTest : public ::testing::Test {
 protected:
  void SetUp() override { backend_ = Make(SimEduOptions{}); }

  std::unique_ptr<DeviceBackend> Make(SimEduOptions options) {
    options.factorial_delay = std::chrono::microseconds(100);
    options.dma_delay = std::chrono::milliseconds(1);
    absl::StatusOr<std::unique_ptr<DeviceBackend>> backend = CreateSimulatedEdu(options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return nullptr;
    absl::Status started = (*backend)->Start();
    EXPECT_TRUE(started.ok()) << started;
    return *std::move(backend);
  }

  uint32_t Read(uint32_t index, uint64_t offset, size_t size) {
    uint8_t bytes[4] = {};
    absl::Status status = backend_->ReadRegion(index, offset, absl::MakeSpan(bytes, size));
    EXPECT_TRUE(status.ok()) << status;
    uint32_t value = 0;
    for (size_t i = 0; i < size; ++i) value |= uint32_t{bytes[i]} << (8 * i);
    return value;
  }
  void Write(uint32_t index, uint64_t offset, size_t size, uint32_t value) {
    uint8_t bytes[4];
    for (size_t i = 0; i < 4; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
    absl::Status status = backend_->WriteRegion(index, offset, absl::MakeConstSpan(bytes, size));
    EXPECT_TRUE(status.ok()) << status;
  }
  uint32_t Cfg(uint64_t offset, size_t size = 4) { return Read(kConfigRegionIndex, offset, size); }
  void SetCfg(uint64_t offset, size_t size, uint32_t value) {
    Write(kConfigRegionIndex, offset, size, value);
  }
  uint32_t Mmio(uint64_t offset) { return Read(kBar0RegionIndex, offset, 4); }
  void SetMmio(uint64_t offset, uint32_t value) { Write(kBar0RegionIndex, offset, 4, value); }

  void SetCommandBits(uint16_t set, uint16_t clear = 0) {
    SetCfg(0x04, 2, (Cfg(0x04, 2) | set) & ~clear);
  }
  void RunDma(uint32_t src, uint32_t dst, uint32_t count, uint32_t cmd) {
    SetMmio(Edu::kRegDmaSrc, src);
    SetMmio(Edu::kRegDmaDst, dst);
    SetMmio(Edu::kRegDmaCount, count);
    SetMmio(Edu::kRegDmaCmd, cmd | kDmaRun);
    ASSERT_TRUE(WaitFor([&] { return (Mmio(Edu::kRegDmaCmd) & kDmaRun) == 0; }));
  }

  absl::Status SetIrq(IrqIndex index, IrqAction action, IrqSet::Data data, uint32_t start,
                      uint32_t count, std::vector<const EventFd*> fds = {},
                      std::vector<bool> bools = {}) {
    IrqSet set;
    set.index = index;
    set.action = action;
    set.data = data;
    set.start = start;
    set.count = count;
    set.eventfds = std::move(fds);
    set.bools = std::move(bools);
    return backend_->SetIrqs(set);
  }
  absl::Status SetTrigger(IrqIndex index, const EventFd* fd) {
    return SetIrq(index, IrqAction::kTrigger, IrqSet::Data::kEventfd, 0, 1, {fd});
  }
  absl::Status Disable(IrqIndex index) {
    return SetIrq(index, IrqAction::kTrigger, IrqSet::Data::kNone, 0, 0);
  }
  absl::Status Action(IrqIndex index, IrqAction action) {
    return SetIrq(index, action, IrqSet::Data::kNone, 0, 1);
  }

  static EventFd NewEventFd() {
    absl::StatusOr<EventFd> fd = EventFd::Create();
    EXPECT_TRUE(fd.ok());
    return *std::move(fd);
  }

  static DmaMap Map(uint64_t iova, uint64_t size, void* host, bool read = true, bool write = true) {
    DmaMap map;
    map.iova = iova;
    map.size = size;
    map.host_address = host;
    map.device_read = read;
    map.device_write = write;
    return map;
  }

  std::unique_ptr<DeviceBackend> backend_;
};

TEST(SimSpecTest, ParsesSpecs) {
  absl::StatusOr<std::unique_ptr<DeviceBackend>> edu = CreateSimulatedBackend("edu");
  ASSERT_TRUE(edu.ok()) << edu.status();
  EXPECT_FALSE((*edu)->Info().reset_supported);
  EXPECT_EQ((*edu)->Info().raw_flags, 2u);  // VFIO_DEVICE_FLAGS_PCI
  EXPECT_EQ((*edu)->Info().iommu.usable_ranges.back().last, (uint64_t{1} << 39) - 1);

  absl::StatusOr<std::unique_ptr<DeviceBackend>> reset = CreateSimulatedBackend("edu,reset,aw=48");
  ASSERT_TRUE(reset.ok()) << reset.status();
  EXPECT_TRUE((*reset)->Info().reset_supported);
  EXPECT_EQ((*reset)->Info().raw_flags, 3u);  // | VFIO_DEVICE_FLAGS_RESET
  EXPECT_EQ((*reset)->Info().iommu.usable_ranges.back().last, (uint64_t{1} << 48) - 1);

  for (const char* bad : {"", "nvme", "edu,", "edu,bogus", "edu,aw=40", "EDU"}) {
    absl::StatusOr<std::unique_ptr<DeviceBackend>> backend = CreateSimulatedBackend(bad);
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(std::string(CreateSimulatedBackend("nvme").status().message()), HasSubstr("nvme"));
  EXPECT_THAT(std::string(CreateSimulatedBackend("edu,bogus").status().message()),
              HasSubstr("bogus"));
}

TEST_F(SimBackendTest, InfoLooksLikeVfioPci) {
  const BackendInfo& info = backend_->Info();
  EXPECT_EQ(info.kind, "sim");
  EXPECT_EQ(info.name, "sim:edu");
  ASSERT_EQ(info.regions.size(), 9u);
  for (uint32_t i = 0; i < 9; ++i) {
    const RegionInfo& region = info.regions[i];
    EXPECT_EQ(region.index, i);
    if (i == kBar0RegionIndex) {
      EXPECT_EQ(region.size, 1u << 20);
      EXPECT_TRUE(region.readable && region.writable && region.mmappable);
    } else if (i == kConfigRegionIndex) {
      EXPECT_EQ(region.size, 256u);
      EXPECT_TRUE(region.readable && region.writable);
      EXPECT_FALSE(region.mmappable);
    } else {
      EXPECT_EQ(region.size, 0u) << i;
      EXPECT_FALSE(region.readable || region.writable || region.mmappable) << i;
    }
  }
  ASSERT_EQ(info.irqs.size(), 5u);
  const IrqInfo& intx = info.irqs[0];
  EXPECT_EQ(intx.count, 1u);
  EXPECT_TRUE(intx.eventfd && intx.maskable && intx.automasked && !intx.noresize);
  const IrqInfo& msi = info.irqs[1];
  EXPECT_EQ(msi.count, 1u);
  EXPECT_TRUE(msi.eventfd && msi.noresize && !msi.maskable && !msi.automasked);
  EXPECT_EQ(info.irqs[2].count, 0u);
  EXPECT_EQ(info.irqs[3].count, 0u);
  EXPECT_EQ(info.irqs[4].count, 1u);
  EXPECT_TRUE(info.irqs[4].eventfd && info.irqs[4].noresize);
  EXPECT_EQ(info.iommu.page_size_bitmap, 0x40201000u);
  EXPECT_EQ(info.iommu.dma_mappings_available, 65535u);
  ASSERT_EQ(info.iommu.usable_ranges.size(), 2u);
  EXPECT_EQ(info.iommu.usable_ranges[0].start, 0u);
  EXPECT_EQ(info.iommu.usable_ranges[0].last, 0xfedfffffu);
  EXPECT_EQ(info.iommu.usable_ranges[1].start, 0xfef00000u);
  EXPECT_EQ(info.iommu.usable_ranges[1].last, 0x7fffffffffu);
}

TEST_F(SimBackendTest, ConfigSpaceAsVfioPresentsIt) {
  EXPECT_EQ(Cfg(0x00), 0x11e81234u);
  EXPECT_EQ(Cfg(0x04), 0x00100103u);  // status CAP_LIST; command IO | MEMORY | SERR
  EXPECT_EQ(Cfg(0x08), 0x00ff0010u);
  EXPECT_EQ(Cfg(0x0c), 0u);
  EXPECT_EQ(Cfg(0x10), 0xfeb00000u);
  for (uint64_t bar = 0x14; bar <= 0x24; bar += 4) EXPECT_EQ(Cfg(bar), 0u);
  EXPECT_EQ(Cfg(0x2c), 0x11001af4u);
  EXPECT_EQ(Cfg(0x30), 0u);
  EXPECT_EQ(Cfg(0x34), 0x40u);
  EXPECT_EQ(Cfg(0x3c), 0x010bu);      // pin INTA, line 11
  EXPECT_EQ(Cfg(0x40), 0x00800005u);  // MSI, last capability, 64-bit, one vector, disabled
  EXPECT_EQ(Cfg(0x44), 0u);
  // Bulk reads see the same bytes as dword reads.
  std::vector<uint8_t> all(256);
  ASSERT_TRUE(backend_->ReadRegion(kConfigRegionIndex, 0, absl::MakeSpan(all)).ok());
  for (uint64_t offset = 0; offset < 256; offset += 4) {
    uint32_t value;
    std::memcpy(&value, &all[offset], 4);
    EXPECT_EQ(value, Cfg(offset)) << offset;
  }
  // Odd sizes and alignments are chopped like the kernel does.
  std::vector<uint8_t> odd(7);
  ASSERT_TRUE(backend_->ReadRegion(kConfigRegionIndex, 0x3b, absl::MakeSpan(odd)).ok());
  EXPECT_EQ(std::vector<uint8_t>(all.begin() + 0x3b, all.begin() + 0x42), odd);
}

TEST_F(SimBackendTest, BarSizing) {
  const uint32_t bar0 = Cfg(0x10);
  SetCfg(0x10, 4, 0xffffffff);
  EXPECT_EQ(Cfg(0x10), 0xfff00000u);
  SetCfg(0x10, 4, bar0);
  EXPECT_EQ(Cfg(0x10), bar0);
  SetCfg(0x10, 4, 0x12345678);
  EXPECT_EQ(Cfg(0x10), 0x12300000u);
  for (uint64_t bar : {0x14, 0x18, 0x1c, 0x20, 0x24, 0x30}) {
    SetCfg(bar, 4, 0xffffffff);
    EXPECT_EQ(Cfg(bar), 0u) << bar;
  }
}

TEST_F(SimBackendTest, ReadOnlyFieldsIgnoreWrites) {
  const std::vector<uint8_t> before = [&] {
    std::vector<uint8_t> bytes(0x40);
    EXPECT_TRUE(backend_->ReadRegion(kConfigRegionIndex, 0, absl::MakeSpan(bytes)).ok());
    return bytes;
  }();
  SetCfg(0x00, 4, 0);       // ids
  SetCfg(0x06, 2, 0xffff);  // status
  SetCfg(0x08, 4, 0);       // class, revision
  SetCfg(0x2c, 4, 0);       // subsystem
  SetCfg(0x34, 1, 0x80);    // capability pointer
  SetCfg(0x3d, 1, 0);       // interrupt pin
  SetCfg(0x40, 2, 0x0009);  // capability id and next
  std::vector<uint8_t> after(0x40);
  ASSERT_TRUE(backend_->ReadRegion(kConfigRegionIndex, 0, absl::MakeSpan(after)).ok());
  EXPECT_EQ(before, after);
  EXPECT_EQ(Cfg(0x40, 2), 0x0005u);
  // Writable: cache line size, interrupt line, the raw bytes after the capability.
  SetCfg(0x0c, 4, 0xffffffff);
  EXPECT_EQ(Cfg(0x0c), 0xffu);
  SetCfg(0x3c, 1, 0x42);
  EXPECT_EQ(Cfg(0x3c, 1), 0x42u);
  SetCfg(0x80, 4, 0xdeadbeef);
  EXPECT_EQ(Cfg(0x80), 0xdeadbeefu);
}

TEST_F(SimBackendTest, CommandRegister) {
  SetCfg(0x04, 2, 0xffff);
  EXPECT_EQ(Cfg(0x04, 2), 0x0507u);
  SetCfg(0x04, 2, kCommandMemory);
  EXPECT_EQ(Cfg(0x04, 2), kCommandMemory);
  // The high byte alone carries INTx disable.
  SetCfg(0x05, 1, 0x04);
  EXPECT_EQ(Cfg(0x04, 2), kCommandMemory | kCommandIntxDisable);
}

TEST_F(SimBackendTest, MemoryDecodeOffFailsBarAccess) {
  SetCommandBits(0, kCommandMemory);
  uint8_t bytes[4] = {};
  absl::Status read = backend_->ReadRegion(kBar0RegionIndex, 0, absl::MakeSpan(bytes));
  EXPECT_EQ(read.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(read.message()), HasSubstr("memory decode disabled"));
  EXPECT_THAT(std::string(read.message()), HasSubstr("BAR0"));
  absl::Status write = backend_->WriteRegion(kBar0RegionIndex, 4, absl::MakeConstSpan(bytes));
  EXPECT_EQ(write.code(), absl::StatusCode::kFailedPrecondition);
  SetCommandBits(kCommandMemory);
  EXPECT_EQ(Mmio(Edu::kRegIdent), 0x010000edu);
}

TEST_F(SimBackendTest, RegionErrors) {
  uint8_t bytes[8] = {};
  auto read = [&](uint32_t index, uint64_t offset, size_t size) {
    return backend_->ReadRegion(index, offset, absl::MakeSpan(bytes, size)).code();
  };
  auto write = [&](uint32_t index, uint64_t offset, size_t size) {
    return backend_->WriteRegion(index, offset, absl::MakeConstSpan(bytes, size)).code();
  };
  EXPECT_EQ(read(9, 0, 4), absl::StatusCode::kNotFound);
  EXPECT_EQ(read(std::numeric_limits<uint32_t>::max(), 0, 4), absl::StatusCode::kNotFound);
  EXPECT_EQ(read(1, 0, 4), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(read(kRomRegionIndex, 0, 4), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(write(kRomRegionIndex, 0, 4), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(read(kVgaRegionIndex, 0, 1), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(read(kConfigRegionIndex, 255, 2), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(read(kConfigRegionIndex, 256, 1), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(write(kConfigRegionIndex, std::numeric_limits<uint64_t>::max(), 2),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(read(kBar0RegionIndex, (1 << 20) - 2, 4), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(read(kBar0RegionIndex, std::numeric_limits<uint64_t>::max() - 1, 4),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(write(kBar0RegionIndex, std::numeric_limits<uint64_t>::max(), 8),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(read(kBar0RegionIndex, (1 << 20) - 4, 4), absl::StatusCode::kOk);
  EXPECT_EQ(read(kBar0RegionIndex, 1 << 20, 0), absl::StatusCode::kOk);
  EXPECT_EQ(read(kConfigRegionIndex, 256, 0), absl::StatusCode::kOk);
}

TEST_F(SimBackendTest, IdentificationLivenessFactorial) {
  EXPECT_EQ(Mmio(Edu::kRegIdent), 0x010000edu);
  SetMmio(Edu::kRegLiveness, 0x0f0f0f0f);
  EXPECT_EQ(Mmio(Edu::kRegLiveness), 0xf0f0f0f0u);
  SetMmio(Edu::kRegFactorial, 10);
  ASSERT_TRUE(WaitFor([&] { return (Mmio(Edu::kRegStatus) & 0x1) == 0; }));
  EXPECT_EQ(Mmio(Edu::kRegFactorial), 3628800u);
}

TEST_F(SimBackendTest, WrongSizeBarAccesses) {
  EXPECT_EQ(Read(kBar0RegionIndex, 0, 2), 0u);
  EXPECT_EQ(Read(kBar0RegionIndex, 2, 2), 0u);
  EXPECT_EQ(Read(kBar0RegionIndex, 1, 1), 0u);
  SetMmio(Edu::kRegLiveness, 0);
  Write(kBar0RegionIndex, Edu::kRegLiveness, 2, 0xffff);
  Write(kBar0RegionIndex, Edu::kRegLiveness + 3, 1, 0xff);
  EXPECT_EQ(Mmio(Edu::kRegLiveness), 0xffffffffu);
  // An 8-byte access becomes two 4-byte device accesses.
  uint8_t bytes[8];
  ASSERT_TRUE(backend_->ReadRegion(kBar0RegionIndex, 0, absl::MakeSpan(bytes)).ok());
  uint32_t low, high;
  std::memcpy(&low, bytes, 4);
  std::memcpy(&high, bytes + 4, 4);
  EXPECT_EQ(low, 0x010000edu);
  EXPECT_EQ(high, 0xffffffffu);
  // An unaligned 6-byte read at 2 is 2 + 4 bytes: zeros, then liveness.
  uint8_t six[6];
  ASSERT_TRUE(backend_->ReadRegion(kBar0RegionIndex, 2, absl::MakeSpan(six)).ok());
  EXPECT_EQ(six[0] | six[1], 0);
  std::memcpy(&low, six + 2, 4);
  EXPECT_EQ(low, 0xffffffffu);
}

TEST_F(SimBackendTest, DmaRoundTripThroughTheIommu) {
  Memory memory(2 * 4096);
  ASSERT_NE(memory.data(), nullptr);
  for (int i = 0; i < 4096; ++i) memory.data()[i] = static_cast<uint8_t>(i * 7);
  constexpr uint64_t kIova = 0x100000;
  ASSERT_TRUE(backend_->MapDma(Map(kIova, 2 * 4096, memory.data())).ok());
  SetCommandBits(kCommandMaster);
  RunDma(kIova + 16, kDmaBuffer, 4000, 0);
  RunDma(kDmaBuffer, kIova + 4096, 4000, kDmaToRam);
  EXPECT_EQ(std::memcmp(memory.data() + 16, memory.data() + 4096, 4000), 0);
  EXPECT_EQ(backend_->Counters().dma_faults, 0u);
  // A transfer crossing from one mapping into the next is fine.
  Memory other(4096);
  ASSERT_TRUE(backend_->MapDma(Map(kIova + 2 * 4096, 4096, other.data())).ok());
  RunDma(kDmaBuffer, kIova + 4096 + 2048, 4096, kDmaToRam);
  // Buffer bytes [2048, 4000) came from memory [16 + 2048, 16 + 4000).
  EXPECT_EQ(std::memcmp(other.data(), memory.data() + 16 + 2048, 4000 - 2048), 0);
  EXPECT_EQ(backend_->Counters().dma_faults, 0u);
}

TEST_F(SimBackendTest, DmaToUnmappedIovaFaults) {
  Memory memory(4096);
  std::memset(memory.data(), 0x11, 4096);
  constexpr uint64_t kIova = 0x200000;
  ASSERT_TRUE(backend_->MapDma(Map(kIova, 4096, memory.data(), true, false)).ok());
  SetCommandBits(kCommandMaster);
  RunDma(kDmaBuffer, kIova + 0x10000, 64, kDmaToRam);  // not mapped
  EXPECT_EQ(backend_->Counters().dma_faults, 1u);
  RunDma(kDmaBuffer, kIova, 64, kDmaToRam);  // mapped read-only for the device
  EXPECT_EQ(backend_->Counters().dma_faults, 2u);
  RunDma(kDmaBuffer, kIova + 4096 - 32, 64, kDmaToRam);  // runs off the end: nothing copied
  EXPECT_EQ(backend_->Counters().dma_faults, 3u);
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(memory.data()[i], 0x11) << i;
}

TEST_F(SimBackendTest, DmaWithoutBusMasterIsDropped) {
  Memory memory(4096);
  std::memset(memory.data(), 0x22, 4096);
  ASSERT_TRUE(backend_->MapDma(Map(0x300000, 4096, memory.data())).ok());
  ASSERT_EQ(Cfg(0x04, 2) & kCommandMaster, 0u);
  RunDma(kDmaBuffer, 0x300000, 128, kDmaToRam);
  EXPECT_EQ(backend_->Counters().dma_faults, 1u);
  EXPECT_EQ(memory.data()[0], 0x22);
}

TEST_F(SimBackendTest, IntxAutomaskAckUnmask) {
  EventFd trigger = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, &trigger).ok());
  SetMmio(Edu::kRegIrqRaise, 0x1);
  ASSERT_TRUE(WaitSignalled(trigger));
  SetMmio(Edu::kRegIrqRaise, 0x2);  // line already asserted and masked
  EXPECT_EQ(Take(trigger), 0u);
  // Unmasking while still asserted fires again and stays masked.
  ASSERT_TRUE(Action(IrqIndex::kIntx, IrqAction::kUnmask).ok());
  EXPECT_EQ(Take(trigger), 1u);
  SetMmio(Edu::kRegIrqAck, 0x3);
  ASSERT_TRUE(Action(IrqIndex::kIntx, IrqAction::kUnmask).ok());
  EXPECT_EQ(Take(trigger), 0u);
  SetMmio(Edu::kRegIrqRaise, 0x4);
  EXPECT_EQ(Take(trigger), 1u);
  EXPECT_EQ(backend_->Counters().interrupts, 2u);
  // The factorial interrupt goes the same way.
  SetMmio(Edu::kRegIrqAck, 0x4);
  ASSERT_TRUE(Action(IrqIndex::kIntx, IrqAction::kUnmask).ok());
  SetMmio(Edu::kRegStatus, 0x80);
  SetMmio(Edu::kRegFactorial, 4);
  ASSERT_TRUE(WaitSignalled(trigger));
  EXPECT_EQ(Mmio(Edu::kRegIrqStatus), 0x1u);
  EXPECT_EQ(Mmio(Edu::kRegFactorial), 24u);
  EXPECT_TRUE(Disable(IrqIndex::kIntx).ok());
}

TEST_F(SimBackendTest, IntxEnabledWhileAssertedFiresAtOnce) {
  SetMmio(Edu::kRegIrqRaise, 0x1);
  EXPECT_EQ(Cfg(0x06, 2) & 0x08, 0x08u);  // PCI_STATUS_INTERRUPT
  EventFd trigger = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, &trigger).ok());
  EXPECT_EQ(Take(trigger), 1u);
}

TEST_F(SimBackendTest, IntxResampleEventfdUnmasks) {
  EventFd trigger = NewEventFd();
  EventFd resample = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, &trigger).ok());
  ASSERT_TRUE(
      SetIrq(IrqIndex::kIntx, IrqAction::kUnmask, IrqSet::Data::kEventfd, 0, 1, {&resample}).ok());
  // A second one is refused (EBUSY) until the first is removed.
  EventFd another = NewEventFd();
  EXPECT_EQ(
      SetIrq(IrqIndex::kIntx, IrqAction::kUnmask, IrqSet::Data::kEventfd, 0, 1, {&another}).code(),
      absl::StatusCode::kFailedPrecondition);

  SetMmio(Edu::kRegIrqRaise, 0x1);
  ASSERT_TRUE(WaitSignalled(trigger));
  // Resampling while still asserted delivers again.
  ASSERT_TRUE(resample.Signal().ok());
  ASSERT_TRUE(WaitSignalled(trigger));
  SetMmio(Edu::kRegIrqAck, 0x1);
  ASSERT_TRUE(resample.Signal().ok());
  // Once the worker has consumed the resample signal, INTx is unmasked: the next raise fires.
  ASSERT_TRUE(WaitFor([&] {
    SetMmio(Edu::kRegIrqRaise, 0x1);
    const bool fired = Take(trigger) > 0;
    SetMmio(Edu::kRegIrqAck, 0x1);
    return fired;
  }));
  ASSERT_TRUE(
      SetIrq(IrqIndex::kIntx, IrqAction::kUnmask, IrqSet::Data::kEventfd, 0, 1, {nullptr}).ok());
  EXPECT_TRUE(
      SetIrq(IrqIndex::kIntx, IrqAction::kUnmask, IrqSet::Data::kEventfd, 0, 1, {&another}).ok());
}

TEST_F(SimBackendTest, ExplicitMaskHoldsAndUnmaskDelivers) {
  EventFd trigger = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, &trigger).ok());
  ASSERT_TRUE(Action(IrqIndex::kIntx, IrqAction::kMask).ok());
  SetMmio(Edu::kRegIrqRaise, 0x1);
  EXPECT_EQ(Take(trigger), 0u);
  ASSERT_TRUE(
      SetIrq(IrqIndex::kIntx, IrqAction::kUnmask, IrqSet::Data::kBool, 0, 1, {}, {false}).ok());
  EXPECT_EQ(Take(trigger), 0u);
  ASSERT_TRUE(
      SetIrq(IrqIndex::kIntx, IrqAction::kUnmask, IrqSet::Data::kBool, 0, 1, {}, {true}).ok());
  EXPECT_EQ(Take(trigger), 1u);
}

TEST_F(SimBackendTest, CommandIntxDisableMasks) {
  EventFd trigger = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, &trigger).ok());
  SetCommandBits(kCommandIntxDisable);
  SetMmio(Edu::kRegIrqRaise, 0x1);
  EXPECT_EQ(Take(trigger), 0u);
  ASSERT_TRUE(Action(IrqIndex::kIntx, IrqAction::kUnmask).ok());  // no effect while disabled
  EXPECT_EQ(Take(trigger), 0u);
  SetCommandBits(0, kCommandIntxDisable);
  EXPECT_EQ(Take(trigger), 1u);
}

TEST_F(SimBackendTest, MsiNeedsBusMaster) {
  EventFd trigger = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kMsi, &trigger).ok());
  SetMmio(Edu::kRegIrqRaise, 0x1);
  EXPECT_EQ(Take(trigger), 0u);
  EXPECT_EQ(backend_->Counters().interrupts, 0u);
  SetCommandBits(kCommandMaster);
  SetMmio(Edu::kRegIrqRaise, 0x1);
  EXPECT_EQ(Take(trigger), 1u);
  EXPECT_EQ(backend_->Counters().interrupts, 1u);
  // A DMA completion interrupt arrives by MSI too, and INTx stays quiet.
  Memory memory(4096);
  ASSERT_TRUE(backend_->MapDma(Map(0x400000, 4096, memory.data())).ok());
  RunDma(0x400000, kDmaBuffer, 8, kDmaIrq);
  ASSERT_TRUE(WaitSignalled(trigger));
  EXPECT_EQ(Mmio(Edu::kRegIrqStatus), 0x101u);
  EXPECT_EQ(Cfg(0x06, 2) & 0x08, 0u);
  // Loopback.
  ASSERT_TRUE(SetIrq(IrqIndex::kMsi, IrqAction::kTrigger, IrqSet::Data::kNone, 0, 1).ok());
  EXPECT_EQ(Take(trigger), 1u);
  ASSERT_TRUE(Disable(IrqIndex::kMsi).ok());
  SetMmio(Edu::kRegIrqRaise, 0x1);
  EXPECT_EQ(Take(trigger), 0u);
}

TEST_F(SimBackendTest, MsiMaskIsUnimplemented) {
  EventFd trigger = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kMsi, &trigger).ok());
  EXPECT_EQ(Action(IrqIndex::kMsi, IrqAction::kMask).code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Action(IrqIndex::kMsi, IrqAction::kUnmask).code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Action(IrqIndex::kReq, IrqAction::kMask).code(), absl::StatusCode::kUnimplemented);
}

TEST_F(SimBackendTest, MsiEnableBitIsVirtual) {
  SetCfg(kMsiFlags, 2, 0x0081);  // not how MSI gets enabled
  EXPECT_EQ(Cfg(kMsiFlags, 2), 0x0080u);
  // The whole low byte is virtual and writable, the 64-bit flag included (as in the kernel).
  SetCfg(kMsiFlags, 1, 0x00);
  EXPECT_EQ(Cfg(kMsiFlags, 2), 0x0000u);
  SetCfg(kMsiFlags, 1, 0x80);
  EventFd trigger = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kMsi, &trigger).ok());
  EXPECT_EQ(Cfg(kMsiFlags, 2), 0x0080u);  // vfio leaves the virtual bit to the user
  SetCfg(kMsiFlags, 2, 0x0081);
  EXPECT_EQ(Cfg(kMsiFlags, 2), 0x0081u);
  SetCommandBits(kCommandMaster);
  SetMmio(Edu::kRegIrqRaise, 0x1);
  EXPECT_EQ(Take(trigger), 1u);
  ASSERT_TRUE(Disable(IrqIndex::kMsi).ok());
  SetCfg(kMsiFlags, 2, 0x0081);
  EXPECT_EQ(Cfg(kMsiFlags, 2), 0x0080u);
}

TEST_F(SimBackendTest, IntxAndMsiAreExclusive) {
  EventFd a = NewEventFd();
  EventFd b = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, &a).ok());
  EXPECT_EQ(SetTrigger(IrqIndex::kMsi, &b).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(Disable(IrqIndex::kIntx).ok());
  ASSERT_TRUE(SetTrigger(IrqIndex::kMsi, &b).ok());
  EXPECT_EQ(SetTrigger(IrqIndex::kIntx, &a).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Action(IrqIndex::kIntx, IrqAction::kMask).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SimBackendTest, SetIrqsValidation) {
  EventFd fd = NewEventFd();
  auto code = [](absl::Status status) { return status.code(); };
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(SetTrigger(IrqIndex::kMsix, &fd)), kInvalid);
  EXPECT_EQ(code(SetTrigger(IrqIndex::kErr, &fd)), kInvalid);
  EXPECT_EQ(code(SetTrigger(static_cast<IrqIndex>(5), &fd)), kInvalid);
  EXPECT_EQ(code(SetTrigger(static_cast<IrqIndex>(0xffffffff), &fd)), kInvalid);
  EXPECT_EQ(code(SetIrq(IrqIndex::kIntx, IrqAction::kTrigger, IrqSet::Data::kNone, 1,
                        std::numeric_limits<uint32_t>::max())),
            kInvalid);
  EXPECT_EQ(code(SetIrq(IrqIndex::kIntx, IrqAction::kTrigger, IrqSet::Data::kNone,
                        std::numeric_limits<uint32_t>::max(), 1)),
            kInvalid);
  EXPECT_EQ(code(SetIrq(IrqIndex::kIntx, IrqAction::kTrigger, IrqSet::Data::kEventfd, 1, 1, {&fd})),
            kInvalid);
  EXPECT_EQ(
      code(SetIrq(IrqIndex::kMsi, IrqAction::kTrigger, IrqSet::Data::kEventfd, 0, 2, {&fd, &fd})),
      kInvalid);
  EXPECT_EQ(code(SetIrq(IrqIndex::kMsi, IrqAction::kTrigger, IrqSet::Data::kEventfd, 0, 0)),
            kInvalid);
  EXPECT_EQ(code(SetIrq(IrqIndex::kIntx, IrqAction::kTrigger, IrqSet::Data::kEventfd, 0, 1)),
            kInvalid);  // fd count != count
  EXPECT_EQ(code(SetIrq(IrqIndex::kIntx, IrqAction::kTrigger, IrqSet::Data::kBool, 0, 1, {},
                        {true, true})),
            kInvalid);
  EXPECT_EQ(code(SetIrq(IrqIndex::kIntx, IrqAction::kTrigger, static_cast<IrqSet::Data>(7), 0, 1)),
            kInvalid);
  EXPECT_EQ(code(SetIrq(IrqIndex::kIntx, static_cast<IrqAction>(9), IrqSet::Data::kNone, 0, 1)),
            kInvalid);
  // Disabling or acting on an index that is not enabled.
  EXPECT_EQ(code(Disable(IrqIndex::kIntx)), kInvalid);
  EXPECT_EQ(code(Disable(IrqIndex::kMsi)), kInvalid);
  EXPECT_EQ(code(Action(IrqIndex::kIntx, IrqAction::kUnmask)), kInvalid);
  EXPECT_EQ(code(SetIrq(IrqIndex::kIntx, IrqAction::kTrigger, IrqSet::Data::kNone, 0, 1)),
            kInvalid);
  // Masking INTx with an eventfd is not implemented by the kernel.
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, &fd).ok());
  EXPECT_EQ(code(SetIrq(IrqIndex::kIntx, IrqAction::kMask, IrqSet::Data::kEventfd, 0, 1, {&fd})),
            absl::StatusCode::kUnimplemented);
  // Loopback trigger on INTx.
  ASSERT_TRUE(SetIrq(IrqIndex::kIntx, IrqAction::kTrigger, IrqSet::Data::kNone, 0, 1).ok());
  EXPECT_EQ(Take(fd), 1u);
  ASSERT_TRUE(
      SetIrq(IrqIndex::kIntx, IrqAction::kTrigger, IrqSet::Data::kBool, 0, 1, {}, {true}).ok());
  EXPECT_EQ(Take(fd), 1u);
  // INTx enabled without an eventfd, then given one.
  ASSERT_TRUE(Disable(IrqIndex::kIntx).ok());
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, nullptr).ok());
  SetMmio(Edu::kRegIrqRaise, 1);
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, &fd).ok());
  EXPECT_EQ(Take(fd), 1u);
  // REQ: register, loop back, tear down.
  EventFd req = NewEventFd();
  EXPECT_EQ(code(SetIrq(IrqIndex::kReq, IrqAction::kTrigger, IrqSet::Data::kNone, 0, 1)), kInvalid);
  ASSERT_TRUE(SetTrigger(IrqIndex::kReq, &req).ok());
  ASSERT_TRUE(SetIrq(IrqIndex::kReq, IrqAction::kTrigger, IrqSet::Data::kNone, 0, 1).ok());
  EXPECT_EQ(Take(req), 1u);
  ASSERT_TRUE(Disable(IrqIndex::kReq).ok());
}

TEST_F(SimBackendTest, EventfdsAreDuplicated) {
  auto trigger = std::make_unique<EventFd>(NewEventFd());
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, trigger.get()).ok());
  absl::StatusOr<EventFd> observer = trigger->Duplicate();
  ASSERT_TRUE(observer.ok());
  trigger.reset();
  SetMmio(Edu::kRegIrqRaise, 0x1);
  EXPECT_EQ(Take(*observer), 1u);
}

TEST_F(SimBackendTest, DmaMapValidation) {
  Memory memory(3 * 4096);
  uint8_t* host = memory.data();
  auto code = [&](DmaMap map) { return backend_->MapDma(map).code(); };
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(code(Map(0x10000, 0, host)), kInvalid);
  EXPECT_EQ(code(Map(0x10001, 4096, host)), kInvalid);
  EXPECT_EQ(code(Map(0x10000, 4095, host)), kInvalid);
  EXPECT_EQ(code(Map(0x10000, 4096, host + 1)), kInvalid);
  EXPECT_EQ(code(Map(0x10000, 4096, host, false, false)), kInvalid);
  EXPECT_EQ(code(Map(kMax - 4095, 8192, host)), kInvalid);
  EXPECT_EQ(code(Map(0, kMax - 4095, host)), kInvalid);
  EXPECT_EQ(code(Map(0x10000, 4096, nullptr)), kInvalid);
  EXPECT_EQ(code(Map(0xfee00000, 4096, host)), kInvalid);         // MSI window
  EXPECT_EQ(code(Map(0xfedff000, 2 * 4096, host)), kInvalid);     // runs into it
  EXPECT_EQ(code(Map(0xfeeff000, 2 * 4096, host)), kInvalid);     // runs out of it
  EXPECT_EQ(code(Map(uint64_t{1} << 39, 4096, host)), kInvalid);  // beyond the address width
  EXPECT_EQ(code(Map(0xfef00000, 4096, host)), absl::StatusCode::kOk);
  EXPECT_EQ(code(Map((uint64_t{1} << 39) - 4096, 4096, host)), absl::StatusCode::kOk);

  ASSERT_EQ(code(Map(0x20000, 2 * 4096, host)), absl::StatusCode::kOk);
  constexpr auto kExists = absl::StatusCode::kAlreadyExists;
  EXPECT_EQ(code(Map(0x20000, 2 * 4096, host)), kExists);            // duplicate
  EXPECT_EQ(code(Map(0x1f000, 4 * 4096, host)), kExists);            // containing
  EXPECT_EQ(code(Map(0x21000, 4096, host)), kExists);                // contained
  EXPECT_EQ(code(Map(0x1f000, 2 * 4096, host)), kExists);            // overlapping the start
  EXPECT_EQ(code(Map(0x21000, 2 * 4096, host)), kExists);            // overlapping the end
  EXPECT_EQ(code(Map(0x1f000, 4096, host)), absl::StatusCode::kOk);  // adjacent
  EXPECT_EQ(code(Map(0x22000, 4096, host)), absl::StatusCode::kOk);

  // Unmap: no splitting, all mappings inside the range go, nothing mapped is fine.
  EXPECT_EQ(backend_->UnmapDma(0x21000, 4096).code(), kInvalid);
  EXPECT_EQ(backend_->UnmapDma(0x20000, 4096).code(), kInvalid);
  EXPECT_EQ(backend_->UnmapDma(0x1f000, 2 * 4096).code(), kInvalid);
  EXPECT_EQ(backend_->UnmapDma(0x20000, 0).code(), kInvalid);
  EXPECT_EQ(backend_->UnmapDma(0x20001, 4096).code(), kInvalid);
  EXPECT_EQ(backend_->UnmapDma(0x20000, 4097).code(), kInvalid);
  EXPECT_EQ(backend_->UnmapDma(kMax - 4095, 8192).code(), kInvalid);
  EXPECT_TRUE(backend_->UnmapDma(0x80000000, 4096).ok());
  EXPECT_TRUE(backend_->UnmapDma(0x1f000, 4 * 4096).ok());
  EXPECT_EQ(code(Map(0x20000, 4096, host)), absl::StatusCode::kOk);
  EXPECT_TRUE(backend_->UnmapDma(0, uint64_t{1} << 40).ok());
  EXPECT_EQ(code(Map(0xfef00000, 4096, host)), absl::StatusCode::kOk);
}

TEST_F(SimBackendTest, DmaMappingLimit) {
  // 65535 pinned pages: more than most RLIMIT_MEMLOCKs (the charge has its own tests).
  SimEduOptions options;
  options.memlock_limit = std::numeric_limits<uint64_t>::max();
  backend_ = Make(options);
  Memory memory(4096);
  for (uint64_t i = 0; i < 65535; ++i) {
    ASSERT_TRUE(backend_->MapDma(Map(i * 4096, 4096, memory.data())).ok()) << i;
  }
  EXPECT_EQ(backend_->MapDma(Map(65535 * 4096, 4096, memory.data())).code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(backend_->UnmapDma(0, 4096).ok());
  EXPECT_TRUE(backend_->MapDma(Map(65535 * 4096, 4096, memory.data())).ok());
  ASSERT_TRUE(backend_->UnmapDma(0, uint64_t{1} << 32).ok());
  EXPECT_TRUE(backend_->MapDma(Map(0, 4096, memory.data())).ok());
}

// type1 charges every pinned page of every mapping against RLIMIT_MEMLOCK at map time (ENOMEM,
// RESOURCE_EXHAUSTED, as the kernel backend reports it) and uncharges at unmap.
TEST_F(SimBackendTest, PinnedPagesAreChargedAgainstTheMemlockLimit) {
  constexpr uint64_t kMiB = 1 << 20;
  SimEduOptions options;
  options.memlock_limit = 8 * kMiB;
  backend_ = Make(options);
  Memory memory(16 * kMiB);
  ASSERT_NE(memory.data(), nullptr);
  absl::Status status = backend_->MapDma(Map(0x1000000, 16 * kMiB, memory.data()));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("RLIMIT_MEMLOCK"));
  // Nothing was mapped: a device DMA there faults, and the whole limit is still free.
  SetCommandBits(kCommandMaster);
  RunDma(kDmaBuffer, 0x1000000, 64, kDmaToRam);
  EXPECT_EQ(backend_->Counters().dma_faults, 1u);
  ASSERT_TRUE(backend_->MapDma(Map(0x1000000, 4 * kMiB, memory.data())).ok());
  // The same memory mapped twice is charged twice, as type1 does.
  ASSERT_TRUE(backend_->MapDma(Map(0x2000000, 4 * kMiB, memory.data())).ok());
  EXPECT_EQ(backend_->MapDma(Map(0x3000000, 4096, memory.data())).code(),
            absl::StatusCode::kResourceExhausted);
  // Unmapping uncharges.
  ASSERT_TRUE(backend_->UnmapDma(0x2000000, 4 * kMiB).ok());
  EXPECT_TRUE(backend_->MapDma(Map(0x3000000, 4 * kMiB, memory.data())).ok());
}

// Without an injected limit the process's own RLIMIT_MEMLOCK counts, read at map time: in a
// child (the limit is per process), 8 MiB set after the backend exists, as the daemon's jail does.
TEST_F(SimBackendTest, TheProcessMemlockLimitIsReadAtMapTime) {
  constexpr uint64_t kMiB = 1 << 20;
  Memory memory(16 * kMiB);
  ASSERT_NE(memory.data(), nullptr);
  absl::StatusOr<std::unique_ptr<DeviceBackend>> backend = CreateSimulatedEdu(SimEduOptions{});
  ASSERT_TRUE(backend.ok()) << backend.status();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    struct rlimit limit = {8 * kMiB, 8 * kMiB};
    if (::setrlimit(RLIMIT_MEMLOCK, &limit) != 0) ::_exit(10);
    if ((*backend)->MapDma(Map(0x1000000, 16 * kMiB, memory.data())).code() !=
        absl::StatusCode::kResourceExhausted) {
      ::_exit(11);
    }
    if (!(*backend)->MapDma(Map(0x1000000, 8 * kMiB, memory.data())).ok()) ::_exit(12);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: setrlimit, 11: 16 MiB not refused, 12: 8 MiB refused";
}

TEST_F(SimBackendTest, UnmapDuringDmaNeverTouchesUnmappedMemory) {
  backend_ = Make(SimEduOptions{});
  SetCommandBits(kCommandMaster);
  constexpr uint64_t kIova = 0x500000;
  for (int round = 0; round < 200; ++round) {
    auto memory = std::make_unique<Memory>(4096);
    ASSERT_TRUE(backend_->MapDma(Map(kIova, 4096, memory->data())).ok());
    SetMmio(Edu::kRegDmaSrc, kDmaBuffer);
    SetMmio(Edu::kRegDmaDst, kIova);
    SetMmio(Edu::kRegDmaCount, 4096);
    SetMmio(Edu::kRegDmaCmd, kDmaRun | kDmaToRam);
    if (round % 2 == 0) std::this_thread::sleep_for(std::chrono::microseconds(round * 10));
    ASSERT_TRUE(backend_->UnmapDma(kIova, 4096).ok());
    memory.reset();  // munmap: a device write now would crash the test
    ASSERT_TRUE(WaitFor([&] { return (Mmio(Edu::kRegDmaCmd) & kDmaRun) == 0; }));
  }
}

TEST_F(SimBackendTest, ConcurrentCallersAreSafe) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  SetCommandBits(kCommandMaster);
  threads.emplace_back([&] {
    Memory memory(4096);
    while (!stop) {
      if (backend_->MapDma(Map(0x600000, 4096, memory.data())).ok()) {
        (void)backend_->UnmapDma(0x600000, 4096);
      }
    }
  });
  threads.emplace_back([&] {
    EventFd fd = NewEventFd();
    while (!stop) {
      (void)SetTrigger(IrqIndex::kIntx, &fd);
      (void)Action(IrqIndex::kIntx, IrqAction::kUnmask);
      (void)Disable(IrqIndex::kIntx);
    }
  });
  for (int i = 0; i < 300; ++i) {
    SetMmio(Edu::kRegIrqRaise, 1);
    SetMmio(Edu::kRegDmaSrc, kDmaBuffer);
    SetMmio(Edu::kRegDmaDst, 0x600000);
    SetMmio(Edu::kRegDmaCount, 64);
    SetMmio(Edu::kRegDmaCmd, kDmaRun | kDmaToRam);
    SetMmio(Edu::kRegIrqAck, 1);
    (void)backend_->Counters();
  }
  stop = true;
  for (std::thread& thread : threads) thread.join();
}

TEST_F(SimBackendTest, ResetNeedsSupport) {
  EXPECT_EQ(backend_->Reset().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SimBackendTest, ResetRestoresRegistersAndKeepsConfig) {
  SimEduOptions options;
  options.reset_supported = true;
  backend_ = Make(options);
  EventFd trigger = NewEventFd();
  ASSERT_TRUE(SetTrigger(IrqIndex::kIntx, &trigger).ok());
  SetCommandBits(kCommandMaster);
  SetMmio(Edu::kRegLiveness, 0);
  SetMmio(Edu::kRegIrqRaise, 0x10);
  ASSERT_EQ(Take(trigger), 1u);
  const uint32_t command = Cfg(0x04, 2);
  ASSERT_TRUE(backend_->Reset().ok());
  EXPECT_EQ(Mmio(Edu::kRegLiveness), 0u);
  EXPECT_EQ(Mmio(Edu::kRegIrqStatus), 0u);
  EXPECT_EQ(Cfg(0x06, 2) & 0x08, 0u);
  EXPECT_EQ(Cfg(0x04, 2), command);
  // INTx stays set up: after the unmask the next interrupt arrives.
  ASSERT_TRUE(Action(IrqIndex::kIntx, IrqAction::kUnmask).ok());
  SetMmio(Edu::kRegIrqRaise, 0x1);
  EXPECT_EQ(Take(trigger), 1u);
}

}  // namespace
}  // namespace vfiod
