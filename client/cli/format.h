// Text formatting shared by vfioctl's commands: hex numbers, enum names, hex dumps, IRQ events.
// Pure functions, thread-safe.
#ifndef VFIOD_CLIENT_CLI_FORMAT_H_
#define VFIOD_CLIENT_CLI_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "base/format.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {

// "0x1f" (base/format.h).
using ::vfiod::Hex;
const char* YesNo(bool value);

// "MSI", "INTX"; the number for an index the proto does not name.
std::string IrqIndexName(int index);
// An enum value's proto name without `prefix`, lowercase: ("ROLE_OWNER", "ROLE_") -> "owner".
std::string EnumWord(const std::string& proto_name, absl::string_view prefix);

// "00000000: 03 0a 11 ..." lines of 16 bytes; `base` is the offset of data[0].
std::string HexDump64(absl::string_view data, uint64_t base);

// "12.000345678 MSI vector 2 count 1".
std::string IrqEventText(const v1::IrqEvent& event);

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_FORMAT_H_
