#include "client/config_decode.h"

#include <bitset>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace vfiod::client {
namespace {

constexpr size_t kConfigBytes = 256;
constexpr size_t kExtendedConfigBytes = 4096;
constexpr uint16_t kStatusCapList = 1 << 4;

uint32_t Read(absl::string_view config, size_t offset, size_t size) {
  uint32_t value = 0;
  for (size_t i = size; i > 0; --i) {
    const size_t at = offset + i - 1;
    value = (value << 8) | (at < config.size() ? static_cast<uint8_t>(config[at]) : 0);
  }
  return value;
}
uint8_t Read8(absl::string_view config, size_t offset) {
  return static_cast<uint8_t>(Read(config, offset, 1));
}
uint16_t Read16(absl::string_view config, size_t offset) {
  return static_cast<uint16_t>(Read(config, offset, 2));
}
uint32_t Read32(absl::string_view config, size_t offset) { return Read(config, offset, 4); }

const char* Flag(bool on) { return on ? "+" : "-"; }

std::string PcieDescription(absl::string_view config, uint16_t offset) {
  static constexpr const char* kTypes[16] = {
      "Endpoint",         "Legacy Endpoint",     nullptr,
      nullptr,            "Root Port",           "Upstream Port",
      "Downstream Port",  "PCI-Express to PCI/PCI-X Bridge",
      "PCI/PCI-X to PCI-Express Bridge", "Root Complex Integrated Endpoint",
      "Root Complex Event Collector"};
  const uint16_t caps = Read16(config, offset + 2);
  const char* type = kTypes[(caps >> 4) & 0xf];
  return absl::StrFormat("Express (v%d) %s", caps & 0xf,
                         type != nullptr ? type : absl::StrFormat("type %d", (caps >> 4) & 0xf));
}

// Extra lines (already indented) for the capabilities this file knows how to decode.
std::vector<std::string> CapabilityDetails(absl::string_view config, const CapabilityEntry& cap,
                                           std::string* title) {
  std::vector<std::string> lines;
  switch (cap.id) {
    case 0x01:
      *title = absl::StrFormat("Power Management version %d", Read16(config, cap.offset + 2) & 7);
      break;
    case 0x05:
      if (std::optional<MsiDecode> msi = DecodeMsi(config, cap.offset)) {
        *title = absl::StrFormat("MSI: Enable%s Count=%d/%d Maskable%s 64bit%s", Flag(msi->enable),
                                 msi->vectors_enabled, msi->vectors_capable,
                                 Flag(msi->per_vector_masking), Flag(msi->is_64bit));
        lines.push_back(absl::StrFormat("Address: %016x  Data: %04x", msi->address, msi->data));
        if (msi->per_vector_masking) {
          lines.push_back(absl::StrFormat("Masking: %08x  Pending: %08x", msi->mask, msi->pending));
        }
      } else {
        *title = "MSI: <truncated>";
      }
      break;
    case 0x10:
      *title = PcieDescription(config, cap.offset);
      break;
    case 0x11:
      if (std::optional<MsixDecode> msix = DecodeMsix(config, cap.offset)) {
        *title = absl::StrFormat("MSI-X: Enable%s Count=%d Masked%s", Flag(msix->enable),
                                 msix->table_size, Flag(msix->function_mask));
        lines.push_back(
            absl::StrFormat("Vector table: BAR=%d offset=%08x", msix->table_bir, msix->table_offset));
        lines.push_back(absl::StrFormat("PBA: BAR=%d offset=%08x", msix->pba_bir, msix->pba_offset));
      } else {
        *title = "MSI-X: <truncated>";
      }
      break;
    default:
      break;
  }
  return lines;
}

}  // namespace

ConfigHeader DecodeHeader(absl::string_view config) {
  ConfigHeader h;
  h.vendor_id = Read16(config, 0x00);
  h.device_id = Read16(config, 0x02);
  h.command = Read16(config, 0x04);
  h.status = Read16(config, 0x06);
  h.revision = Read8(config, 0x08);
  h.class_code = Read(config, 0x09, 3);
  h.cache_line_size = Read8(config, 0x0c);
  h.latency_timer = Read8(config, 0x0d);
  h.header_type = Read8(config, 0x0e) & 0x7f;
  h.multifunction = (Read8(config, 0x0e) & 0x80) != 0;
  h.bist = Read8(config, 0x0f);
  h.capabilities_pointer = Read8(config, 0x34);
  h.interrupt_line = Read8(config, 0x3c);
  h.interrupt_pin = Read8(config, 0x3d);
  if (h.header_type == 0) {
    h.subsystem_vendor_id = Read16(config, 0x2c);
    h.subsystem_id = Read16(config, 0x2e);
    h.rom = Read32(config, 0x30);
  } else if (h.header_type == 1) {
    h.rom = Read32(config, 0x38);
  }
  return h;
}

