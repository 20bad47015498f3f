#include "daemon/vfio/pci_address.h"

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace vfiod {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Exactly `min_digits` to `max_digits` hex digits and nothing else (max_digits <= 8).
bool ParseHexField(absl::string_view text, size_t min_digits, size_t max_digits, uint32_t* value) {
  if (text.size() < min_digits || text.size() > max_digits) return false;
  uint32_t result = 0;
  for (char c : text) {
    const int digit = HexValue(c);
    if (digit < 0) return false;
    result = (result << 4) | static_cast<uint32_t>(digit);
  }
  *value = result;
  return true;
}

absl::Status BadAddress(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("\"", absl::CHexEscape(text), "\" is not a PCI address (", why,
                   "; expected DDDD:BB:DD.F or BB:DD.F in hex, e.g. 0000:00:03.0)"));
}

}  // namespace

std::string PciAddress::ToString() const {
  return absl::StrFormat("%04x:%02x:%02x.%d", domain, bus, device, function);
}

absl::StatusOr<PciAddress> ParsePciAddress(absl::string_view text) {
  if (text.empty()) return BadAddress(text, "empty");
  if (text.size() > 16) return BadAddress(text, "too long");
  std::vector<absl::string_view> fields = absl::StrSplit(text, ':');
  absl::string_view domain_text = "0000";
  if (fields.size() == 3) {
    domain_text = fields[0];
    fields.erase(fields.begin());
  } else if (fields.size() != 2) {
    return BadAddress(text, "wrong number of ':' separators");
  }
  std::vector<absl::string_view> slot = absl::StrSplit(fields[1], '.');
  if (slot.size() != 2) return BadAddress(text, "missing or repeated '.' before the function");

  PciAddress address;
  uint32_t bus, device, function;
  if (!ParseHexField(domain_text, 4, 8, &address.domain)) {
    return BadAddress(text, "the domain must be 4 to 8 hex digits");
  }
  if (!ParseHexField(fields[0], 2, 2, &bus)) {
    return BadAddress(text, "the bus must be 2 hex digits");
  }
  if (!ParseHexField(slot[0], 2, 2, &device) || device > 0x1f) {
    return BadAddress(text, "the device must be 2 hex digits, at most 1f");
  }
  if (!ParseHexField(slot[1], 1, 1, &function) || function > 7) {
    return BadAddress(text, "the function must be one digit 0-7");
  }
  address.bus = static_cast<uint8_t>(bus);
  address.device = static_cast<uint8_t>(device);
  address.function = static_cast<uint8_t>(function);
  return address;
}

}  // namespace vfiod
