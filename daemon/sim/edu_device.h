// EduDevice: QEMU 7.2's `edu` educational PCI device (hw/misc/edu.c), as the hardware behind
// vfio-pci sees it: BAR0 registers, the DMA engine, the factorial unit, INTx/MSI signalling and
// the device's own (un-virtualised) configuration space with QEMU's write masks.
//
// What the kernel adds on top (vfio-pci's config virtualisation, SET_IRQS, the IOMMU) lives in
// sim_backend.cc; this class models only what QEMU emulates. Facts checked against
// qemu-system-x86_64 7.2 through its qtest protocol:
//   - BAR0 accepts only naturally aligned 4-byte accesses (MemoryRegionOps.valid.min = 4): a
//     1- or 2-byte read returns 0 and a 1- or 2-byte write is dropped by QEMU's memory core
//     before edu.c runs. A 4-byte read of an unimplemented register returns 0xffffffff.
//   - The 64-bit DMA registers (0x80, 0x88, 0x90, 0x98) are reachable only through 4-byte
//     accesses at those offsets, which set the whole register to the zero-extended value; the
//     upper halves (0x84, ...) read all-ones and ignore writes.
//   - 0x98 stores the whole written value when it has the start bit; completion clears only the
//     start bit. Writes to 0x80..0x98 are ignored while a transfer runs.
//   - Config space: command writable bits IO|MEMORY|MASTER|SERR|INTX_DISABLE, cache line size
//     writable, bytes after the 14-byte MSI capability (0x4e..0xff) are plain read/write.
//
// Deliberate differences from QEMU 7.2: an out-of-range DMA (outside
// the 4 KiB buffer at 0x40000, or a zero count) is dropped and completes normally instead of
// aborting the VM with hw_error; a transfer of exactly 4096 bytes works (7.2's off-by-one aborts
// it). Completion delays are short and configurable instead of 100 ms of virtual time.
//
// Thread-safety: none. The owner serialises every call (SimBackend holds its mutex) and the
// EduBus callbacks run synchronously inside those calls. Never blocks.
#ifndef VFIOD_DAEMON_SIM_EDU_DEVICE_H_
#define VFIOD_DAEMON_SIM_EDU_DEVICE_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>

#include "absl/types/span.h"

namespace vfiod {
namespace sim {

// The device's side of the PCI bus: guest memory behind the IOMMU and the interrupt paths.
// Called only while bus mastering is enabled (DMA, MSI) or on an INTx level change.
class EduBus {
 public:
  virtual ~EduBus() = default;

  // A bus-master read of `out.size()` bytes at bus address `address`. Returns false when the
  // IOMMU blocks any part of it; then no guest memory was read and `out` is left as it was.
  virtual bool DmaRead(uint64_t address, absl::Span<uint8_t> out) = 0;
  // A bus-master write. Returns false when the IOMMU blocks any part of it; then nothing was
  // written.
  virtual bool DmaWrite(uint64_t address, absl::Span<const uint8_t> data) = 0;
  // The device sent its (single) MSI message.
  virtual void SendMsi() = 0;
  // The INTx# line changed level.
  virtual void SetIntx(bool asserted) = 0;
};

struct EduOptions {
  std::chrono::nanoseconds factorial_delay = std::chrono::milliseconds(1);
  std::chrono::nanoseconds dma_delay = std::chrono::milliseconds(2);
  // edu's "dma_mask" property: guest-memory addresses are truncated to it.
  uint64_t dma_mask = (uint64_t{1} << 28) - 1;
};

// What the device did that never reached the bus.
struct EduStats {
  uint64_t dma_without_bus_master = 0;  // DMA transfers dropped: PCI_COMMAND_MASTER was off
  uint64_t msi_without_bus_master = 0;  // MSI messages dropped: PCI_COMMAND_MASTER was off
  uint64_t dma_out_of_range = 0;        // transfers outside the device buffer, dropped
};

class EduDevice {
 public:
  using Clock = std::chrono::steady_clock;

  // edu.c facts.
  static constexpr uint16_t kVendorId = 0x1234;  // PCI_VENDOR_ID_QEMU
  static constexpr uint16_t kDeviceId = 0x11e8;
  static constexpr uint8_t kRevision = 0x10;
  static constexpr uint32_t kClassCode = 0x00ff00;  // PCI_CLASS_OTHERS << 8
  static constexpr uint16_t kSubsystemVendorId = 0x1af4;  // QEMU's PCI defaults
  static constexpr uint16_t kSubsystemId = 0x1100;
  static constexpr uint64_t kBar0Size = uint64_t{1} << 20;
  static constexpr uint8_t kMsiCapOffset = 0x40;  // msi_init(pdev, 0, ...) picks the first slot
  static constexpr uint8_t kMsiCapSize = 0x0e;    // 64-bit address, no per-vector mask
  static constexpr uint32_t kConfigSize = 256;    // conventional PCI