std::string DecodeCommand(uint16_t command) {
  static constexpr const char* kBits[] = {"I/O",      "Mem",    "BusMaster", "SpecCycle",
                                          "MemWINV",  "VGASnoop", "ParErr",  "Stepping",
                                          "SERR",     "FastB2B", "DisINTx"};
  std::vector<std::string> parts;
  for (size_t bit = 0; bit < sizeof(kBits) / sizeof(kBits[0]); ++bit) {
    parts.push_back(absl::StrCat(kBits[bit], Flag(command & (1u << bit))));
  }
  return absl::StrJoin(parts, " ");
}

std::string DecodeStatus(uint16_t status) {
  static constexpr const char* kDevsel[] = {"fast", "medium", "slow", "??"};
  return absl::StrFormat(
      "Cap%s 66MHz%s UDF%s FastB2B%s ParErr%s DEVSEL=%s >TAbort%s <TAbort%s <MAbort%s >SERR%s "
      "<PERR%s INTx%s",
      Flag(status & (1 << 4)), Flag(status & (1 << 5)), Flag(status & (1 << 6)),
      Flag(status & (1 << 7)), Flag(status & (1 << 8)), kDevsel[(status >> 9) & 3],
      Flag(status & (1 << 11)), Flag(status & (1 << 12)), Flag(status & (1 << 13)),
      Flag(status & (1 << 14)), Flag(status & (1 << 15)), Flag(status & (1 << 3)));
}

std::string ClassName(uint32_t class_code) {
  const uint32_t base = (class_code >> 16) & 0xff;
  const uint32_t sub = (class_code >> 8) & 0xff;
  switch ((base << 8) | sub) {
    case 0x0106: return "SATA controller";
    case 0x0108: return "Non-Volatile memory controller";
    case 0x0200: return "Ethernet controller";
    case 0x0300: return "VGA compatible controller";
    case 0x0302: return "3D controller";
    case 0x0403: return "Audio device";
    case 0x0600: return "Host bridge";
    case 0x0601: return "ISA bridge";
    case 0x0604: return "PCI bridge";
    case 0x0c03: return "USB controller";
    case 0x0c05: return "SMBus";
    default: break;
  }
  switch (base) {
    case 0x00: return "Unclassified device";
    case 0x01: return "Mass storage controller";
    case 0x02: return "Network controller";
    case 0x03: return "Display controller";
    case 0x04: return "Multimedia controller";
    case 0x05: return "Memory controller";
    case 0x06: return "Bridge";
    case 0x07: return "Communication controller";
    case 0x08: return "Generic system peripheral";
    case 0x09: return "Input device controller";
    case 0x0a: return "Docking station";
    case 0x0b: return "Processor";
    case 0x0c: return "Serial bus controller";
    case 0x0d: return "Wireless controller";
    case 0x0e: return "Intelligent controller";
    case 0x0f: return "Satellite communications controller";
    case 0x10: return "Encryption controller";
    case 0x11: return "Signal processing controller";
    case 0x12: return "Processing accelerators";
    case 0x13: return "Non-Essential Instrumentation";
    case 0x40: return "Coprocessor";
    case 0xff: return "Unassigned class";
    default: return absl::StrFormat("Class %02x", base);
  }
}

