// Parsing of vfioctl's arguments and session lines: numbers with 0x hex and K/M/G suffixes, IRQ
// indexes, hex byte strings, DMA access flags, gRPC status code names, and the split of a
// session line into words.
//
// Every function is pure (no I/O, no daemon) and thread-safe; errors are INVALID_ARGUMENT with a
// message fit for the user ("bad OFFSET \"0xzz\"").
#ifndef VFIOD_CLIENT_CLI_PARSE_H_
#define VFIOD_CLIENT_CLI_PARSE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::client {

// A number: decimal or 0x hex, optionally followed by a binary size suffix K, M or G (also
// lowercase): "4096", "0x1000", "4K", "0x10M". Overflow of 64 bits is an error. `what` names
// the argument in the error ("OFFSET").
absl::StatusOr<uint64_t> ParseNumber(absl::string_view text, absl::string_view what);
// The same, limited to 32 bits.
absl::StatusOr<uint32_t> ParseNumber32(absl::string_view text, absl::string_view what);

// "intx", "msi", "msix" (or "msi-x"), "err", "req", case-insensitive, or 0..4.
absl::StatusOr<v1::IrqIndex> ParseIrqIndex(absl::string_view text);

// An even, non-zero number of hex digits ("0102a0ff"), optionally after 0x.
absl::StatusOr<std::string> ParseHexBytes(absl::string_view text);

// Device access of a DMA mapping: "r", "w" or "rw" (also "wr").
struct DmaAccess {
  bool device_read = false;
  bool device_write = false;
};
absl::StatusOr<DmaAccess> ParseDmaAccess(absl::string_view text);

// A gRPC/absl status code by name, case-insensitive ("PERMISSION_DENIED", "not_found"); OK is
// not accepted (it is not an error).
absl::StatusOr<absl::StatusCode> ParseStatusCodeName(absl::string_view text);

// The words of one session line, split at spaces and tabs. A word starting with '#' starts a
// comment that runs to the end of the line. Blank and comment-only lines give no words.
std::vector<std::string> SplitSessionLine(absl::string_view line);

}  // namespace vfiod::client

#endif  // VFIOD_CLIENT_CLI_PARSE_H_
