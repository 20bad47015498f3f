#include "client/cli_parse.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace vfiod::client {

absl::StatusOr<uint64_t> ParseNumber(absl::string_view text, absl::string_view what) {
  const absl::string_view original = text;
  auto bad = [&](absl::string_view why = "") {
    return absl::InvalidArgumentError(absl::StrCat("bad ", what, " \"", original, "\"", why));
  };
  int shift = 0;
  if (!text.empty()) {
    switch (absl::ascii_tolower(static_cast<unsigned char>(text.back()))) {
      case 'k':
        shift = 10;
        break;
      case 'm':
        shift = 20;
        break;
      case 'g':
        shift = 30;
        break;
      default:
        break;
    }
    if (shift != 0) text.remove_suffix(1);
  }
  uint64_t value = 0;
  bool ok;
  if (absl::StartsWithIgnoreCase(text, "0x")) {
    text.remove_prefix(2);
    ok = !text.empty() && text.size() <= 16;
    for (char c : text) {
      if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) ok = false;
    }
    if (ok) ok = absl::SimpleHexAtoi(text, &value);
  } else {
    ok = !text.empty();
    for (char c : text) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) ok = false;
    }
    if (ok) ok = absl::SimpleAtoi(text, &value);
  }
  if (!ok) return bad();
  if (shift != 0 && value > (UINT64_MAX >> shift)) return bad(" (overflows 64 bits)");
  return value << shift;
}

absl::StatusOr<uint32_t> ParseNumber32(absl::string_view text, absl::string_view what) {
  absl::StatusOr<uint64_t> value = ParseNumber(text, what);
  if (!value.ok()) return value.status();
  if (*value > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", text, " does not fit 32 bits"));
  }
  return static_cast<uint32_t>(*value);
}

absl::StatusOr<v1::IrqIndex> ParseIrqIndex(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  static constexpr struct {
    const char* name;
    v1::IrqIndex index;
  } kNames[] = {{"intx", v1::IRQ_INDEX_INTX}, {"msi", v1::IRQ_INDEX_MSI},
                {"msix", v1::IRQ_INDEX_MSIX}, {"msi-x", v1::IRQ_INDEX_MSIX},
                {"err", v1::IRQ_INDEX_ERR},   {"req", v1::IRQ_INDEX_REQ}};
  for (const auto& entry : kNames) {
    if (lower == entry.name) return entry.index;
  }
  uint32_t number;
  if (absl::SimpleAtoi(text, &number) && v1::IrqIndex_IsValid(static_cast<int>(number))) {
    return static_cast<v1::IrqIndex>(number);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad IRQ index \"", text, "\" (intx, msi, msix, err, req or 0..4)"));
}

absl::StatusOr<std::string> ParseHexBytes(absl::string_view text) {
  if (absl::StartsWithIgnoreCase(text, "0x")) text.remove_prefix(2);
  if (text.empty() || text.size() % 2 != 0) {
    return absl::InvalidArgumentError("HEXBYTES needs an even, non-zero number of hex digits");
  }
  std::string bytes;
  for (size_t i = 0; i < text.size(); i += 2) {
    int value = 0;
    for (size_t j = i; j < i + 2; ++j) {
      const char c = absl::ascii_tolower(static_cast<unsigned char>(text[j]));
      if (c >= '0' && c <= '9') {
        value = value * 16 + (c - '0');
      } else if (c >= 'a' && c <= 'f') {
        value = value * 16 + (c - 'a' + 10);
      } else {
        return absl::InvalidArgumentError(absl::StrCat("bad hex digit '", std::string(1, c), "'"));
      }
    }
    bytes.push_back(static_cast<char>(value));
  }
  return bytes;
}

absl::StatusOr<DmaAccess> ParseDmaAccess(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "r") return DmaAccess{true, false};
  if (lower == "w") return DmaAccess{false, true};
  if (lower == "rw" || lower == "wr") return DmaAccess{true, true};
  return absl::InvalidArgumentError(absl::StrCat("bad access \"", text, "\" (r, w or rw)"));
}

absl::StatusOr<absl::StatusCode> ParseStatusCodeName(absl::string_view text) {
  const std::string upper = absl::AsciiStrToUpper(text);
  // absl::StatusCode's values are the gRPC codes 1..16.
  for (int code = 1; code <= 16; ++code) {
    const auto status_code = static_cast<absl::StatusCode>(code);
    if (upper == absl::StatusCodeToString(status_code)) return status_code;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "bad status code \"", text, "\" (a gRPC code name such as PERMISSION_DENIED, NOT_FOUND)"));
}

std::vector<std::string> SplitSessionLine(absl::string_view line) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    if (i == line.size() || line[i] == '#') break;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    words.emplace_back(line.substr(start, i - start));
  }
  return words;
}

}  // namespace vfiod::client