std::vector<BarDecode> DecodeBars(absl::string_view config, const std::array<uint64_t, 6>& sizes) {
  std::vector<BarDecode> bars;
  const uint8_t type = Read8(config, 0x0e) & 0x7f;
  const int count = type == 0 ? 6 : type == 1 ? 2 : 0;
  for (int i = 0; i < count; ++i) {
    const uint32_t low = Read32(config, 0x10 + 4 * i);
    BarDecode bar;
    bar.index = i;
    bar.size = sizes[i];
    bar.io = (low & 1) != 0;
    if (bar.io) {
      bar.address = low & ~3u;
    } else {
      bar.prefetchable = (low & 8) != 0;
      bar.is_64bit = ((low >> 1) & 3) == 2 && i + 1 < count;
      bar.address = low & ~0xfu;
      if (bar.is_64bit) bar.address |= static_cast<uint64_t>(Read32(config, 0x14 + 4 * i)) << 32;
    }
    if (low != 0 || bar.size != 0) bars.push_back(bar);
    if (bar.is_64bit) ++i;
  }
  return bars;
}

std::string CapabilityName(uint8_t id) {
  switch (id) {
    case 0x01: return "Power Management";
    case 0x02: return "AGP";
    case 0x03: return "Vital Product Data";
    case 0x04: return "Slot Identification";
    case 0x05: return "MSI";
    case 0x06: return "CompactPCI Hot Swap";
    case 0x07: return "PCI-X";
    case 0x08: return "HyperTransport";
    case 0x09: return "Vendor Specific";
    case 0x0a: return "Debug port";
    case 0x0b: return "CompactPCI Central Resource Control";
    case 0x0c: return "PCI Hot-plug";
    case 0x0d: return "Subsystem ID (bridge)";
    case 0x0e: return "AGP 8x";
    case 0x0f: return "Secure Device";
    case 0x10: return "PCI Express";
    case 0x11: return "MSI-X";
    case 0x12: return "SATA HBA";
    case 0x13: return "PCI Advanced Features";
    case 0x14: return "Enhanced Allocation";
    case 0x15: return "Flattening Portal Bridge";
    default: return absl::StrFormat("Unknown (0x%02x)", id);
  }
}

std::string ExtendedCapabilityName(uint16_t id) {
  switch (id) {
    case 0x0001: return "Advanced Error Reporting";
    case 0x0002: return "Virtual Channel";
    case 0x0003: return "Device Serial Number";
    case 0x0004: return "Power Budgeting";
    case 0x0005: return "Root Complex Link Declaration";
    case 0x0006: return "Root Complex Internal Link Control";
    case 0x0007: return "Root Complex Event Collector";
    case 0x0008: return "Multi-Function Virtual Channel";
    case 0x0009: return "Virtual Channel (MFVC)";
    case 0x000a: return "Root Complex Register Block";
    case 0x000b: return "Vendor Specific";
    case 0x000c: return "Configuration Access Correlation";
    case 0x000d: return "Access Control Services";
    case 0x000e: return "Alternative Routing-ID Interpretation";
    case 0x000f: return "Address Translation Service";
    case 0x0010: return "Single Root I/O Virtualization";
    case 0x0011: return "Multi-Root I/O Virtualization";
    case 0x0012: return "Multicast";
    case 0x0013: return "Page Request Interface";
    case 0x0015: return "Resizable BAR";
    case 0x0016: return "Dynamic Power Allocation";
    case 0x0017: return "TPH Requester";
    case 0x0018: return "Latency Tolerance Reporting";
    case 0x0019: return "Secondary PCI Express";
    case 0x001a: return "Protocol Multiplexing";
    case 0x001b: return "Process Address Space ID";
    case 0x001d: return "Downstream Port Containment";
    case 0x001e: return "L1 PM Substates";
    case 0x001f: return "Precision Time Measurement";
    case 0x0023: return "Designated Vendor-Specific";
    case 0x0025: return "Data Link Feature";
    case 0x0026: return "Physical Layer 16.0 GT/s";
    case 0x0027: return "Lane Margining at the Receiver";
    default: return absl::StrFormat("Unknown (0x%04x)", id);
  }
}

CapabilityWalk WalkCapabilities(absl::string_view config) {
  CapabilityWalk walk;
  if ((Read16(config, 0x06) & kStatusCapList) == 0) return walk;
  const size_t limit = std::min(config.size(), kConfigBytes);
  std::bitset<kConfigBytes> seen;
  size_t offset = Read8(config, 0x34) & 0xfc;
  while (offset != 0) {
    if (offset < kPciHeaderBytes) {
      walk.error = absl::StrFormat("pointer 0x%02x points into the header", offset);
      break;
    }
    if (offset + 2 > limit) {
      walk.error = absl::StrFormat("pointer 0x%02x is beyond the data", offset);
      break;
    }
    if (seen[offset]) {
      walk.error = absl::StrFormat("loop at 0x%02x", offset);
      break;
    }
    seen[offset] = true;
    CapabilityEntry entry;
    entry.id = Read8(config, offset);
    entry.offset = static_cast<uint16_t>(offset);
    entry.name = CapabilityName(static_cast<uint8_t>(entry.id));
    walk.capabilities.push_back(std::move(entry));
    offset = Read8(config, offset + 1) & 0xfc;
  }
  return walk;
}

