// PciAddress: a PCI function's address in the form sysfs and VFIO use, "DDDD:BB:DD.F".
#ifndef VFIOD_DAEMON_VFIO_PCI_ADDRESS_H_
#define VFIOD_DAEMON_VFIO_PCI_ADDRESS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vfiod {

struct PciAddress {
  uint32_t domain = 0;
  uint8_t bus = 0;
  uint8_t device = 0;    // 0..31
  uint8_t function = 0;  // 0..7

  // The kernel's device name: "%04x:%02x:%02x.%d" (lower-case hex, the domain as wide as it
  // needs beyond 4 digits). This is the name VFIO_GROUP_GET_DEVICE_FD expects.
  std::string ToString() const;

  friend bool operator==(const PciAddress& a, const PciAddress& b) {
    return a.domain == b.domain && a.bus == b.bus && a.device == b.device &&
           a.function == b.function;
  }
};

// Parses "DDDD:BB:DD.F" (domain of 4 to 8 hex digits) or "BB:DD.F" (domain 0000). Hex digits
// of either case; bus and device exactly 2 digits, device at most 0x1f; function one digit
// 0-7. Nothing else is accepted: no signs, spaces, prefixes or trailing characters.
// INVALID_ARGUMENT names the text and the expected form.
absl::StatusOr<PciAddress> ParsePciAddress(absl::string_view text);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_PCI_ADDRESS_H_
