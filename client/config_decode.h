// Decoding of PCI configuration space, for vfioctl and tests: the type-0/1 header, command and
// status bits, BARs, the capability lists (standard and extended) and MSI/MSI-X control, and
// lspci-style text, hex dumps and JSON.
//
// Every function takes the raw config bytes (offset 0 first, as DumpConfig returns them), never
// trusts them, and never reads outside them: fields beyond the data read as 0, capability walks
// stop at loops, at pointers into the header and at the end of the data. Stateless and
// thread-safe.
#ifndef VFIOD_CLIENT_CONFIG_DECODE_H_
#define VFIOD_CLIENT_CONFIG_DECODE_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace vfiod::client {

inline constexpr size_t kPciHeaderBytes = 64;

// The fields of the common header, plus the type-0 fields (zero for other header types).
struct ConfigHeader {
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint16_t command = 0;
  uint16_t status = 0;
  uint8_t revision = 0;
  uint32_t class_code = 0;  // 24 bits
  uint8_t cache_line_size = 0;
  uint8_t latency_timer = 0;
  uint8_t header_type = 0;  // bits 6:0; see multifunction
  bool multifunction = false;
  uint8_t bist = 0;
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
  uint32_t rom = 0;
  uint8_t capabilities_pointer = 0;
  uint8_t interrupt_line = 0;
  uint8_t interrupt_pin = 0;  // 0 none, 1..4 = A..D
};

ConfigHeader DecodeHeader(absl::string_view config);

// lspci -vv style flags: "I/O- Mem+ BusMaster- ..." and "Cap+ 66MHz- ... DEVSEL=fast ...".
std::string DecodeCommand(uint16_t command);
std::string DecodeStatus(uint16_t status);

// "Unclassified device", "Ethernet controller", ...; "Class xx" when unknown.
std::string ClassName(uint32_t class_code);

struct BarDecode {
  int index = 0;  // 0..5
  bool io = false;
  bool is_64bit = false;
  bool prefetchable = false;
  uint64_t address = 0;
  uint64_t size = 0;  // from FormatOptions; 0 when unknown
};

// The BARs of a type-0 (6) or type-1 (2) header that are implemented: a non-zero register or a
// known size. A 64-bit BAR takes the next register, which gets no entry of its own.
std::vector<BarDecode> DecodeBars(absl::string_view config,
                                  const std::array<uint64_t, 6>& sizes = {});

struct CapabilityEntry {
  uint16_t id = 0;
  uint16_t offset = 0;
  uint8_t version = 0;  // extended capabilities only
  std::string name;
};

struct CapabilityWalk {
  std::vector<CapabilityEntry> capabilities;
  // Why the walk stopped early ("loop at 0x40", ...); empty when the chain ended normally.
  std::string error;
};

std::string CapabilityName(uint8_t id);
std::string ExtendedCapabilityName(uint16_t id);

// The standard list (from 0x34, when the status register says there is one).
CapabilityWalk WalkCapabilities(absl::string_view config);
// The PCIe extended list at 0x100; empty when the data is 256 bytes or less.
CapabilityWalk WalkExtendedCapabilities(absl::string_view config);

struct MsiDecode {
  bool enable = false;
  uint32_t vectors_capable = 1;  // 1, 2, 4 .. 32
  uint32_t vectors_enabled = 1;
  bool is_64bit = false;
  bool per_vector_masking = false;
  uint64_t address = 0;
  uint16_t data = 0;
  uint32_t mask = 0;     // when per_vector_masking
  uint32_t pending = 0;  // when per_vector_masking
};
// The MSI capability at `offset`; nullopt when it does not fit in the data.
std::optional<MsiDecode> DecodeMsi(absl::string_view config, uint16_t offset);

struct MsixDecode {
  bool enable = false;
  bool function_mask = false;
  uint32_t table_size = 0;  // vectors
  uint8_t table_bir = 0;
  uint32_t table_offset = 0;
  uint8_t pba_bir = 0;
  uint32_t pba_offset = 0;
};
std::optional<MsixDecode> DecodeMsix(absl::string_view config, uint16_t offset);

struct FormatOptions {
  // Sizes of BAR0..BAR5 (e.g. from DeviceInfo regions); 0 when unknown.
  std::array<uint64_t, 6> bar_sizes = {};
  uint64_t rom_size = 0;
};

// A human-readable description in the manner of `lspci -vv`, one item per line.
std::string FormatConfig(absl::string_view config, const FormatOptions& options = {});
// The same content as one JSON object, by vfioctl's JSON convention (64-bit values, the BAR and
// MSI addresses and BAR sizes, as decimal strings).
std::string ConfigToJson(absl::string_view config, const FormatOptions& options = {});
// "00: 34 12 e8 11 ..." lines of 16 bytes, as `lspci -xxx`; `base` is the offset of data[0].
std::string HexDump(absl::string_view data, uint32_t base = 0);
// "1M", "4K", "256" as lspci prints BAR sizes.
std::string FormatSize(uint64_t size);

}  // namespace vfiod::client

#endif  // VFIOD_CLIENT_CONFIG_DECODE_H_
