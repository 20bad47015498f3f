// PCI configuration space: validation of client accesses, register access through the
// backend's config region, and the one-time decode of the device (standard header, BARs,
// capability lists).
//
// The decoders treat the device as untrusted too: every pointer read from config space is
// bounds-checked and every chain walk is bounded, so a malformed or hostile device yields a
// shortened description and a logged warning, never a loop or an out-of-bounds read.
//
// Thread-safety: the free functions hold no state. Those taking a DeviceBackend are as
// thread-safe as the backend, but SizeBars() writes BAR registers and must not run concurrently
// with other config writes.
#ifndef VFIOD_DAEMON_PCI_CONFIG_SPACE_H_
#define VFIOD_DAEMON_PCI_CONFIG_SPACE_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "daemon/backend/device_backend.h"
#include "daemon/pci/pci_device.h"

namespace vfiod {

// Standard capabilities live in [0x40, 0x100); extended ones in [0x100, 0x1000).
inline constexpr uint32_t kMaxStandardCapabilities = 48;  // Linux's PCI_FIND_CAP_TTL

// A client's config access of `size` bytes at `offset`: INVALID_ARGUMENT for a width other
// than 1, 2 or 4 or an offset not naturally aligned; OUT_OF_RANGE when the access does not lie
// inside [0, config_size). `operation` prefixes the message ("ReadConfig: ...").
absl::Status ValidateConfigAccess(absl::string_view operation, uint32_t offset, uint32_t size,
                                  uint32_t config_size);

// A bulk config read: `offset` and `length` dword-aligned, inside [0, config_size); length 0
// means to the end. Returns the effective length.
absl::StatusOr<uint32_t> ValidateConfigDump(uint32_t offset, uint32_t length, uint32_t config_size);

// Little-endian register access through the backend's config region. The caller validates.
absl::StatusOr<uint32_t> ReadConfigRegister(DeviceBackend& backend, uint32_t offset, uint32_t size);
absl::Status WriteConfigRegister(DeviceBackend& backend, uint32_t offset, uint32_t size,
                                 uint32_t value);

// The config region's size from the backend: FAILED_PRECONDITION unless the region exists,
// is readable and writable, and is between 256 and 4096 bytes.
absl::StatusOr<uint32_t> ConfigSpaceSize(const BackendInfo& info);

// Fills the ids, class code, revision and header type from a config-space snapshot of at
// least 64 bytes.
void DecodeHeader(absl::Span<const uint8_t> config, DeviceDescription* description);

// Sizes BAR0..BAR5 and the ROM BAR the way crosvm's allocate_io_bars does: for each register
// write all-ones, read back, restore the original value (the upper register too for a 64-bit
// BAR, which then occupies two slots). I/O vs memory, 32/64-bit, prefetchable and the current
// address come from the original value. Header type 1 (bridge) has BAR0..1 and its ROM at
// 0x38; other non-zero header types have no BARs. A decoded size that disagrees with the
// backend's region size is logged. Fails only when the backend fails.
absl::StatusOr<std::array<std::optional<Bar>, 7>> SizeBars(DeviceBackend& backend,
                                                           uint8_t header_type);

// Walks the standard capability list from the snapshot's capability pointer (0x34, or 0x14 for
// a CardBus header) when the status register announces one. A pointer below 0x40, an id of
// 0xff or a next pointer of 0 ends the list; an unaligned pointer, a revisited one, or more
// than kMaxStandardCapabilities entries cut it with a warning.
std::vector<Capability> WalkCapabilities(absl::Span<const uint8_t> config);

// Walks the extended capability list from 0x100 when the snapshot is larger than 256 bytes.
// A header of 0 or all-ones at 0x100 means none; a next pointer of 0 ends the list; a next
// pointer below 0x100, unaligned, beyond the snapshot or revisited cuts it with a warning.
std::vector<Capability> WalkExtendedCapabilities(absl::Span<const uint8_t> config);

// "Power Management", "MSI", "MSI-X", "Express", "Vendor-Specific", ...; "Unknown" otherwise.
std::string CapabilityName(uint16_t id);
// "AER", "Device Serial Number", "SR-IOV", ...; "Unknown" otherwise.
std::string ExtendedCapabilityName(uint16_t id);

// Everything above for one device: the config size, a snapshot, the header, the BARs and
// both capability lists. `description->backend` is set to backend.Info().
absl::StatusOr<DeviceDescription> DescribeDevice(DeviceBackend& backend);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_PCI_CONFIG_SPACE_H_
