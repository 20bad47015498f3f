#include "daemon/pci/config_space.h"

#include <linux/pci_regs.h>

#include <bitset>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/format.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"

namespace vfiod {
namespace {

constexpr uint32_t kBarIoMask = static_cast<uint32_t>(PCI_BASE_ADDRESS_IO_MASK);
constexpr uint32_t kBarMemMask = static_cast<uint32_t>(PCI_BASE_ADDRESS_MEM_MASK);
constexpr uint32_t kRomMask = PCI_ROM_ADDRESS_MASK;
constexpr size_t kRomSlot = 6;

uint8_t Byte(absl::Span<const uint8_t> config, size_t offset) { return config[offset]; }
uint16_t Word(absl::Span<const uint8_t> config, size_t offset) {
  return static_cast<uint16_t>(config[offset] | config[offset + 1] << 8);
}
uint32_t Dword(absl::Span<const uint8_t> config, size_t offset) {
  return static_cast<uint32_t>(config[offset]) | static_cast<uint32_t>(config[offset + 1]) << 8 |
         static_cast<uint32_t>(config[offset + 2]) << 16 |
         static_cast<uint32_t>(config[offset + 3]) << 24;
}

uint64_t LowestSetBit(uint64_t value) { return value & (~value + 1); }

// One BAR register's value before and after writing `probe` to it; the original is written
// back before returning, also when reading the probed value fails.
struct ProbedRegister {
  uint32_t original = 0;
  uint32_t sized = 0;
};

absl::StatusOr<ProbedRegister> ProbeRegister(DeviceBackend& backend, uint32_t offset,
                                             uint32_t probe) {
  ProbedRegister reg;
  VFIOD_ASSIGN_OR_RETURN(reg.original, ReadConfigRegister(backend, offset, 4));
  VFIOD_RETURN_IF_ERROR(WriteConfigRegister(backend, offset, 4, probe));
  absl::StatusOr<uint32_t> sized = ReadConfigRegister(backend, offset, 4);
  absl::Status restored = WriteConfigRegister(backend, offset, 4, reg.original);
  if (!sized.ok()) return sized.status();
  VFIOD_RETURN_IF_ERROR(restored);
  reg.sized = *sized;
  return reg;
}

void CrossCheckRegionSize(const BackendInfo& info, size_t slot, const Bar& bar) {
  uint64_t region_size = slot < info.regions.size() ? info.regions[slot].size : 0;
  if (region_size != bar.size) {
    LogWarning("BAR size in config space disagrees with the backend's region size",
               {{"region", absl::StrCat(slot)},
                {"bar_size", Hex(bar.size)},
                {"region_size", Hex(region_size)}});
  }
}

}  // namespace

absl::Status ValidateConfigAccess(absl::string_view operation, uint32_t offset, uint32_t size,
                                  uint32_t config_size) {
  if (size != 1 && size != 2 && size != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(operation, ": size ", size, " is not 1, 2 or 4 bytes"));
  }
  if (offset % size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        operation, ": offset ", Hex(offset), " is not aligned to the ", size, "-byte access size"));
  }
  if (uint64_t{offset} + size > config_size) {
    return absl::OutOfRangeError(absl::StrCat(operation, ": offset ", Hex(offset), " + size ", size,
                                              " is beyond the ", config_size,
                                              "-byte config space"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ValidateConfigDump(uint32_t offset, uint32_t length,
                                            uint32_t config_size) {
  if (offset % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DumpConfig: offset ", Hex(offset), " is not dword-aligned"));
  }
  if (length % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DumpConfig: length ", length, " is not a multiple of 4"));
  }
  if (offset >= config_size) {
    return absl::OutOfRangeError(absl::StrCat("DumpConfig: offset ", Hex(offset), " is beyond the ",
                                              config_size, "-byte config space"));
  }
  if (length == 0) return config_size - offset;
  if (uint64_t{offset} + length > config_size) {
    return absl::OutOfRangeError(absl::StrCat("DumpConfig: offset ", Hex(offset), " + length ",
                                              length, " is beyond the ", config_size,
                                              "-byte config space"));
  }
  return length;
}

absl::StatusOr<uint32_t> ReadConfigRegister(DeviceBackend& backend, uint32_t offset,
                                            uint32_t size) {
  uint8_t bytes[4] = {0, 0, 0, 0};
  absl::Status status = backend.ReadRegion(kConfigRegionIndex, offset, absl::MakeSpan(bytes, size));
  if (!status.ok()) {
    return Annotate(status, absl::StrCat("config read of ", size, " bytes at ", Hex(offset)));
  }
  return Dword(bytes, 0);
}

absl::Status WriteConfigRegister(DeviceBackend& backend, uint32_t offset, uint32_t size,
                                 uint32_t value) {
  const uint8_t bytes[4] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                            static_cast<uint8_t>(value >> 16), static_cast<uint8_t>(value >> 24)};
  absl::Status status =
      backend.WriteRegion(kConfigRegionIndex, offset, absl::MakeConstSpan(bytes, size));
  if (!status.ok()) {
    return Annotate(status, absl::StrCat("config write of ", size, " bytes at ", Hex(offset)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ConfigSpaceSize(const BackendInfo& info) {
  if (info.regions.size() <= kConfigRegionIndex) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", info.name, " has no config region (index ", kConfigRegionIndex, ")"));
  }
  const RegionInfo& region = info.regions[kConfigRegionIndex];
  if (!region.readable || !region.writable) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", info.name, ": the config region is not readable and writable"));
  }
  if (region.size < PCI_CFG_SPACE_SIZE || region.size > PCI_CFG_SPACE_EXP_SIZE) {
    return absl::FailedPreconditionError(absl::StrCat("device ", info.name, ": config region size ",
                                                      Hex(region.size),
                                                      " is not between 256 and 4096 bytes"));
  }
  return static_cast<uint32_t>(region.size);
}

void DecodeHeader(absl::Span<const uint8_t> config, DeviceDescription* description) {
  if (config.size() < PCI_STD_HEADER_SIZEOF) return;
  description->vendor_id = Word(config, PCI_VENDOR_ID);
  description->device_id = Word(config, PCI_DEVICE_ID);
  description->revision = Byte(config, PCI_REVISION_ID);
  description->class_code = Dword(config, PCI_CLASS_REVISION) >> 8;
  description->header_type = Byte(config, PCI_HEADER_TYPE);
  if ((description->header_type & PCI_HEADER_TYPE_MASK) == PCI_HEADER_TYPE_NORMAL) {
    description->subsystem_vendor_id = Word(config, PCI_SUBSYSTEM_VENDOR_ID);
    description->subsystem_id = Word(config, PCI_SUBSYSTEM_ID);
  }
}

absl::StatusOr<std::array<std::optional<Bar>, 7>> SizeBars(DeviceBackend& backend,
                                                           uint8_t header_type) {
  std::array<std::optional<Bar>, 7> bars;
  size_t num_bars = 0;
  uint32_t rom_offset = 0;
  switch (header_type & PCI_HEADER_TYPE_MASK) {
    case PCI_HEADER_TYPE_NORMAL:
      num_bars = 6;
      rom_offset = PCI_ROM_ADDRESS;
      break;
    case PCI_HEADER_TYPE_BRIDGE:
      num_bars = 2;
      rom_offset = PCI_ROM_ADDRESS1;
      break;
    default:
      return bars;
  }
  const BackendInfo& info = backend.Info();

  for (size_t i = 0; i < num_bars; ++i) {
    const uint32_t offset = PCI_BASE_ADDRESS_0 + 4 * static_cast<uint32_t>(i);
    VFIOD_ASSIGN_OR_RETURN(ProbedRegister low, ProbeRegister(backend, offset, 0xffffffff));
    Bar bar;
    if (low.sized & PCI_BASE_ADDRESS_SPACE_IO) {
      bar.kind = Bar::Kind::kIo;
      bar.size = LowestSetBit(low.sized & kBarIoMask);
      bar.address = low.original & kBarIoMask;
    } else {
      bar.kind = Bar::Kind::kMemory;
      bar.prefetchable = (low.sized & PCI_BASE_ADDRESS_MEM_PREFETCH) != 0;
      bar.is_64bit = (low.sized & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64;
      if (bar.is_64bit && i + 1 == num_bars) {
        LogWarning("the last BAR claims 64 bits; decoding it as 32-bit",
                   {{"bar", absl::StrCat(i)}});
        bar.is_64bit = false;
      }
      uint64_t sized = low.sized & kBarMemMask;
      bar.address = low.original & kBarMemMask;
      if (bar.is_64bit) {
        VFIOD_ASSIGN_OR_RETURN(ProbedRegister high, ProbeRegister(backend, offset + 4, 0xffffffff));
        sized |= uint64_t{high.sized} << 32;
        bar.address |= uint64_t{high.original} << 32;
      }
      bar.size = LowestSetBit(sized);
    }
    const size_t slot = i;
    if (bar.is_64bit) ++i;
    if (bar.size == 0) continue;
    CrossCheckRegionSize(info, slot, bar);
    bars[slot] = bar;
  }

  VFIOD_ASSIGN_OR_RETURN(ProbedRegister rom, ProbeRegister(backend, rom_offset, kRomMask));
  Bar bar;
  bar.kind = Bar::Kind::kRom;
  bar.size = LowestSetBit(rom.sized & kRomMask);
  bar.address = rom.original & kRomMask;
  if (bar.size != 0) {
    CrossCheckRegionSize(info, kRomSlot, bar);
    bars[kRomSlot] = bar;
  }
  return bars;
}

std::vector<Capability> WalkCapabilities(absl::Span<const uint8_t> config) {
  std::vector<Capability> caps;
  if (config.size() < PCI_STD_HEADER_SIZEOF) return caps;
  if ((Word(config, PCI_STATUS) & PCI_STATUS_CAP_LIST) == 0) return caps;
  const uint8_t header_type = Byte(config, PCI_HEADER_TYPE) & PCI_HEADER_TYPE_MASK;
  const size_t list_end = std::min<size_t>(config.size(), PCI_CFG_SPACE_SIZE);
  uint32_t pointer = Byte(config, header_type == PCI_HEADER_TYPE_CARDBUS ? PCI_CB_CAPABILITY_LIST
                                                                         : PCI_CAPABILITY_LIST);
  std::bitset<PCI_CFG_SPACE_SIZE / 4> visited;
  while (pointer >= PCI_STD_HEADER_SIZEOF) {
    const char* problem = nullptr;
    if (pointer % 4 != 0) {
      problem = "capability pointer is not dword-aligned";
    } else if (pointer + 2 > list_end) {
      problem = "capability pointer is beyond config space";
    } else if (visited[pointer / 4]) {
      problem = "capability list loops";
    } else if (caps.size() == kMaxStandardCapabilities) {
      problem = "capability list is too long";
    }
    if (problem != nullptr) {
      LogWarning(absl::StrCat(problem, "; list cut"), {{"pointer", Hex(pointer)}});
      break;
    }
    visited[pointer / 4] = true;
    const uint8_t id = Byte(config, pointer + PCI_CAP_LIST_ID);
    if (id == 0xff) break;
    Capability cap;
    cap.id = id;
    cap.offset = static_cast<uint16_t>(pointer);
    cap.name = CapabilityName(id);
    caps.push_back(std::move(cap));
    pointer = Byte(config, pointer + PCI_CAP_LIST_NEXT);
  }
  return caps;
}

std::vector<Capability> WalkExtendedCapabilities(absl::Span<const uint8_t> config) {
  std::vector<Capability> caps;
  if (config.size() <= PCI_CFG_SPACE_SIZE) return caps;
  uint32_t pointer = PCI_CFG_SPACE_SIZE;
  std::bitset<PCI_CFG_SPACE_EXP_SIZE / 4> visited;
  uint32_t header = Dword(config, pointer);
  if (header == 0 || header == 0xffffffff) return caps;
  while (true) {
    visited[pointer / 4] = true;
    Capability cap;
    cap.id = static_cast<uint16_t>(PCI_EXT_CAP_ID(header));
    cap.version = static_cast<uint8_t>(PCI_EXT_CAP_VER(header));
    cap.offset = static_cast<uint16_t>(pointer);
    cap.name = ExtendedCapabilityName(cap.id);
    caps.push_back(std::move(cap));

    const uint32_t next = header >> 20;
    if (next == 0) break;
    const char* problem = nullptr;
    if (next < PCI_CFG_SPACE_SIZE) {
      problem = "extended capability pointer is below 0x100";
    } else if (next % 4 != 0) {
      problem = "extended capability pointer is not dword-aligned";
    } else if (uint64_t{next} + 4 > config.size()) {
      problem = "extended capability pointer is beyond config space";
    } else if (visited[next / 4]) {
      problem = "extended capability list loops";
    }
    if (problem != nullptr) {
      LogWarning(absl::StrCat(problem, "; list cut"), {{"pointer", Hex(next)}});
      break;
    }
    pointer = next;
    header = Dword(config, pointer);
  }
  return caps;
}

std::string CapabilityName(uint16_t id) {
  switch (id) {
    case 0x00:
      return "Null";
    case PCI_CAP_ID_PM:
      return "Power Management";
    case PCI_CAP_ID_AGP:
      return "AGP";
    case PCI_CAP_ID_VPD:
      return "Vital Product Data";
    case PCI_CAP_ID_SLOTID:
      return "Slot Identification";
    case PCI_CAP_ID_MSI:
      return "MSI";
    case PCI_CAP_ID_CHSWP:
      return "CompactPCI Hot Swap";
    case PCI_CAP_ID_PCIX:
      return "PCI-X";
    case PCI_CAP_ID_HT:
      return "HyperTransport";
    case PCI_CAP_ID_VNDR:
      return "Vendor-Specific";
    case PCI_CAP_ID_DBG:
      return "Debug Port";
    case PCI_CAP_ID_CCRC:
      return "CompactPCI Central Resource Control";
    case PCI_CAP_ID_SHPC:
      return "PCI Hot-Plug";
    case PCI_CAP_ID_SSVID:
      return "Bridge Subsystem Vendor ID";
    case PCI_CAP_ID_AGP3:
      return "AGP 8x";
    case PCI_CAP_ID_SECDEV:
      return "Secure Device";
    case PCI_CAP_ID_EXP:
      return "Express";
    case PCI_CAP_ID_MSIX:
      return "MSI-X";
    case PCI_CAP_ID_SATA:
      return "SATA";
    case PCI_CAP_ID_AF:
      return "Advanced Features";
    case PCI_CAP_ID_EA:
      return "Enhanced Allocation";
    default:
      return "Unknown";
  }
}

std::string ExtendedCapabilityName(uint16_t id) {
  switch (id) {
    case 0x0000:
      return "Null";
    case PCI_EXT_CAP_ID_ERR:
      return "AER";
    case PCI_EXT_CAP_ID_VC:
    case PCI_EXT_CAP_ID_VC9:
      return "Virtual Channel";
    case PCI_EXT_CAP_ID_DSN:
      return "Device Serial Number";
    case PCI_EXT_CAP_ID_PWR:
      return "Power Budgeting";
    case PCI_EXT_CAP_ID_RCLD:
      return "Root Complex Link Declaration";
    case PCI_EXT_CAP_ID_RCILC:
      return "Root Complex Internal Link Control";
    case PCI_EXT_CAP_ID_RCEC:
      return "Root Complex Event Collector";
    case PCI_EXT_CAP_ID_MFVC:
      return "Multi-Function Virtual Channel";
    case PCI_EXT_CAP_ID_RCRB:
      return "Root Complex Register Block";
    case PCI_EXT_CAP_ID_VNDR:
      return "Vendor-Specific";
    case PCI_EXT_CAP_ID_ACS:
      return "ACS";
    case PCI_EXT_CAP_ID_ARI:
      return "ARI";
    case PCI_EXT_CAP_ID_ATS:
      return "ATS";
    case PCI_EXT_CAP_ID_SRIOV:
      return "SR-IOV";
    case PCI_EXT_CAP_ID_MRIOV:
      return "MR-IOV";
    case PCI_EXT_CAP_ID_MCAST:
      return "Multicast";
    case PCI_EXT_CAP_ID_PRI:
      return "Page Request";
    case PCI_EXT_CAP_ID_REBAR:
      return "Resizable BAR";
    case PCI_EXT_CAP_ID_DPA:
      return "Dynamic Power Allocation";
    case PCI_EXT_CAP_ID_TPH:
      return "TPH Requester";
    case PCI_EXT_CAP_ID_LTR:
      return "Latency Tolerance Reporting";
    case PCI_EXT_CAP_ID_SECPCI:
      return "Secondary PCI Express";
    case PCI_EXT_CAP_ID_PMUX:
      return "Protocol Multiplexing";
    case PCI_EXT_CAP_ID_PASID:
      return "PASID";
    case PCI_EXT_CAP_ID_DPC:
      return "Downstream Port Containment";
    case PCI_EXT_CAP_ID_L1SS:
      return "L1 PM Substates";
    case PCI_EXT_CAP_ID_PTM:
      return "Precision Time Measurement";
    case PCI_EXT_CAP_ID_DVSEC:
      return "Designated Vendor-Specific";
    case PCI_EXT_CAP_ID_DLF:
      return "Data Link Feature";
    case PCI_EXT_CAP_ID_PL_16GT:
      return "Physical Layer 16.0 GT/s";
    case PCI_EXT_CAP_ID_DOE:
      return "Data Object Exchange";
    default:
      return "Unknown";
  }
}

absl::StatusOr<DeviceDescription> DescribeDevice(DeviceBackend& backend) {
  DeviceDescription description;
  description.backend = backend.Info();
  VFIOD_ASSIGN_OR_RETURN(description.config_size, ConfigSpaceSize(description.backend));
  std::vector<uint8_t> config(description.config_size);
  absl::Status read = backend.ReadRegion(kConfigRegionIndex, 0, absl::MakeSpan(config));
  if (!read.ok()) return Annotate(read, "reading config space");
  DecodeHeader(config, &description);
  VFIOD_ASSIGN_OR_RETURN(description.bars, SizeBars(backend, description.header_type));
  description.capabilities = WalkCapabilities(config);
  description.extended_capabilities = WalkExtendedCapabilities(config);
  return description;
}

}  // namespace vfiod
