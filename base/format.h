// Small text helpers for status messages, shared by every daemon layer and the client library.
#ifndef VFIOD_BASE_FORMAT_H_
#define VFIOD_BASE_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace vfiod {

// "0x1f": `value` in lower-case hexadecimal with a 0x prefix and no padding.
inline std::string Hex(uint64_t value) { return absl::StrCat("0x", absl::Hex(value)); }

// `status` with "<prefix>: " put before its message and its code kept; an OK status is returned
// unchanged, so that Annotate(Call(), "what") may wrap any call.
inline absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(prefix, ": ", status.message()));
}

}  // namespace vfiod

#endif  // VFIOD_BASE_FORMAT_H_