CapabilityWalk WalkExtendedCapabilities(absl::string_view config) {
  CapabilityWalk walk;
  const size_t limit = std::min(config.size(), kExtendedConfigBytes);
  if (limit < kConfigBytes + 4) return walk;
  std::bitset<kExtendedConfigBytes> seen;
  size_t offset = kConfigBytes;
  for (;;) {
    const uint32_t header = Read32(config, offset);
    if (header == 0 || header == 0xffffffff) break;
    if (seen[offset]) {
      walk.error = absl::StrFormat("loop at 0x%03x", offset);
      break;
    }
    seen[offset] = true;
    CapabilityEntry entry;
    entry.id = header & 0xffff;
    entry.version = (header >> 16) & 0xf;
    entry.offset = static_cast<uint16_t>(offset);
    entry.name = ExtendedCapabilityName(entry.id);
    walk.capabilities.push_back(std::move(entry));
    const size_t next = (header >> 20) & 0xffc;
    if (next == 0) break;
    if (next < kConfigBytes) {
      walk.error = absl::StrFormat("pointer 0x%03x is below 0x100", next);
      break;
    }
    if (next + 4 > limit) {
      walk.error = absl::StrFormat("pointer 0x%03x is beyond the data", next);
      break;
    }
    offset = next;
  }
  return walk;
}

std::optional<MsiDecode> DecodeMsi(absl::string_view config, uint16_t offset) {
  const uint16_t control = Read16(config, offset + 2);
  MsiDecode msi;
  msi.enable = (control & 1) != 0;
  msi.vectors_capable = 1u << std::min((control >> 1) & 7, 5);
  msi.vectors_enabled = 1u << std::min((control >> 4) & 7, 5);
  msi.is_64bit = (control & (1 << 7)) != 0;
  msi.per_vector_masking = (control & (1 << 8)) != 0;
  const size_t data_at = offset + (msi.is_64bit ? 0x0c : 0x08);
  const size_t end = msi.per_vector_masking ? data_at + 12 : data_at + 2;
  if (offset + 4u > config.size() || end > config.size()) return std::nullopt;
  msi.address = Read32(config, offset + 4);
  if (msi.is_64bit) msi.address |= static_cast<uint64_t>(Read32(config, offset + 8)) << 32;
  msi.data = Read16(config, data_at);
  if (msi.per_vector_masking) {
    msi.mask = Read32(config, data_at + 4);
    msi.pending = Read32(config, data_at + 8);
  }
  return msi;
}

std::optional<MsixDecode> DecodeMsix(absl::string_view config, uint16_t offset) {
  if (offset + 12u > config.size()) return std::nullopt;
  const uint16_t control = Read16(config, offset + 2);
  MsixDecode msix;
  msix.table_size = (control & 0x7ff) + 1;
  msix.function_mask = (control & (1 << 14)) != 0;
  msix.enable = (control & (1 << 15)) != 0;
  const uint32_t table = Read32(config, offset + 4);
  const uint32_t pba = Read32(config, offset + 8);
  msix.table_bir = table & 7;
  msix.table_offset = table & ~7u;
  msix.pba_bir = pba & 7;
  msix.pba_offset = pba & ~7u;
  return msix;
}

std::string FormatSize(uint64_t size) {
  static constexpr const char* kUnits[] = {"", "K", "M", "G", "T", "P", "E"};
  size_t unit = 0;
  while (unit + 1 < sizeof(kUnits) / sizeof(kUnits[0]) && size >= 1024 && size % 1024 == 0) {
    size /= 1024;
    ++unit;
  }
  return absl::StrCat(size, kUnits[unit]);
}

