// vfioctl's script commands: session (many commands on one connection), sleep and
// expect-error (a check that a command fails with a given gRPC code).
#include "client/cli/commands_script.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/cli/context.h"
#include "client/cli/output.h"
#include "client/cli_parse.h"

namespace vfiod::cli {
namespace {

// --- session --------------------------------------------------------------------------------

struct SessionArgs {
  bool keep_going = false;
  std::string path = "-";
};

void DeclareSession(CLI::App& app, SessionArgs& args) {
  app.add_flag("--keep-going", args.keep_going,
               "run every line; exit with the first failure's code");
  AddText(app, "FILE", &args.path, "the commands, one per line (default or -: stdin)");
  app.footer(
      "Blank lines and # comments are skipped; each command is echoed as \"> COMMAND\" (with\n"
      "--json as {\"command\": ..., \"line\": N}) before its output. The session stops at the\n"
      "first failing command, with its exit code. Ownership, guest memory, mappings and the\n"
      "watch stream last for the session; vfioctl releases them when it ends.");
}

absl::Status RunSession(Context& ctx, std::istream& in, bool keep_going) {
  int exit_code = kExitOk;
  int failures = 0;
  int commands = 0;
  int line_number = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++line_number;
    const std::vector<std::string> words = client::SplitSessionLine(line);
    if (words.empty()) continue;
    ++commands;
    const std::string text = absl::StrJoin(words, " ");
    ctx.out().Print(Json{{"command", text}, {"line", line_number}}, absl::StrCat("> ", text, "\n"));
    ctx.out().Flush();
    const int code =
        ctx.runner().RunAndReport(ctx, words, absl::StrCat("line ", line_number, ": "));
    if (code == kExitOk) continue;
    ++failures;
    if (exit_code == kExitOk) exit_code = code;
    // Without a connection, no later line can run.
    if (!keep_going || ctx.connect_failed()) {
      std::cerr << absl::StrFormat("vfioctl: session stopped at line %d\n", line_number);
      break;
    }
  }
  if (in.bad()) {
    std::cerr << "vfioctl: session: read error\n";
    if (exit_code == kExitOk) exit_code = kExitFailure;
  }
  if (keep_going && failures > 0) {
    std::cerr << absl::StrFormat("vfioctl: session: %d of %d commands failed\n", failures,
                                 commands);
  }
  return exit_code == kExitOk ? absl::OkStatus() : ReportedFailure(exit_code);
}

absl::Status Session(Context& ctx, const SessionArgs& args) {
  if (ctx.in_session()) return UsageError("sessions cannot be nested");
  if (ctx.depth() > 1) return UsageError("session must be the command itself, not an argument");
  std::ifstream file;
  std::istream* in = &std::cin;
  if (args.path != "-") {
    file.open(args.path);
    if (!file.is_open()) {
      const int error = errno;
      return absl::NotFoundError(
          absl::StrFormat("cannot open %s: %s", args.path, std::strerror(error)));
    }
    in = &file;
  }
  ctx.set_in_session(true);
  absl::Status status = RunSession(ctx, *in, args.keep_going);
  ctx.Finish();
  ctx.set_in_session(false);
  return status;
}

// --- sleep ----------------------------------------------------------------------------------

struct SleepArgs {
  absl::Duration duration;
};

void DeclareSleep(CLI::App& app, SleepArgs& args) {
  AddDuration(app, "DURATION", &args.duration, "e.g. 100ms")->required();
}

absl::Status Sleep(Context& ctx, const SleepArgs& args) {
  absl::SleepFor(args.duration);
  ctx.out().Done("");
  return absl::OkStatus();
}

// --- expect-error ---------------------------------------------------------------------------

struct ExpectErrorArgs {
  absl::StatusCode code = absl::StatusCode::kUnknown;
  std::vector<std::string> command;
};

void DeclareExpectError(CLI::App& app, ExpectErrorArgs& args) {
  app.add_option_function<std::string>(
         "CODE",
         [&args](const std::string& text) {
           absl::StatusOr<absl::StatusCode> code = client::ParseStatusCodeName(text);
           if (!code.ok()) throw CLI::ValidationError(std::string(code.status().message()));
           args.code = *code;
         },
         "the gRPC code COMMAND must fail with, e.g. PERMISSION_DENIED")
      ->required()
      ->type_name("");
  app.footer(
      "COMMAND...: the command that must fail, with its operands and flags, e.g.\n"
      "  vfioctl expect-error PERMISSION_DENIED region write32 0 0x04 1");
  // Everything after CODE is the command, flags included.
  app.prefix_command();
  app.parse_complete_callback([&app, &args] {
    args.command = app.remaining();
    if (args.command.empty()) throw CLI::ValidationError("COMMAND is required");
  });
}

absl::Status ExpectError(Context& ctx, const ExpectErrorArgs& args) {
  const absl::Status status = ctx.runner().Run(ctx, args.command);
  if (IsUsageError(status)) return status;
  const std::string expected = absl::StatusCodeToString(args.code);
  if (status.ok()) {
    return absl::FailedPreconditionError(absl::StrFormat("expected %s, but %s succeeded", expected,
                                                         absl::StrJoin(args.command, " ")));
  }
  if (status.code() != args.code) {
    return absl::FailedPreconditionError(absl::StrFormat("expected %s, got %s: %s", expected,
                                                         absl::StatusCodeToString(status.code()),
                                                         status.message()));
  }
  ctx.out().Print(Json{{"expectedError", expected}, {"message", std::string(status.message())}},
                  absl::StrFormat("failed as expected: %s: %s\n", expected, status.message()));
  return absl::OkStatus();
}

}  // namespace

std::vector<Command> ScriptCommands() {
  return {
      {"session", "[--keep-going] [FILE]",
       "run commands from FILE or stdin, one per line, all on one connection and fd channel",
       Role::kNone, /*fd_channel=*/false, Define(DeclareSession, Session)},
      {"sleep", "DURATION", "wait, e.g. 100ms", Role::kNone, /*fd_channel=*/false,
       Define(DeclareSleep, Sleep)},
      {"expect-error", "CODE COMMAND...",
       "succeed only if COMMAND fails with the gRPC code CODE, e.g. PERMISSION_DENIED", Role::kNone,
       /*fd_channel=*/false, Define(DeclareExpectError, ExpectError)},
  };
}

}  // namespace vfiod::cli
