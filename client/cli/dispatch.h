// Dispatcher: vfioctl's command line. Builds a CLI11 parser from the command table (each
// command's words, operands and flags), parses a command line with it, connects as the
// command's Role needs and runs its handler; reports errors and turns them into exit codes.
// Global options (--socket, --json, --timeout, --claim) come before the command; session lines
// are parsed the same way, without them.
//
// Error lines on stderr name the command and the operand or flag:
//   vfioctl: region read32: bad OFFSET "0xzz"                  (usage: exit 2)
//   vfioctl: line 3: region write32: PERMISSION_DENIED: ...    (the daemon's code: exit 1)
//
// Not thread-safe.
#ifndef VFIOD_CLIENT_CLI_DISPATCH_H_
#define VFIOD_CLIENT_CLI_DISPATCH_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "client/cli/command.h"
#include "client/cli/context.h"

namespace vfiod::cli {

class Dispatcher : public LineRunner {
 public:
  explicit Dispatcher(std::vector<Command> commands);

  // The whole program: `args` (without the program name) are global options, then a command.
  // Prints the command's output and errors; returns the exit code (command.h). `__complete
  // WORDS...` prints Complete(WORDS), one per line (client/vfioctl_completion.bash).
  int Main(const std::vector<std::string>& args);

  // LineRunner.
  absl::Status Run(Context& ctx, const std::vector<std::string>& words) override;
  int RunAndReport(Context& ctx, const std::vector<std::string>& words,
                   absl::string_view where) override;

  // `vfioctl --help`: the global options, every command with its synopsis, the conventions and
  // the exit codes.
  std::string Help() const;

  // What may follow `words` (the words typed so far, without the program name and the word
  // being completed): commands, subcommands, flags, or gRPC code names after expect-error.
  // Empty where a value is expected (a file, a number): the shell completes file names.
  std::vector<std::string> Complete(const std::vector<std::string>& words) const;

  // The synopsis of `command` as its `define` declares the operands and flags, in the form of
  // Command::synopsis ("[--raw] INDEX [TIMEOUT] [INDEX...]").
  static std::string DeclaredSynopsis(const Command& command);

 private:
  // One command line's parse: a CLI11 tree built from the table (dispatch.cc).
  class Parser;
  // A command's result, with its name for messages.
  struct Outcome;

  // Connects as the parsed command needs and runs it.
  Outcome RunParsed(Context& ctx, Parser& parser);
  // Complete() after the global options: `words` start with the command.
  static std::vector<std::string> CompleteCommand(const Parser& parser,
                                                  const std::vector<std::string>& words);
  // Prints `outcome`'s error, if any, and returns its exit code.
  int Report(Context& ctx, const Outcome& outcome, absl::string_view where);

  const std::vector<Command> commands_;
};

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_DISPATCH_H_
