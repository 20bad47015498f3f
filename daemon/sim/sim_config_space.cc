#include "daemon/sim/sim_config_space.h"

#include <linux/pci_regs.h>

#include <algorithm>

#include "daemon/sim/sim_bytes.h"

namespace vfiod {
namespace sim {
namespace {

constexpr uint32_t kMsiCap = EduDevice::kMsiCapOffset;
constexpr uint32_t kMsiFlags = kMsiCap + PCI_MSI_FLAGS;

bool IsBarOffset(uint32_t offset) {
  return (offset >= PCI_BASE_ADDRESS_0 && offset < PCI_BASE_ADDRESS_5 + 4) ||
         (offset >= PCI_ROM_ADDRESS && offset < PCI_ROM_ADDRESS + 4);
}

}  // namespace

SimConfigSpace::SimConfigSpace(EduDevice* device, SimInterrupts* interrupts)
    : device_(device), interrupts_(interrupts) {}

void SimConfigSpace::SetPermissions(uint32_t offset, unsigned size, uint32_t virt, uint32_t write) {
  PutLe(&perm_virt_[offset], size, virt);
  PutLe(&perm_write_[offset], size, write);
}

void SimConfigSpace::Open() {
  for (uint32_t i = 0; i < kSize; i += 4) PutLe(&vconfig_[i], 4, device_->ConfigRead(i, 4));
  std::fill(kind_.begin(), kind_.end(), Kind::kUnassigned);
  std::fill(kind_.begin(), kind_.begin() + PCI_STD_HEADER_SIZEOF, Kind::kBasic);
  std::fill(kind_.begin() + kMsiCap, kind_.begin() + kMsiCap + EduDevice::kMsiCapSize, Kind::kMsi);

  // init_pci_cap_basic_perm().
  SetPermissions(PCI_VENDOR_ID, 2, 0xffff, 0);
  SetPermissions(PCI_DEVICE_ID, 2, 0xffff, 0);
  SetPermissions(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE, 0xffff);
  SetPermissions(PCI_STATUS, 2, PCI_STATUS_CAP_LIST, 0);
  SetPermissions(PCI_CACHE_LINE_SIZE, 1, 0, 0xff);
  SetPermissions(PCI_LATENCY_TIMER, 1, 0, 0xff);
  SetPermissions(PCI_BIST, 1, 0, 0xff);
  for (uint32_t bar = PCI_BASE_ADDRESS_0; bar <= PCI_BASE_ADDRESS_5; bar += 4) {
    SetPermissions(bar, 4, 0xffffffff, 0xffffffff);
  }
  SetPermissions(PCI_ROM_ADDRESS, 4, 0xffffffff, 0xffffffff);
  SetPermissions(PCI_CAPABILITY_LIST, 1, 0xff, 0);
  SetPermissions(PCI_INTERRUPT_LINE, 1, 0xff, 0xff);
  SetPermissions(PCI_INTERRUPT_PIN, 1, 0xff, 0);
  // init_pci_cap_msi_perm() for a 64-bit capability without per-vector masking.
  SetPermissions(kMsiCap + PCI_CAP_LIST_NEXT, 1, 0xff, 0);
  SetPermissions(kMsiFlags, 1, 0xff, 0xff);
  SetPermissions(kMsiCap + PCI_MSI_ADDRESS_LO, 4, 0xffffffff, 0xffffffff);
  SetPermissions(kMsiCap + PCI_MSI_ADDRESS_HI, 4, 0xffffffff, 0xffffffff);
  SetPermissions(kMsiCap + PCI_MSI_DATA_64, 2, 0xffff, 0xffff);
}

bool SimConfigSpace::MemoryDecodeEnabled() const {
  return GetLe(&vconfig_[PCI_COMMAND], 2) & PCI_COMMAND_MEMORY;
}

// vfio_config_do_rw(): chunks never cross a capability boundary within a dword.
void SimConfigSpace::Access(uint32_t offset, size_t size, uint8_t* read_out,
                            const uint8_t* write_in) {
  size_t done = 0;
  while (done < size) {
    const uint32_t pos = offset + static_cast<uint32_t>(done);
    const Kind kind = kind_[pos];
    size_t same = 1;
    while ((pos + same) % 4 != 0 && kind_[pos + same] == kind) ++same;
    const unsigned count = AccessSize(pos, std::min(size - done, same));
    if (write_in != nullptr) {
      WritePiece(pos, count, GetLe(write_in + done, count));
    } else {
      PutLe(read_out + done, count, ReadPiece(pos, count));
    }
    done += count;
  }
}

uint32_t SimConfigSpace::ReadPiece(uint32_t pos, unsigned count) {
  switch (kind_[pos]) {
    case Kind::kBasic:
      if (IsBarOffset(pos)) BarFixup();
      return DefaultRead(pos, count);
    case Kind::kMsi: {
      // vfio_msi_config_read(): the multiple-message-capable field shows what SET_IRQS allows.
      const uint32_t cap_offset = pos - kMsiCap;
      if (cap_offset <= PCI_MSI_FLAGS && cap_offset + count >= PCI_MSI_FLAGS) {
        uint32_t flags = GetLe(&vconfig_[kMsiFlags], 2);
        flags = (flags & ~uint32_t{PCI_MSI_FLAGS_QMASK}) | (uint32_t{interrupts_->msi_qmax()} << 1);
        PutLe(&vconfig_[kMsiFlags], 2, flags);
      }
      return DefaultRead(pos, count);
    }
    case Kind::kUnassigned:
      return device_->ConfigRead(pos, count);
  }
  return ByteMask(count);
}

void SimConfigSpace::WritePiece(uint32_t pos, unsigned count, uint32_t value) {
  switch (kind_[pos]) {
    case Kind::kBasic:
      BasicWrite(pos, count, value);
      return;
    case Kind::kMsi:
      MsiWrite(pos, count, value);
      return;
    case Kind::kUnassigned:
      device_->ConfigWrite(pos, count, value);
      return;
  }
}

uint32_t SimConfigSpace::DefaultRead(uint32_t pos, unsigned count) {
  uint32_t value = GetLe(&vconfig_[pos], count);
  const uint32_t virt = GetLe(&perm_virt_[pos], count);
  if (virt != ByteMask(count)) {
    value = (device_->ConfigRead(pos, count) & ~virt) | (value & virt);
  }
  return value & ByteMask(count);
}

void SimConfigSpace::DefaultWrite(uint32_t pos, unsigned count, uint32_t value) {
  const uint32_t write = GetLe(&perm_write_[pos], count);
  if (write == 0) return;
  const uint32_t virt = GetLe(&perm_virt_[pos], count);
  if (write & virt) {
    uint32_t virt_value = GetLe(&vconfig_[pos], count);
    virt_value = (virt_value & ~(write & virt)) | (value & write & virt);
    PutLe(&vconfig_[pos], count, virt_value);
  }
  if (write & ~virt) {
    uint32_t phys = device_->ConfigRead(pos, count);
    phys = (phys & ~(write & ~virt)) | (value & write & ~virt);
    device_->ConfigWrite(pos, count, phys);
  }
}

// vfio_basic_config_write().
void SimConfigSpace::BasicWrite(uint32_t pos, unsigned count, uint32_t value) {
  DefaultWrite(pos, count, value);
  if (pos == PCI_COMMAND) {
    // The virtual memory/IO enables follow every write of the register's low byte; BAR access
    // checks the virtual memory enable.
    constexpr uint32_t kDecode = PCI_COMMAND_MEMORY | PCI_COMMAND_IO;
    uint32_t command = GetLe(&vconfig_[PCI_COMMAND], 2);
    command = (command & ~kDecode) | (value & kDecode);
    PutLe(&vconfig_[PCI_COMMAND], 2, command);
  }
  if (pos <= PCI_COMMAND + 1 && pos + count > PCI_COMMAND) {
    // The virtual INTx-disable bit masks INTx.
    interrupts_->SetVirqDisabled(GetLe(&vconfig_[PCI_COMMAND], 2) & PCI_COMMAND_INTX_DISABLE);
  }
}

// vfio_msi_config_write(): MSI is enabled by SET_IRQS only; the flags go to the device too.
void SimConfigSpace::MsiWrite(uint32_t pos, unsigned count, uint32_t value) {
  DefaultWrite(pos, count, value);
  const uint32_t cap_offset = pos - kMsiCap;
  if (cap_offset <= PCI_MSI_FLAGS && cap_offset + count >= PCI_MSI_FLAGS) {
    uint32_t flags = GetLe(&vconfig_[kMsiFlags], 2);
    if (!interrupts_->msi_enabled()) flags &= ~uint32_t{PCI_MSI_FLAGS_ENABLE};
    if (((flags & PCI_MSI_FLAGS_QSIZE) >> 4) > interrupts_->msi_qmax()) {
      flags = (flags & ~uint32_t{PCI_MSI_FLAGS_QSIZE}) | (uint32_t{interrupts_->msi_qmax()} << 4);
    }
    PutLe(&vconfig_[kMsiFlags], 2, flags);
    device_->ConfigWrite(kMsiFlags, 2, flags);
  }
}

// vfio_bar_fixup(): BAR0 reads back its size mask with its type bits (32-bit, non-prefetchable
// memory: all zero); unimplemented BARs and the absent ROM read 0.
void SimConfigSpace::BarFixup() {
  const uint32_t bar0 =
      GetLe(&vconfig_[PCI_BASE_ADDRESS_0], 4) & ~static_cast<uint32_t>(EduDevice::kBar0Size - 1);
  PutLe(&vconfig_[PCI_BASE_ADDRESS_0], 4,
        bar0 | PCI_BASE_ADDRESS_SPACE_MEMORY | PCI_BASE_ADDRESS_MEM_TYPE_32);
  for (uint32_t bar = PCI_BASE_ADDRESS_1; bar <= PCI_BASE_ADDRESS_5; bar += 4) {
    PutLe(&vconfig_[bar], 4, 0);
  }
  PutLe(&vconfig_[PCI_ROM_ADDRESS], 4, 0);
}

}  // namespace sim
}  // namespace vfiod
