#include "client/cli/args.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/cli_parse.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {
namespace {

template <typename T>
T OrThrow(absl::StatusOr<T> value) {
  if (!value.ok()) throw CLI::ValidationError(std::string(value.status().message()));
  return *std::move(value);
}

// An operand or flag whose text `parse` turns into *value.
template <typename T, typename Parse>
CLI::Option* Add(CLI::App& app, const std::string& name, T* value, const std::string& help,
                 const std::string& type_name, Parse parse) {
  CLI::Option* option = app.add_option_function<std::string>(
      name, [value, parse](const std::string& text) { *value = OrThrow(parse(text)); }, help);
  // The operand's own name says what it is; flags show their value's kind.
  option->type_name(option->get_positional() ? "" : type_name);
  return option;
}

// The name parse errors give: the operand ("OFFSET") or the first flag name ("--count").
std::string MessageName(const std::string& name) {
  const size_t comma = name.find(',');
  return comma == std::string::npos ? name : name.substr(0, comma);
}

}  // namespace

CLI::Option* AddOptionalNumber(CLI::App& app, const std::string& name,
                               std::optional<uint64_t>* value, const std::string& help) {
  return app
      .add_option_function<std::string>(
          name,
          [value, name](const std::string& text) {
            absl::StatusOr<uint64_t> number = client::ParseNumber(text, name);
            if (!number.ok()) throw CLI::ValidationError(std::string(number.status().message()));
            *value = *number;
          },
          help)
      ->type_name("N");
}

CLI::Option* AddNumber(CLI::App& app, const std::string& name, uint64_t* value,
                       const std::string& help) {
  const std::string what = MessageName(name);
  return Add(app, name, value, help, "N",
             [what](const std::string& text) { return client::ParseNumber(text, what); });
}

CLI::Option* AddNumber32(CLI::App& app, const std::string& name, uint32_t* value,
                         const std::string& help) {
  const std::string what = MessageName(name);
  return Add(app, name, value, help, "N",
             [what](const std::string& text) { return client::ParseNumber32(text, what); });
}

CLI::Option* AddIrqIndex(CLI::App& app, const std::string& name, v1::IrqIndex* value,
                         const std::string& help) {
  return Add(app, name, value, help, "INDEX",
             [](const std::string& text) { return client::ParseIrqIndex(text); });
}

CLI::Option* AddIrqIndexes(CLI::App& app, const std::string& name,
                           std::vector<v1::IrqIndex>* values, const std::string& help) {
  CLI::Option* option = app.add_option_function<std::vector<std::string>>(
      name,
      [values](const std::vector<std::string>& texts) {
        for (const std::string& text : texts) {
          values->push_back(OrThrow(client::ParseIrqIndex(text)));
        }
      },
      help);
  option->type_name("");
  return option;
}

CLI::Option* AddDuration(CLI::App& app, const std::string& name, absl::Duration* value,
                         const std::string& help) {
  return Add(app, name, value, help, "DURATION",
             [](const std::string& text) -> absl::StatusOr<absl::Duration> {
               absl::Duration duration;
               if (!absl::ParseDuration(text, &duration) || duration < absl::ZeroDuration()) {
                 return absl::InvalidArgumentError(
                     absl::StrCat("bad duration \"", text, "\" (e.g. 500ms, 5s)"));
               }
               return duration;
             });
}

CLI::Option* AddText(CLI::App& app, const std::string& name, std::string* value,
                     const std::string& help) {
  CLI::Option* option = app.add_option(name, *value, help);
  option->type_name(option->get_positional() ? "" : "TEXT");
  return option;
}

std::string ArgName(const CLI::Option& option) {
  return option.get_positional() ? option.get_name(true) : option.get_name();
}

}  // namespace vfiod::cli