std::string FormatConfig(absl::string_view config, const FormatOptions& options) {
  std::string out;
  if (config.size() < kPciHeaderBytes) {
    absl::StrAppendFormat(&out, "(only %d bytes of config space; the header needs 64)\n",
                          config.size());
  }
  const ConfigHeader h = DecodeHeader(config);
  absl::StrAppendFormat(&out, "Vendor %04x Device %04x (rev %02x)\n", h.vendor_id, h.device_id,
                        h.revision);
  absl::StrAppendFormat(&out, "Class %06x: %s\n", h.class_code, ClassName(h.class_code));
  static constexpr const char* kHeaderTypes[] = {"normal", "bridge", "cardbus"};
  absl::StrAppendFormat(&out, "Header type: %02x (%s%s)\n", h.header_type,
                        h.header_type < 3 ? kHeaderTypes[h.header_type] : "unknown",
                        h.multifunction ? ", multifunction" : "");
  if (h.header_type == 0) {
    absl::StrAppendFormat(&out, "Subsystem: %04x:%04x\n", h.subsystem_vendor_id, h.subsystem_id);
  }
  absl::StrAppendFormat(&out, "Control: %s\n", DecodeCommand(h.command));
  absl::StrAppendFormat(&out, "Status: %s\n", DecodeStatus(h.status));
  absl::StrAppendFormat(&out, "Latency: %d, Cache Line Size: %d bytes, BIST: %02x\n",
                        h.latency_timer, h.cache_line_size * 4, h.bist);
  if (h.interrupt_pin == 0) {
    out += "Interrupt: none\n";
  } else if (h.interrupt_pin <= 4) {
    absl::StrAppendFormat(&out, "Interrupt: pin %c routed to IRQ %d\n",
                          static_cast<char>('A' + h.interrupt_pin - 1), h.interrupt_line);
  } else {
    absl::StrAppendFormat(&out, "Interrupt: invalid pin %d\n", h.interrupt_pin);
  }
  if (h.header_type == 1) {
    absl::StrAppendFormat(&out, "Bus: primary=%02x, secondary=%02x, subordinate=%02x\n",
                          Read8(config, 0x18), Read8(config, 0x19), Read8(config, 0x1a));
  }
  for (const BarDecode& bar : DecodeBars(config, options.bar_sizes)) {
    absl::StrAppendFormat(&out, "Region %d: ", bar.index);
    if (bar.io) {
      absl::StrAppendFormat(&out, "I/O ports at %x", bar.address);
    } else {
      absl::StrAppendFormat(&out, "Memory at %x (%s, %s)", bar.address,
                            bar.is_64bit ? "64-bit" : "32-bit",
                            bar.prefetchable ? "prefetchable" : "non-prefetchable");
    }
    if (bar.size != 0) absl::StrAppendFormat(&out, " [size=%s]", FormatSize(bar.size));
    out += "\n";
  }
  if (h.rom != 0 || options.rom_size != 0) {
    absl::StrAppendFormat(&out, "Expansion ROM at %08x [%s]", h.rom & ~0x7ffu,
                          (h.rom & 1) ? "enabled" : "disabled");
    if (options.rom_size != 0) absl::StrAppendFormat(&out, " [size=%s]", FormatSize(options.rom_size));
    out += "\n";
  }
  const CapabilityWalk walk = WalkCapabilities(config);
  for (const CapabilityEntry& cap : walk.capabilities) {
    std::string title = cap.name;
    std::vector<std::string> lines = CapabilityDetails(config, cap, &title);
    absl::StrAppendFormat(&out, "Capabilities: [%02x] %s\n", cap.offset, title);
    for (const std::string& line : lines) absl::StrAppend(&out, "\t\t", line, "\n");
  }
  if (!walk.error.empty()) absl::StrAppendFormat(&out, "Capabilities: <%s>\n", walk.error);
  const CapabilityWalk extended = WalkExtendedCapabilities(config);
  for (const CapabilityEntry& cap : extended.capabilities) {
    absl::StrAppendFormat(&out, "Capabilities: [%03x v%d] %s\n", cap.offset, cap.version, cap.name);
  }
  if (!extended.error.empty()) {
    absl::StrAppendFormat(&out, "Capabilities: <extended: %s>\n", extended.error);
  }
  return out;
}

