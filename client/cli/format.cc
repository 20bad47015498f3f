#include "client/cli/format.h"

#include <cstdint>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {

const char* YesNo(bool value) { return value ? "yes" : "no"; }

std::string IrqIndexName(int index) {
  std::string name = v1::IrqIndex_Name(static_cast<v1::IrqIndex>(index));
  if (name.empty()) return absl::StrCat(index);
  return std::string(absl::StripPrefix(name, "IRQ_INDEX_"));
}

std::string EnumWord(const std::string& proto_name, absl::string_view prefix) {
  return absl::AsciiStrToLower(absl::StripPrefix(proto_name, prefix));
}

std::string HexDump64(absl::string_view data, uint64_t base) {
  std::string out;
  for (size_t line = 0; line < data.size(); line += 16) {
    absl::StrAppendFormat(&out, "%08x:", base + line);
    for (size_t i = line; i < line + 16 && i < data.size(); ++i) {
      absl::StrAppendFormat(&out, " %02x", static_cast<uint8_t>(data[i]));
    }
    out += "\n";
  }
  return out;
}

std::string IrqEventText(const v1::IrqEvent& event) {
  return absl::StrFormat("%d.%09d %s vector %d count %d", event.timestamp_ns() / 1000000000,
                         event.timestamp_ns() % 1000000000, IrqIndexName(event.index()),
                         event.vector(), event.count());
}

}  // namespace vfiod::cli
