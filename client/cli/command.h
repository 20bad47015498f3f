// One row of vfioctl's command table (command_table.h lists them all), and vfioctl's exit codes.
//
// A command is data: the words that select it, its synopsis and summary (the command list of
// `vfioctl --help`), the role it needs on the daemon, whether it passes fds, and `define`, which
// declares its operands and flags on a CLI11 parser and returns the handler that runs with the
// parsed values. Each command group (commands_*.cc) returns its rows; nothing else names them.
#ifndef VFIOD_CLIENT_CLI_COMMAND_H_
#define VFIOD_CLIENT_CLI_COMMAND_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace vfiod::cli {

class Context;

// vfioctl's exit codes. `vfioctl --help` and README.md's vfioctl section document them.
inline constexpr int kExitOk = 0;
// The daemon refused (the gRPC code and message are printed), the connection failed, or a check
// failed (region poll32, memory compare, expect-error).
inline constexpr int kExitFailure = 1;
// A bad command line: unknown command or flag, missing or malformed operand.
inline constexpr int kExitUsage = 2;

// What a command needs before its handler runs.
enum class Role {
  // No daemon connection: local work (sleep, memory fill/dump/compare) or connections of its
  // own (list).
  kNone,
  // A connection; any session may run it.
  kObserver,
  // A connection whose session owns the device (--claim, or `claim` earlier in a session). The
  // daemon enforces it (PERMISSION_DENIED); vfioctl only adds a hint to that error.
  kOwner,
};

// Runs a parsed command in `ctx`. Returns the daemon's status unchanged, or UsageError() for a
// bad argument found only at run time (an unknown memory NAME). Prints its own output.
using Handler = std::function<absl::Status(Context& ctx)>;

struct Command {
  // The words that select it: "info", "region read32".
  std::string name;
  // Its operands and flags as --help shows them: "INDEX OFFSET [TIMEOUT]". command_table_test
  // checks it against what `define` declares.
  std::string synopsis;
  // One line for the command list (`vfioctl --help`) and the command's own --help.
  std::string summary;
  Role role = Role::kObserver;
  // Connect the fd channel too (the command passes fds to the daemon).
  bool fd_channel = false;
  // Declares the operands and flags on `app` (CLI11), bound to storage the returned handler
  // owns, and returns that handler. Called once per command line parsed, so every run has fresh
  // values. Validation that only needs the arguments belongs here (throw
  // CLI::ValidationError), so usage errors never wait for a connection.
  std::function<Handler(CLI::App& app)> define;
};

// The usual `define`: a command's operands live in an `Args` struct; `declare` binds them on the
// CLI11 parser (args.h), `run` runs with the parsed values. Each parse gets a fresh Args.
template <typename Args>
std::function<Handler(CLI::App&)> Define(void (*declare)(CLI::App& app, Args& args),
                                         absl::Status (*run)(Context& ctx, const Args& args)) {
  return [declare, run](CLI::App& app) -> Handler {
    auto args = std::make_shared<Args>();
    declare(app, *args);
    return [args, run](Context& ctx) { return run(ctx, *args); };
  };
}
// For a command without operands or flags.
inline std::function<Handler(CLI::App&)> Define(absl::Status (*run)(Context& ctx)) {
  return [run](CLI::App&) -> Handler { return run; };
}

// A usage error found by a handler: INVALID_ARGUMENT, marked as vfioctl's own so that it exits
// with kExitUsage (the daemon's INVALID_ARGUMENT exits with kExitFailure).
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

// A failure the handler has reported on stderr already, to exit with `exit_code` and print
// nothing more (session: each failing line was reported as it ran).
absl::Status ReportedFailure(int exit_code);
// The exit code of a ReportedFailure(); nullopt for any other status.
std::optional<int> ReportedExitCode(const absl::Status& status);

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_COMMAND_H_
