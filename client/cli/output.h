// vfioctl's output: text for people, or with --json one JSON value per line for programs.
//
// The JSON convention (README.md, section "vfioctl", JSON), the same for every command:
//  - Proto messages (info, state, irq events, dma unmap) are printed by protobuf's JSON printer
//    (the proto3 JSON mapping) with every field present, zero or not.
//  - Everything else is built with nlohmann::json by the same rules:
//    - keys are lowerCamelCase, as the proto3 mapping names proto fields;
//    - integers of 64 bits (addresses, IOVAs, offsets, sizes, memory ids, counters, timestamps)
//      are decimal strings ("4096"), as the proto3 mapping prints int64/uint64: exact in every
//      JSON parser, where numbers above 2^53 lose precision in many; build them with Json64();
//    - integers of 32 bits or fewer (region and IRQ indexes, vectors, config offsets and
//      values, register values) are numbers;
//    - byte strings (region and memory contents, config space) are lowercase hex ("5a00ff").
//  - A command with nothing to report prints {}.
// Not thread-safe; one Output per vfioctl.
#ifndef VFIOD_CLIENT_CLI_OUTPUT_H_
#define VFIOD_CLIENT_CLI_OUTPUT_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

namespace vfiod::cli {

// vfioctl's JSON values: nlohmann's, keeping keys in the order they were added.
using Json = nlohmann::ordered_json;

// A 64-bit integer in vfioctl's JSON: a decimal string.
Json Json64(uint64_t value);
// Bytes in vfioctl's JSON: lowercase hex, two digits a byte.
std::string HexBytes(absl::string_view data);
// `message` by protobuf's JSON printer (proto field names in lowerCamelCase, every field
// printed), as one line.
std::string ProtoJson(const google::protobuf::Message& message);
// The same, as a value to embed in other JSON (vfioctl top).
Json ProtoToJsonValue(const google::protobuf::Message& message);

class Output {
 public:
  // `json`: print JSON (--json) rather than text. Writes to `out`, which must outlive this.
  explicit Output(bool json, std::ostream& out);

  bool json() const { return json_; }
  // Prints `value` as one line in JSON mode, else `text` (given with its trailing newline).
  void Print(const Json& value, absl::string_view text);
  // Prints `message` by ProtoJson() in JSON mode, else `text`.
  void Print(const google::protobuf::Message& message, absl::string_view text);
  // A command that reports nothing: {} in JSON mode, else the line `text` (none when empty).
  void Done(absl::string_view text);
  // Raw text in either mode (session echo, top's screen control).
  void Raw(absl::string_view text);
  void Flush();

 private:
  const bool json_;
  std::ostream& out_;
};

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_OUTPUT_H_
