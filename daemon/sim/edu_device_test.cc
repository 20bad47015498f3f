#include "daemon/sim/edu_device.h"

#include <linux/pci_regs.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace vfiod {
namespace sim {
namespace {

using Clock = EduDevice::Clock;

// Guest memory at bus addresses [0, ram.size()), everything else faults.
class FakeBus : public EduBus {
 public:
  bool DmaRead(uint64_t address, absl::Span<uint8_t> out) override {
    ++reads;
    if (address > ram.size() || out.size() > ram.size() - address) return false;
    std::memcpy(out.data(), ram.data() + address, out.size());
    return true;
  }
  bool DmaWrite(uint64_t address, absl::Span<const uint8_t> data) override {
    ++writes;
    if (address > ram.size() || data.size() > ram.size() - address) return false;
    std::memcpy(ram.data() + address, data.data(), data.size());
    return true;
  }
  void SendMsi() override { ++msis; }
  void SetIntx(bool asserted) override {
    intx = asserted;
    ++intx_changes;
  }

  std::vector<uint8_t> ram = std::vector<uint8_t>(0x10000);
  int reads = 0;
  int writes = 0;
  int msis = 0;
  bool intx = false;
  int intx_changes = 0;
};

class EduDeviceTest : public ::testing::Test {
 protected:
  EduDeviceTest() : edu_(&bus_, EduOptions{}) {}