std::string ConfigToJson(absl::string_view config, const FormatOptions& options) {
  // vfioctl's JSON convention (README.md, section "vfioctl", JSON): lowerCamelCase keys, 64-bit
  // values as decimal strings, everything narrower as numbers.
  auto json64 = [](uint64_t value) { return nlohmann::ordered_json(absl::StrCat(value)); };
  const ConfigHeader h = DecodeHeader(config);
  nlohmann::ordered_json out = {
      {"vendorId", h.vendor_id},
      {"deviceId", h.device_id},
      {"revision", h.revision},
      {"classCode", h.class_code},
      {"className", ClassName(h.class_code)},
      {"headerType", h.header_type},
      {"multifunction", h.multifunction},
      {"subsystemVendorId", h.subsystem_vendor_id},
      {"subsystemId", h.subsystem_id},
      {"command", h.command},
      {"commandFlags", DecodeCommand(h.command)},
      {"status", h.status},
      {"statusFlags", DecodeStatus(h.status)},
      {"latencyTimer", h.latency_timer},
      {"cacheLineSize", h.cache_line_size},
      {"interruptLine", h.interrupt_line},
      {"interruptPin", h.interrupt_pin},
      {"rom", h.rom},
  };
  nlohmann::ordered_json& bars = out["bars"] = nlohmann::ordered_json::array();
  for (const BarDecode& bar : DecodeBars(config, options.bar_sizes)) {
    bars.push_back({{"index", bar.index},
                    {"kind", bar.io ? "io" : "memory"},
                    {"is64bit", bar.is_64bit},
                    {"prefetchable", bar.prefetchable},
                    {"address", json64(bar.address)},
                    {"size", json64(bar.size)}});
  }
  nlohmann::ordered_json& caps = out["capabilities"] = nlohmann::ordered_json::array();
  const CapabilityWalk walk = WalkCapabilities(config);
  for (const CapabilityEntry& cap : walk.capabilities) {
    nlohmann::ordered_json item = {{"id", cap.id}, {"offset", cap.offset}, {"name", cap.name}};
    if (cap.id == 0x05) {
      if (std::optional<MsiDecode> msi = DecodeMsi(config, cap.offset)) {
        item["msi"] = {{"enable", msi->enable},
                       {"vectorsCapable", msi->vectors_capable},
                       {"vectorsEnabled", msi->vectors_enabled},
                       {"is64bit", msi->is_64bit},
                       {"perVectorMasking", msi->per_vector_masking},
                       {"address", json64(msi->address)},
                       {"data", msi->data}};
      }
    } else if (cap.id == 0x11) {
      if (std::optional<MsixDecode> msix = DecodeMsix(config, cap.offset)) {
        item["msix"] = {{"enable", msix->enable},
                        {"functionMask", msix->function_mask},
                        {"tableSize", msix->table_size},
                        {"tableBir", msix->table_bir},
                        {"tableOffset", msix->table_offset},
                        {"pbaBir", msix->pba_bir},
                        {"pbaOffset", msix->pba_offset}};
      }
    }
    caps.push_back(std::move(item));
  }
  nlohmann::ordered_json& extended_caps = out["extendedCapabilities"] =
      nlohmann::ordered_json::array();
  const CapabilityWalk extended = WalkExtendedCapabilities(config);
  for (const CapabilityEntry& cap : extended.capabilities) {
    extended_caps.push_back(
        {{"id", cap.id}, {"offset", cap.offset}, {"version", cap.version}, {"name", cap.name}});
  }
  nlohmann::ordered_json errors = nlohmann::ordered_json::array();
  if (!walk.error.empty()) errors.push_back(walk.error);
  if (!extended.error.empty()) errors.push_back(extended.error);
  if (!errors.empty()) out["errors"] = std::move(errors);
  // Names come from tables here, but never let a stray byte make the output invalid.
  return out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string HexDump(absl::string_view data, uint32_t base) {
  std::string out;
  const int width = base + data.size() > 0x100 ? 3 : 2;
  for (size_t line = 0; line < data.size(); line += 16) {
    absl::StrAppendFormat(&out, "%0*x:", width, base + line);
    for (size_t i = line; i < line + 16 && i < data.size(); ++i) {
      absl::StrAppendFormat(&out, " %02x", static_cast<uint8_t>(data[i]));
    }
    out += "\n";
  }
  return out;
}

}  // namespace vfiod::client