  // BAR0 register offsets and bits.
  static constexpr uint64_t kRegIdent = 0x00;
  static constexpr uint64_t kRegLiveness = 0x04;
  static constexpr uint64_t kRegFactorial = 0x08;
  static constexpr uint64_t kRegStatus = 0x20;
  static constexpr uint64_t kRegIrqStatus = 0x24;
  static constexpr uint64_t kRegIrqRaise = 0x60;
  static constexpr uint64_t kRegIrqAck = 0x64;
  static constexpr uint64_t kRegDmaSrc = 0x80;
  static constexpr uint64_t kRegDmaDst = 0x88;
  static constexpr uint64_t kRegDmaCount = 0x90;
  static constexpr uint64_t kRegDmaCmd = 0x98;

  static constexpr uint32_t kIdentValue = 0x010000ed;
  static constexpr uint32_t kStatusComputing = 0x01;
  static constexpr uint32_t kStatusIrqFact = 0x80;
  static constexpr uint32_t kFactIrq = 0x001;
  static constexpr uint32_t kDmaIrq = 0x100;
  static constexpr uint32_t kDmaCmdRun = 0x1;
  static constexpr uint32_t kDmaCmdToRam = 0x2;  // direction bit: 1 = device -> RAM
  static constexpr uint32_t kDmaCmdIrq = 0x4;
  static constexpr uint64_t kDmaBufferAddress = 0x40000;
  static constexpr uint64_t kDmaBufferSize = 4096;

  // `bus` must outlive the device.
  EduDevice(EduBus* bus, const EduOptions& options);

  EduDevice(const EduDevice&) = delete;
  EduDevice& operator=(const EduDevice&) = delete;

  // One BAR0 access of `size` (1, 2 or 4) bytes at `offset` (< kBar0Size); the value is the
  // little-endian register contents. `now` starts the completion timers.
  uint32_t MmioRead(uint64_t offset, unsigned size);
  void MmioWrite(uint64_t offset, unsigned size, uint32_t value, Clock::time_point now);

  // The device's configuration space as QEMU holds it (no vfio virtualisation): `size` is 1, 2
  // or 4 and offset + size <= kConfigSize (anything else reads all-ones / is dropped). Writes
  // apply QEMU's write masks and msi_write_config(): a write touching the MSI capability while
  // MSI is enabled deasserts INTx#.
  uint32_t ConfigRead(uint32_t offset, unsigned size) const;
  void ConfigWrite(uint32_t offset, unsigned size, uint32_t value);

  // The earliest pending completion (factorial or DMA), if any.
  std::optional<Clock::time_point> NextDeadline() const;
  // Completes everything due at `now`.
  void RunDue(Clock::time_point now);

  // A function reset: registers, DMA buffer and pending work return to their power-on state and
  // INTx is deasserted. Config space is left alone: the kernel saves and restores it around a
  // reset (pci_dev_save_and_disable / pci_dev_restore).
  void Reset();

  bool bus_master() const;
  bool msi_enabled() const;
  bool intx_asserted() const { return intx_level_; }
  const EduStats& stats() const { return stats_; }

 private:
  void RaiseIrq(uint32_t bits);
  void LowerIrq(uint32_t bits);
  void SetIntxLevel(bool level);
  void CompleteFactorial();
  void CompleteDma();
  uint16_t ConfigWord(uint32_t offset) const;

  EduBus* const bus_;
  const EduOptions options_;

  uint32_t liveness_ = 0;
  uint32_t factorial_ = 0;
  uint32_t status_ = 0;
  uint32_t irq_status_ = 0;
  uint64_t dma_src_ = 0;
  uint64_t dma_dst_ = 0;
  uint64_t dma_count_ = 0;
  uint64_t dma_cmd_ = 0;
  std::array<uint8_t, kDmaBufferSize> dma_buffer_{};
  std::optional<Clock::time_point> factorial_deadline_;
  std::optional<Clock::time_point> dma_deadline_;
  bool intx_level_ = false;

  std::array<uint8_t, kConfigSize> config_{};
  std::array<uint8_t, kConfigSize> wmask_{};

  EduStats stats_;
};

// n! modulo 2^32, as edu's factorial thread computes it (uint32_t arithmetic).
uint32_t EduFactorial(uint32_t n);

}  // namespace sim
}  // namespace vfiod

#endif  // VFIOD_DAEMON_SIM_EDU_DEVICE_H_
