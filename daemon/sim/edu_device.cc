#include "daemon/sim/edu_device.h"

#include <linux/pci_regs.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/base/logging.h"

namespace vfiod {
namespace sim {
namespace {

// QEMU's pci_init_wmask() plus what pci_register_bar() and msi_init() add for edu.
constexpr uint16_t kCommandWmask = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
                                   PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE;
constexpr uint32_t kBar0Wmask = ~static_cast<uint32_t>(EduDevice::kBar0Size - 1);
constexpr uint32_t kMsiAddressLoWmask = 0xfffffffc;

// An access that QEMU's memory core rejects (MemoryRegionOps.valid: 4..8 bytes, aligned) never
// reaches edu.c: reads return 0 (unassigned_mem_read) and writes are dropped.
bool AcceptedByMemoryCore(uint64_t offset, unsigned size) {
  return size == 4 && offset % 4 == 0;
}

// edu_check_range() with the upper bound fixed as upstream did after 7.2.
bool WithinDmaBuffer(uint64_t address, uint64_t count) {
  constexpr uint64_t kStart = EduDevice::kDmaBufferAddress;
  constexpr uint64_t kEnd = kStart + EduDevice::kDmaBufferSize;
  return count > 0 && address >= kStart && address < kEnd && count <= kEnd - address;
}

void PutLe(uint8_t* p, unsigned size, uint32_t value) {
  for (unsigned i = 0; i < size; ++i) p[i] = static_cast<uint8_t>(value >> (8 * i));
}

uint32_t GetLe(const uint8_t* p, unsigned size) {
  uint32_t value = 0;
  for (unsigned i = 0; i < size; ++i) value |= static_cast<uint32_t>(p[i]) << (8 * i);
  return value;
}

}  // namespace

uint32_t EduFactorial(uint32_t n) {
  // 34! already holds 2^32 as a factor, so every larger n! is 0 modulo 2^32; this avoids edu's
  // four-billion-step loop for large n without changing the result.
  if (n >= 34) return 0;
  uint32_t result = 1;
  while (n > 0) result *= n--;
  return result;
}

EduDevice::EduDevice(EduBus* bus, const EduOptions& options) : bus_(bus), options_(options) {
  PutLe(&config_[PCI_VENDOR_ID], 2, kVendorId);
  PutLe(&config_[PCI_DEVICE_ID], 2, kDeviceId);
  PutLe(&config_[PCI_STATUS], 2, PCI_STATUS_CAP_LIST);
  config_[PCI_REVISION_ID] = kRevision;
  PutLe(&config_[PCI_CLASS_PROG], 3, kClassCode);
  config_[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_NORMAL;
  PutLe(&config_[PCI_SUBSYSTEM_VENDOR_ID], 2, kSubsystemVendorId);
  PutLe(&config_[PCI_SUBSYSTEM_ID], 2, kSubsystemId);
  config_[PCI_CAPABILITY_LIST] = kMsiCapOffset;
  config_[PCI_INTERRUPT_PIN] = 1;  // INTA#
  config_[kMsiCapOffset + PCI_CAP_LIST_ID] = PCI_CAP_ID_MSI;
  config_[kMsiCapOffset + PCI_CAP_LIST_NEXT] = 0;
  PutLe(&config_[kMsiCapOffset + PCI_MSI_FLAGS], 2, PCI_MSI_FLAGS_64BIT);

  PutLe(&wmask_[PCI_COMMAND], 2, kCommandWmask);
  wmask_[PCI_CACHE_LINE_SIZE] = 0xff;
  wmask_[PCI_INTERRUPT_LINE] = 0xff;
  PutLe(&wmask_[PCI_BASE_ADDRESS_0], 4, kBar0Wmask);
  // Everything after the standard header is writable unless a capability claims it.
  std::fill(wmask_.begin() + PCI_STD_HEADER_SIZEOF, wmask_.end(), 0xff);
  std::fill(wmask_.begin() + kMsiCapOffset, wmask_.begin() + kMsiCapOffset + kMsiCapSize, 0);
  PutLe(&wmask_[kMsiCapOffset + PCI_MSI_FLAGS], 2, PCI_MSI_FLAGS_QSIZE | PCI_MSI_FLAGS_ENABLE);
  PutLe(&wmask_[kMsiCapOffset + PCI_MSI_ADDRESS_LO], 4, kMsiAddressLoWmask);
  PutLe(&wmask_[kMsiCapOffset + PCI_MSI_ADDRESS_HI], 4, 0xffffffff);
  PutLe(&wmask_[kMsiCapOffset + PCI_MSI_DATA_64], 2, 0xffff);
}

uint32_t EduDevice::MmioRead(uint64_t offset, unsigned size) {
  if (!AcceptedByMemoryCore(offset, size)) return 0;
  switch (offset) {
    case kRegIdent:
      return kIdentValue;
    case kRegLiveness:
      return liveness_;
    case kRegFactorial:
      return factorial_;
    case kRegStatus:
      return status_;
    case kRegIrqStatus:
      return irq_status_;
    case kRegDmaSrc:
      return static_cast<uint32_t>(dma_src_);
    case kRegDmaDst:
      return static_cast<uint32_t>(dma_dst_);
    case kRegDmaCount:
      return static_cast<uint32_t>(dma_count_);
    case kRegDmaCmd:
      return static_cast<uint32_t>(dma_cmd_);
    default:
      return 0xffffffff;
  }
}

void EduDevice::MmioWrite(uint64_t offset, unsigned size, uint32_t value, Clock::time_point now) {
  if (!AcceptedByMemoryCore(offset, size)) return;
  const bool dma_running = (dma_cmd_ & kDmaCmdRun) != 0;
  switch (offset) {
    case kRegLiveness:
      liveness_ = ~value;
      break;
    case kRegFactorial:
      if (status_ & kStatusComputing) break;
      factorial_ = value;
      status_ |= kStatusComputing;
      factorial_deadline_ = now + options_.factorial_delay;
      break;
    case kRegStatus:
      if (value & kStatusIrqFact) {
        status_ |= kStatusIrqFact;
      } else {
        status_ &= ~kStatusIrqFact;
      }
      break;
    case kRegIrqRaise:
      RaiseIrq(value);
      break;
    case kRegIrqAck:
      LowerIrq(value);
      break;
    case kRegDmaSrc:
      if (!dma_running) dma_src_ = value;
      break;
    case kRegDmaDst:
      if (!dma_running) dma_dst_ = value;
      break;
    case kRegDmaCount:
      if (!dma_running) dma_count_ = value;
      break;
    case kRegDmaCmd:
      if (!(value & kDmaCmdRun) || dma_running) break;
      dma_cmd_ = value;
      dma_deadline_ = now + options_.dma_delay;
      break;
    default:
      break;
  }
}

uint16_t EduDevice::ConfigWord(uint32_t offset) const {
  return static_cast<uint16_t>(GetLe(&config_[offset], 2));
}

uint32_t EduDevice::ConfigRead(uint32_t offset, unsigned size) const {
  if (size == 0 || size > 4 || offset >= kConfigSize || size > kConfigSize - offset) {
    return 0xffffffff;
  }
  return GetLe(&config_[offset], size);
}

void EduDevice::ConfigWrite(uint32_t offset, unsigned size, uint32_t value) {
  if (size == 0 || size > 4 || offset >= kConfigSize || size > kConfigSize - offset) return;
  for (unsigned i = 0; i < size; ++i) {
    const uint8_t byte = static_cast<uint8_t>(value >> (8 * i));
    uint8_t& cell = config_[offset + i];
    cell = static_cast<uint8_t>((cell & ~wmask_[offset + i]) | (byte & wmask_[offset + i]));
  }
  // msi_write_config(), run by QEMU for every config write that touches the MSI capability:
  // once MSI is enabled, INTx# is deasserted and a multiple-message enable above the capable
  // count is clamped (edu is capable of one vector, so to 0).
  if (offset < kMsiCapOffset + kMsiCapSize && offset + size > kMsiCapOffset && msi_enabled()) {
    SetIntxLevel(false);
    const uint32_t flags_offset = kMsiCapOffset + PCI_MSI_FLAGS;
    uint16_t flags = ConfigWord(flags_offset);
    const unsigned capable = (flags & PCI_MSI_FLAGS_QMASK) >> 1;
    if (((flags & PCI_MSI_FLAGS_QSIZE) >> 4) > capable) {
      flags = static_cast<uint16_t>((flags & ~PCI_MSI_FLAGS_QSIZE) | (capable << 4));
      PutLe(&config_[flags_offset], 2, flags);
    }
  }
}

bool EduDevice::bus_master() const { return ConfigWord(PCI_COMMAND) & PCI_COMMAND_MASTER; }

bool EduDevice::msi_enabled() const {
  return ConfigWord(kMsiCapOffset + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_ENABLE;
}

std::optional<EduDevice::Clock::time_point> EduDevice::NextDeadline() const {
  if (factorial_deadline_ && dma_deadline_) return std::min(*factorial_deadline_, *dma_deadline_);
  return factorial_deadline_ ? factorial_deadline_ : dma_deadline_;
}

void EduDevice::RunDue(Clock::time_point now) {
  // Earliest first, so that interrupts are raised in completion order.
  while (true) {
    const bool fact_due = factorial_deadline_ && *factorial_deadline_ <= now;
    const bool dma_due = dma_deadline_ && *dma_deadline_ <= now;
    if (fact_due && (!dma_due || *factorial_deadline_ <= *dma_deadline_)) {
      factorial_deadline_.reset();
      CompleteFactorial();
    } else if (dma_due) {
      dma_deadline_.reset();
      CompleteDma();
    } else {
      return;
    }
  }
}

void EduDevice::CompleteFactorial() {
  factorial_ = EduFactorial(factorial_);
  status_ &= ~kStatusComputing;
  if (status_ & kStatusIrqFact) RaiseIrq(kFactIrq);
}

void EduDevice::CompleteDma() {
  if (!(dma_cmd_ & kDmaCmdRun)) return;
  const bool to_ram = (dma_cmd_ & kDmaCmdToRam) != 0;
  const uint64_t device_address = to_ram ? dma_src_ : dma_dst_;
  const uint64_t ram_address = (to_ram ? dma_dst_ : dma_src_) & options_.dma_mask;
  if (!WithinDmaBuffer(device_address, dma_count_)) {
    ++stats_.dma_out_of_range;
    LogDebug("edu: DMA outside the device buffer dropped",
             {{"address", absl::StrCat("0x", absl::Hex(device_address))},
              {"count", absl::StrCat(dma_count_)}});
  } else {
    uint8_t* buffer = dma_buffer_.data() + (device_address - kDmaBufferAddress);
    const size_t count = static_cast<size_t>(dma_count_);
    if (to_ram) {
      if (!bus_master()) {
        ++stats_.dma_without_bus_master;
      } else {
        bus_->DmaWrite(ram_address, absl::MakeConstSpan(buffer, count));
      }
    } else {
      // A read that the bus does not complete returns zeros to the device (QEMU's unassigned
      // access), so a blocked RAM -> device transfer clears that part of the buffer.
      if (!bus_master()) {
        ++stats_.dma_without_bus_master;
        std::memset(buffer, 0, count);
      } else if (!bus_->DmaRead(ram_address, absl::MakeSpan(buffer, count))) {
        std::memset(buffer, 0, count);
      }
    }
  }
  dma_cmd_ &= ~uint64_t{kDmaCmdRun};
  if (dma_cmd_ & kDmaCmdIrq) RaiseIrq(kDmaIrq);
}

void EduDevice::RaiseIrq(uint32_t bits) {
  irq_status_ |= bits;
  if (irq_status_ == 0) return;
  if (msi_enabled()) {
    if (bus_master()) {
      bus_->SendMsi();
    } else {
      ++stats_.msi_without_bus_master;
    }
  } else {
    SetIntxLevel(true);
  }
}

void EduDevice::LowerIrq(uint32_t bits) {
  irq_status_ &= ~bits;
  if (irq_status_ == 0 && !msi_enabled()) SetIntxLevel(false);
}

void EduDevice::SetIntxLevel(bool level) {
  if (level == intx_level_) return;
  intx_level_ = level;
  uint16_t status = ConfigWord(PCI_STATUS);
  status = level ? (status | PCI_STATUS_INTERRUPT) : (status & ~PCI_STATUS_INTERRUPT);
  PutLe(&config_[PCI_STATUS], 2, status);
  bus_->SetIntx(level);
}

void EduDevice::Reset() {
  liveness_ = 0;
  factorial_ = 0;
  status_ = 0;
  irq_status_ = 0;
  dma_src_ = 0;
  dma_dst_ = 0;
  dma_count_ = 0;
  dma_cmd_ = 0;
  dma_buffer_.fill(0);
  factorial_deadline_.reset();
  dma_deadline_.reset();
  SetIntxLevel(false);
}

}  // namespace sim
}  // namespace vfiod
