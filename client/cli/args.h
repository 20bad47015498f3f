// vfioctl's operand and flag types on CLI11: each Add* declares one operand (NAME) or flag
// (--name) whose text is parsed by client/cli_parse.h into `*value`, so every command accepts
// numbers, IRQ indexes and durations the same way. A malformed value is a CLI11 ValidationError
// naming the operand ("bad OFFSET \"0xzz\""); the caller chains ->required() for operands that
// must be present, and presets `*value` for the default of an optional one.
//
// `*value` must outlive the parse (commands bind it to storage their handler owns).
#ifndef VFIOD_CLIENT_CLI_ARGS_H_
#define VFIOD_CLIENT_CLI_ARGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/time/time.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {

// A number: decimal or 0x hex, optionally with a size suffix K, M or G (client::ParseNumber).
CLI::Option* AddNumber(CLI::App& app, const std::string& name, uint64_t* value,
                       const std::string& help);
// A number that may be left out (then `value` stays nullopt).
CLI::Option* AddOptionalNumber(CLI::App& app, const std::string& name,
                               std::optional<uint64_t>* value, const std::string& help);
// The same, at most 32 bits.
CLI::Option* AddNumber32(CLI::App& app, const std::string& name, uint32_t* value,
                         const std::string& help);
// An IRQ index: intx, msi, msix, err, req or 0..4.
CLI::Option* AddIrqIndex(CLI::App& app, const std::string& name, v1::IrqIndex* value,
                         const std::string& help);
// Zero or more IRQ indexes (an operand list: INDEX...).
CLI::Option* AddIrqIndexes(CLI::App& app, const std::string& name,
                           std::vector<v1::IrqIndex>* values, const std::string& help);
// A duration >= 0: 500ms, 5s, 1m (absl::ParseDuration).
CLI::Option* AddDuration(CLI::App& app, const std::string& name, absl::Duration* value,
                         const std::string& help);
// A plain word, unparsed.
CLI::Option* AddText(CLI::App& app, const std::string& name, std::string* value,
                     const std::string& help);

// The name an operand or flag has in messages: "OFFSET", "--count".
std::string ArgName(const CLI::Option& option);

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_ARGS_H_