  void EnableBusMaster() {
    edu_.ConfigWrite(PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  }
  void Write(uint64_t offset, uint32_t value) { edu_.MmioWrite(offset, 4, value, now_); }
  uint32_t Read(uint64_t offset) { return edu_.MmioRead(offset, 4); }
  void RunAll() { edu_.RunDue(now_ + std::chrono::hours(1)); }
  void StartDma(uint32_t src, uint32_t dst, uint32_t count, uint32_t cmd) {
    Write(EduDevice::kRegDmaSrc, src);
    Write(EduDevice::kRegDmaDst, dst);
    Write(EduDevice::kRegDmaCount, count);
    Write(EduDevice::kRegDmaCmd, cmd);
  }

  FakeBus bus_;
  EduDevice edu_;
  Clock::time_point now_ = Clock::now();
};

TEST_F(EduDeviceTest, Identification) { EXPECT_EQ(Read(0x00), 0x010000edu); }

TEST_F(EduDeviceTest, LivenessIsBitwiseNot) {
  Write(EduDevice::kRegLiveness, 0x12345678);
  EXPECT_EQ(Read(EduDevice::kRegLiveness), 0xedcba987u);
}

TEST_F(EduDeviceTest, AccessesOtherThanFourBytesReadZeroAndAreDropped) {
  // QEMU's memory core rejects them before edu.c (valid.min_access_size = 4).
  EXPECT_EQ(edu_.MmioRead(0x00, 2), 0u);
  EXPECT_EQ(edu_.MmioRead(0x00, 1), 0u);
  EXPECT_EQ(edu_.MmioRead(0x02, 2), 0u);
  EXPECT_EQ(edu_.MmioRead(0x80, 2), 0u);
  Write(EduDevice::kRegLiveness, 0x1);
  edu_.MmioWrite(EduDevice::kRegLiveness, 2, 0xffff, now_);
  edu_.MmioWrite(EduDevice::kRegLiveness, 1, 0xff, now_);
  EXPECT_EQ(Read(EduDevice::kRegLiveness), 0xfffffffeu);
  edu_.MmioWrite(EduDevice::kRegIrqRaise, 2, 0x1, now_);
  EXPECT_EQ(Read(EduDevice::kRegIrqStatus), 0u);
}

TEST_F(EduDeviceTest, UnimplementedRegistersReadAllOnes) {
  EXPECT_EQ(Read(0x0c), 0xffffffffu);
  EXPECT_EQ(Read(0x84), 0xffffffffu);
  EXPECT_EQ(Read(0x100), 0xffffffffu);
  EXPECT_EQ(Read(EduDevice::kBar0Size - 4), 0xffffffffu);
}

TEST_F(EduDeviceTest, DmaRegistersAreSetThroughTheirLowHalfOnly) {
  Write(EduDevice::kRegDmaSrc, 0x11223344);
  Write(EduDevice::kRegDmaSrc + 4, 0x55667788);
  EXPECT_EQ(Read(EduDevice::kRegDmaSrc), 0x11223344u);
  EXPECT_EQ(Read(EduDevice::kRegDmaSrc + 4), 0xffffffffu);
}

TEST_F(EduDeviceTest, FactorialIsAsynchronous) {
  Write(EduDevice::kRegFactorial, 5);
  EXPECT_EQ(Read(EduDevice::kRegStatus) & EduDevice::kStatusComputing,
            EduDevice::kStatusComputing);
  Write(EduDevice::kRegFactorial, 7);  // ignored while computing
  ASSERT_TRUE(edu_.NextDeadline().has_value());
  edu_.RunDue(*edu_.NextDeadline() - std::chrono::nanoseconds(1));
  EXPECT_EQ(Read(EduDevice::kRegStatus) & EduDevice::kStatusComputing,
            EduDevice::kStatusComputing);
  RunAll();
  EXPECT_EQ(Read(EduDevice::kRegStatus), 0u);
  EXPECT_EQ(Read(EduDevice::kRegFactorial), 120u);
  EXPECT_FALSE(edu_.NextDeadline().has_value());
}

TEST_F(EduDeviceTest, FactorialWrapsLikeUint32) {
  uint32_t expected = 1;
  for (uint32_t n = 0; n < 64; ++n) {
    if (n > 0) expected *= n;
    EXPECT_EQ(EduFactorial(n), expected) << n;
  }
  EXPECT_EQ(EduFactorial(0xffffffff), 0u);
}

TEST_F(EduDeviceTest, FactorialInterruptOnIntx) {
  Write(EduDevice::kRegStatus, EduDevice::kStatusIrqFact | EduDevice::kStatusComputing);
  EXPECT_EQ(Read(EduDevice::kRegStatus), EduDevice::kStatusIrqFact);
  Write(EduDevice::kRegFactorial, 3);
  RunAll();
  EXPECT_EQ(Read(EduDevice::kRegIrqStatus), EduDevice::kFactIrq);
  EXPECT_TRUE(bus_.intx);
  EXPECT_EQ(edu_.ConfigRead(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, PCI_STATUS_INTERRUPT);
  Write(EduDevice::kRegIrqAck, EduDevice::kFactIrq);
  EXPECT_FALSE(bus_.intx);
  EXPECT_EQ(edu_.ConfigRead(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0u);
}

TEST_F(EduDeviceTest, RaiseAndAcknowledge) {
  Write(EduDevice::kRegIrqRaise, 0x5);
  EXPECT_EQ(Read(EduDevice::kRegIrqStatus), 0x5u);
  EXPECT_TRUE(bus_.intx);
  Write(EduDevice::kRegIrqAck, 0x1);
  EXPECT_TRUE(bus_.intx);
  Write(EduDevice::kRegIrqAck, 0x4);
  EXPECT_FALSE(bus_.intx);
  EXPECT_EQ(bus_.intx_changes, 2);
}

TEST_F(EduDeviceTest, MsiNeedsBusMaster) {
  edu_.ConfigWrite(EduDevice::kMsiCapOffset + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_ENABLE);
  ASSERT_TRUE(edu_.msi_enabled());
  Write(EduDevice::kRegIrqRaise, 0x1);
  EXPECT_EQ(bus_.msis, 0);
  EXPECT_EQ(edu_.stats().msi_without_bus_master, 1u);
  EXPECT_FALSE(bus_.intx);
  EnableBusMaster();
  Write(EduDevice::kRegIrqRaise, 0x0);  // status still non-zero: sends again
  EXPECT_EQ(bus_.msis, 1);
}

TEST_F(EduDeviceTest, EnablingMsiDeassertsIntx) {
  Write(EduDevice::kRegIrqRaise, 0x1);
  ASSERT_TRUE(bus_.intx);
  edu_.ConfigWrite(EduDevice::kMsiCapOffset + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_ENABLE);
  EXPECT_FALSE(bus_.intx);
  EXPECT_EQ(Read(EduDevice::kRegIrqStatus), 0x1u);
}

TEST_F(EduDeviceTest, DmaRoundTrip) {
  EnableBusMaster();
  for (int i = 0; i < 256; ++i) bus_.ram[0x1000 + i] = static_cast<uint8_t>(i);
  // The 28-bit DMA mask truncates 0x10001000 to 0x1000.
  StartDma(0x10001000, EduDevice::kDmaBufferAddress, 256, EduDevice::kDmaCmdRun);
  EXPECT_EQ(Read(EduDevice::kRegDmaCmd), EduDevice::kDmaCmdRun);
  Write(EduDevice::kRegDmaCount, 1);  // ignored while running
  EXPECT_EQ(Read(EduDevice::kRegDmaCount), 256u);
  RunAll();
  EXPECT_EQ(Read(EduDevice::kRegDmaCmd), 0u);
  StartDma(EduDevice::kDmaBufferAddress, 0x3000, 256,
           EduDevice::kDmaCmdRun | EduDevice::kDmaCmdToRam | EduDevice::kDmaCmdIrq | 0xf0);
  RunAll();
  EXPECT_EQ(Read(EduDevice::kRegDmaCmd),
            EduDevice::kDmaCmdToRam | EduDevice::kDmaCmdIrq | 0xf0);
  EXPECT_EQ(std::memcmp(&bus_.ram[0x1000], &bus_.ram[0x3000], 256), 0);
  EXPECT_EQ(Read(EduDevice::kRegIrqStatus), EduDevice::kDmaIrq);
}

TEST_F(EduDeviceTest, FullBufferTransferWorks) {
  EnableBusMaster();
  std::memset(&bus_.ram[0], 0xab, 4096);
  StartDma(0, EduDevice::kDmaBufferAddress, 4096, EduDevice::kDmaCmdRun);
  RunAll();
  StartDma(EduDevice::kDmaBufferAddress, 0x8000, 4096,
           EduDevice::kDmaCmdRun | EduDevice::kDmaCmdToRam);
  RunAll();
  EXPECT_EQ(bus_.ram[0x8000], 0xab);
  EXPECT_EQ(bus_.ram[0x8fff], 0xab);
}

TEST_F(EduDeviceTest, OutOfRangeDmaIsDroppedButCompletes) {
  EnableBusMaster();
  const uint32_t start = EduDevice::kDmaBufferAddress;
  StartDma(0, start + 4096, 1, EduDevice::kDmaCmdRun | EduDevice::kDmaCmdIrq);
  RunAll();
  StartDma(0, start + 1, 4096, EduDevice::kDmaCmdRun);
  RunAll();
  StartDma(0, start, 0, EduDevice::kDmaCmdRun);
  RunAll();
  StartDma(0xffffffff, 0, 2, EduDevice::kDmaCmdRun | EduDevice::kDmaCmdToRam);
  RunAll();
  EXPECT_EQ(bus_.reads + bus_.writes, 0);
  EXPECT_EQ(edu_.stats().dma_out_of_range, 4u);
  EXPECT_EQ(Read(EduDevice::kRegDmaCmd) & EduDevice::kDmaCmdRun, 0u);
  EXPECT_EQ(Read(EduDevice::kRegIrqStatus), EduDevice::kDmaIrq);
}

TEST_F(EduDeviceTest, DmaWithoutBusMasterIsDropped) {
  std::memset(&bus_.ram[0], 0x5a, 64);
  StartDma(0, EduDevice::kDmaBufferAddress, 64, EduDevice::kDmaCmdRun);
  RunAll();
  StartDma(EduDevice::kDmaBufferAddress, 0x100, 64,
           EduDevice::kDmaCmdRun | EduDevice::kDmaCmdToRam);
  RunAll();
  EXPECT_EQ(bus_.reads + bus_.writes, 0);
  EXPECT_EQ(edu_.stats().dma_without_bus_master, 2u);
  EXPECT_EQ(bus_.ram[0x100], 0);
}

TEST_F(EduDeviceTest, BlockedReadLeavesZerosInTheBuffer) {
  EnableBusMaster();
  std::memset(&bus_.ram[0], 0x77, 16);
  StartDma(0, EduDevice::kDmaBufferAddress, 16, EduDevice::kDmaCmdRun);
  RunAll();
  StartDma(0x0fff0000, EduDevice::kDmaBufferAddress, 16, EduDevice::kDmaCmdRun);  // faults
  RunAll();
  StartDma(EduDevice::kDmaBufferAddress, 0x200, 16,
           EduDevice::kDmaCmdRun | EduDevice::kDmaCmdToRam);
  RunAll();
  EXPECT_EQ(bus_.ram[0x200], 0);
  EXPECT_EQ(bus_.ram[0x20f], 0);
}

TEST_F(EduDeviceTest, ConfigSpaceMatchesQemu) {
  EXPECT_EQ(edu_.ConfigRead(0x00, 4), 0x11e81234u);
  EXPECT_EQ(edu_.ConfigRead(0x04, 4), 0x00100000u);
  EXPECT_EQ(edu_.ConfigRead(0x08, 4), 0x00ff0010u);
  EXPECT_EQ(edu_.ConfigRead(0x2c, 4), 0x11001af4u);
  EXPECT_EQ(edu_.ConfigRead(0x34, 4), 0x40u);
  EXPECT_EQ(edu_.ConfigRead(0x3c, 4), 0x0100u);
  EXPECT_EQ(edu_.ConfigRead(0x40, 4), 0x00800005u);
  // Write masks, as qtest showed on QEMU 7.2.
  edu_.ConfigWrite(0x04, 4, 0xffffffff);
  EXPECT_EQ(edu_.ConfigRead(0x04, 4), 0x00100507u);
  edu_.ConfigWrite(0x0c, 4, 0xffffffff);
  EXPECT_EQ(edu_.ConfigRead(0x0c, 4), 0x000000ffu);
  edu_.ConfigWrite(0x10, 4, 0xffffffff);
  EXPECT_EQ(edu_.ConfigRead(0x10, 4), 0xfff00000u);
  edu_.ConfigWrite(0x30, 4, 0xffffffff);
  EXPECT_EQ(edu_.ConfigRead(0x30, 4), 0u);
  edu_.ConfigWrite(0x40, 4, 0xffffffff);
  EXPECT_EQ(edu_.ConfigRead(0x40, 4), 0x00810005u);
  edu_.ConfigWrite(0x4c, 4, 0xffffffff);
  EXPECT_EQ(edu_.ConfigRead(0x4c, 4), 0xffffffffu);
  edu_.ConfigWrite(0x80, 4, 0x12345678);
  EXPECT_EQ(edu_.ConfigRead(0x80, 4), 0x12345678u);
  // Out of range: dropped, reads all-ones.
  edu_.ConfigWrite(0xfe, 4, 0);
  EXPECT_EQ(edu_.ConfigRead(0xfe, 4), 0xffffffffu);
}

TEST_F(EduDeviceTest, ResetClearsRegistersAndWork) {
  Write(EduDevice::kRegLiveness, 0);
  Write(EduDevice::kRegIrqRaise, 0x8);
  Write(EduDevice::kRegFactorial, 4);
  StartDma(0, EduDevice::kDmaBufferAddress, 4, EduDevice::kDmaCmdRun);
  ASSERT_TRUE(bus_.intx);
  edu_.Reset();
  EXPECT_FALSE(bus_.intx);
  EXPECT_FALSE(edu_.NextDeadline().has_value());
  EXPECT_EQ(Read(EduDevice::kRegLiveness), 0u);
  EXPECT_EQ(Read(EduDevice::kRegIrqStatus), 0u);
  EXPECT_EQ(Read(EduDevice::kRegStatus), 0u);
  EXPECT_EQ(Read(EduDevice::kRegDmaCmd), 0u);
  EXPECT_EQ(Read(EduDevice::kRegIdent), 0x010000edu);
}

}  // namespace
}  // namespace sim
}  // namespace vfiod
