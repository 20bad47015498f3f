#include "client/cli/dispatch.h"

#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/cli/context.h"

namespace vfiod::cli {
namespace {

constexpr char kDescription[] =
    "vfioctl: the operator CLI of vfiod. One vfioctl is one connection (one session on the "
    "daemon); `session` runs many commands on it.";

constexpr char kShortUsage[] =
    "usage: vfioctl [--socket PATH] [--json] [--timeout 5s] [--claim] COMMAND ...\n"
    "       vfioctl --help lists the commands; vfioctl COMMAND --help describes one\n";

constexpr char kConventions[] = R"(
Numbers accept 0x for hex and the size suffixes K, M, G (64K = 65536). IRQ INDEX: intx, msi,
msix, err, req or 0..4. Durations: 500ms, 3s, 1m. (owner): the command needs ownership: --claim,
or claim earlier in the session; ownership ends when vfioctl exits.

Sessions: blank lines and # comments are skipped; each command is echoed as "> COMMAND" (with
--json as {"command": ..., "line": N}) before its output. The session stops at the first
failing command with its exit code, or with --keep-going runs every line and exits with the
first failure's code. Ownership, guest memory, mappings and the watch stream last for the
session. A memory ID is the number the daemon returned or the NAME given to memory create.

JSON (--json): one value per line; 64-bit integers (addresses, offsets, sizes, ids, counters)
are decimal strings, narrower ones numbers, bytes lowercase hex (README.md, vfioctl).

Exit codes: 0 success; 1 the daemon refused (its gRPC code and message are printed), the
connection failed, or a check failed; 2 usage error.
)";

std::string RoleNote(Role role) { return role == Role::kOwner ? " (owner)" : ""; }

// The words of a command path: "region read32" -> {"region", "read32"}.
std::vector<std::string> Words(const std::string& name) { return absl::StrSplit(name, ' '); }

// `text` in lines of at most `width` characters, broken at spaces.
std::vector<std::string> Wrap(const std::string& text, size_t width) {
  std::vector<std::string> lines(1);
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!lines.back().empty() && lines.back().size() + 1 + word.size() > width)
      lines.emplace_back();
    absl::StrAppend(&lines.back(), lines.back().empty() ? "" : " ", word);
  }
  return lines;
}

// The end of `vfioctl --help`: every command with its synopsis and summary, the conventions.
std::string CommandList(const std::vector<Command>& commands) {
  constexpr size_t kColumn = 40;
  constexpr size_t kWidth = 100;
  std::string out = "\nCommands (vfioctl COMMAND --help describes one):\n";
  for (const Command& command : commands) {
    const std::string left =
        absl::StrCat("  ", command.name, command.synopsis.empty() ? "" : " ", command.synopsis);
    const std::string indent(kColumn, ' ');
    out += left.size() + 1 > kColumn ? absl::StrCat(left, "\n", indent)
                                     : absl::StrCat(left, std::string(kColumn - left.size(), ' '));
    out +=
        absl::StrJoin(Wrap(absl::StrCat(command.summary, RoleNote(command.role)), kWidth - kColumn),
                      absl::StrCat("\n", indent));
    out += "\n";
  }
  out += kConventions;
  return out;
}

}  // namespace

// One parse of one command line: the CLI11 tree of every command, with fresh storage for the
// operands and flags. Build one per line.
class Dispatcher::Parser {
 public:
  // `globals`: bind the global options to it; null for session lines.
  Parser(const std::vector<Command>& commands, GlobalOptions* globals)
      : commands_(commands), root_(std::make_unique<CLI::App>(kDescription, "vfioctl")) {
    root_->require_subcommand(0, 1);
    if (globals != nullptr) {
      root_->add_option("--socket", globals->socket, "the daemon's socket")
          ->envname("VFIOD_SOCKET")
          ->type_name("PATH");
      root_->add_flag("--json", globals->json, "machine-readable output, one JSON value a line");
      AddDuration(*root_, "--timeout", &globals->timeout,
                  "deadline of each call and of connecting (default 5s)");
      root_->add_flag("--claim", globals->claim,
                      "claim ownership first, in this connection (owner commands need it)");
    }
    for (const Command& command : commands) {
      CLI::App* node = root_.get();
      std::string path;
      for (const std::string& word : Words(command.name)) {
        path = path.empty() ? word : absl::StrCat(path, " ", word);
        auto it = nodes_.find(path);
        if (it == nodes_.end()) {
          CLI::App* child = node->add_subcommand(word, "");
          child->require_subcommand(0, 1);
          it = nodes_.emplace(path, child).first;
          paths_[child] = path;
        }
        node = it->second;
      }
      node->description(absl::StrCat(command.summary, RoleNote(command.role)));
      leaves_[node] = Leaf{&command, command.define(*node)};
    }
    // After the subcommands, which would inherit them. The root's help lists the commands from
    // the table (its footer), so CLI11's list of them is hidden.
    for (const auto& [path, node] : nodes_) {
      if (node->get_parent() == root_.get()) node->group("");
    }
    root_->footer(CommandList(commands));
    root_->set_help_flag("-h,--help", "this help; COMMAND --help describes one command");
    // A group that is not a command itself describes its subcommands.
    for (const auto& [path, node] : nodes_) {
      if (leaves_.count(node) != 0) continue;
      std::vector<std::string> subcommands;
      for (const CLI::App* sub : node->get_subcommands({})) subcommands.push_back(sub->get_name());
      node->description(absl::StrCat(path, " commands: ", absl::StrJoin(subcommands, ", ")));
    }
  }

  CLI::App& root() { return *root_; }
  const std::vector<Command>& commands() const { return commands_; }

  // Parses `words` (command first, or global options first with `globals`). OK: the command
  // is command() and handler() runs it; help(): --help was asked for, its text is help_text().
  // Errors are UsageError()s.
  absl::Status Parse(const std::vector<std::string>& words) {
    std::vector<std::string> reversed(words.rbegin(), words.rend());
    try {
      root_->parse(reversed);
    } catch (const CLI::CallForHelp&) {
      help_ = true;
      help_text_ = root_->help();
      return absl::OkStatus();
    } catch (const CLI::CallForAllHelp&) {
      help_ = true;
      help_text_ = root_->help();
      return absl::OkStatus();
    } catch (const CLI::ParseError& error) {
      return ParseErrorStatus(error);
    }
    CLI::App* node = Deepest();
    name_ = PathOf(node);
    auto leaf = leaves_.find(node);
    if (leaf == leaves_.end()) {
      if (node == root_.get()) return UsageError("no command");
      std::vector<std::string> subcommands;
      for (const CLI::App* sub : node->get_subcommands({})) subcommands.push_back(sub->get_name());
      return UsageError(
          absl::StrCat("which one? ", name_, " ", absl::StrJoin(subcommands, "|"), " ..."));
    }
    command_ = leaf->second.command;
    handler_ = leaf->second.handler;
    return absl::OkStatus();
  }

  // The command's words as far as they were recognized ("region read32"; "" at the root).
  const std::string& name() const { return name_; }
  const Command* command() const { return command_; }
  const Handler& handler() const { return handler_; }
  bool help() const { return help_; }
  const std::string& help_text() const { return help_text_; }

  // The node of a command path, or null.
  CLI::App* Node(const std::string& path) const {
    auto it = nodes_.find(path);
    return it == nodes_.end() ? nullptr : it->second;
  }
  bool IsCommand(const CLI::App* node) const { return leaves_.count(node) != 0; }

 private:
  struct Leaf {
    const Command* command;
    Handler handler;
  };

  // The last subcommand selected, or the root.
  CLI::App* Deepest() const {
    CLI::App* node = root_.get();
    while (!node->get_subcommands().empty()) node = node->get_subcommands().front();
    return node;
  }

  std::string PathOf(const CLI::App* node) const {
    auto it = paths_.find(node);
    return it == paths_.end() ? "" : it->second;
  }

  absl::Status ParseErrorStatus(const CLI::ParseError& error) {
    CLI::App* node = Deepest();
    name_ = PathOf(node);
    std::string message = error.what();
    // CLI11 names an ExtrasError after the app, so tell it by its exit code. The words left
    // over belong to the first app, from the root down, that has some.
    if (error.get_exit_code() == static_cast<int>(CLI::ExitCodes::ExtrasError)) {
      for (CLI::App* app = root_.get(); app != nullptr;
           app = app->get_subcommands().empty() ? nullptr : app->get_subcommands().front()) {
        const std::vector<std::string> extras = app->remaining(false);
        if (extras.empty()) continue;
        name_ = PathOf(app);
        const std::string& first = extras.front();
        if (absl::StartsWith(first, "-")) {
          message = absl::StrCat("unknown flag ", first);
        } else if (!IsCommand(app)) {
          message = absl::StrCat("unknown command \"",
                                 name_.empty() ? first : absl::StrCat(name_, " ", first), "\"");
          name_.clear();
        } else {
          message = absl::StrCat("unexpected argument \"", first, "\"");
        }
        break;
      }
    }
    return UsageError(message);
  }

  const std::vector<Command>& commands_;
  std::unique_ptr<CLI::App> root_;
  std::map<std::string, CLI::App*> nodes_;
  std::map<const CLI::App*, std::string> paths_;
  std::map<const CLI::App*, Leaf> leaves_;
  std::string name_;
  const Command* command_ = nullptr;
  Handler handler_;
  bool help_ = false;
  std::string help_text_;
};

struct Dispatcher::Outcome {
  absl::Status status;
  std::string name;                  // for messages; empty at the root
  const Command* command = nullptr;  // null when parsing failed
};

Dispatcher::Dispatcher(std::vector<Command> commands) : commands_(std::move(commands)) {}

Dispatcher::Outcome Dispatcher::RunParsed(Context& ctx, Parser& parser) {
  Outcome outcome{absl::OkStatus(), parser.name(), parser.command()};
  if (parser.help()) {
    ctx.out().Raw(parser.help_text());
    return outcome;
  }
  const Command& command = *parser.command();
  if (command.role != Role::kNone) outcome.status = ctx.Connect(command.fd_channel);
  if (outcome.status.ok()) {
    ctx.set_depth(ctx.depth() + 1);
    outcome.status = parser.handler()(ctx);
    ctx.set_depth(ctx.depth() - 1);
  }
  if (IsUsageError(outcome.status)) {
    outcome.status = UsageError(absl::StrCat(outcome.name, ": ", outcome.status.message()));
  }
  return outcome;
}

absl::Status Dispatcher::Run(Context& ctx, const std::vector<std::string>& words) {
  Parser parser(commands_, nullptr);
  if (absl::Status status = parser.Parse(words); !status.ok()) {
    return parser.name().empty() ? status
                                 : UsageError(absl::StrCat(parser.name(), ": ", status.message()));
  }
  return RunParsed(ctx, parser).status;
}

int Dispatcher::RunAndReport(Context& ctx, const std::vector<std::string>& words,
                             absl::string_view where) {
  Parser parser(commands_, nullptr);
  Outcome outcome;
  if (absl::Status status = parser.Parse(words); !status.ok()) {
    outcome.name = parser.name();
    outcome.status = parser.name().empty()
                         ? status
                         : UsageError(absl::StrCat(parser.name(), ": ", status.message()));
  } else {
    outcome = RunParsed(ctx, parser);
  }
  return Report(ctx, outcome, where);
}

int Dispatcher::Report(Context& ctx, const Outcome& outcome, absl::string_view where) {
  ctx.out().Flush();
  const absl::Status& status = outcome.status;
  if (status.ok()) return kExitOk;
  if (std::optional<int> code = ReportedExitCode(status)) return *code;
  if (IsUsageError(status)) {
    std::cerr << "vfioctl: " << where << status.message() << "\n";
    return kExitUsage;
  }
  std::string hint;
  if (outcome.command != nullptr && outcome.command->role == Role::kOwner &&
      status.code() == absl::StatusCode::kPermissionDenied && !ctx.owner()) {
    hint = absl::StrCat(" (", outcome.name,
                        " needs ownership: run vfioctl with --claim, or claim first in a "
                        "session)");
  }
  std::cerr << absl::StrFormat("vfioctl: %s%s: %s: %s%s\n", where, outcome.name,
                               absl::StatusCodeToString(status.code()), status.message(), hint);
  return kExitFailure;
}

int Dispatcher::Main(const std::vector<std::string>& args) {
  if (!args.empty() && args.front() == "__complete") {
    for (const std::string& word : Complete({args.begin() + 1, args.end()})) {
      std::cout << word << "\n";
    }
    return kExitOk;
  }
  GlobalOptions globals;
  Parser parser(commands_, &globals);
  const absl::Status parsed = parser.Parse(args);
  if (!parsed.ok()) {
    const std::string name = parser.name();
    std::cerr << "vfioctl: " << (name.empty() ? "" : name + ": ") << parsed.message() << "\n"
              << (name.empty() ? kShortUsage : absl::StrCat("see: vfioctl ", name, " --help\n"));
    return kExitUsage;
  }
  if (parser.help()) {
    std::cout << parser.help_text();
    return kExitOk;
  }
  if (globals.timeout == absl::ZeroDuration()) {
    std::cerr << "vfioctl: --timeout must be > 0\n" << kShortUsage;
    return kExitUsage;
  }
  Context ctx(globals, *this, std::cout);
  const int code = Report(ctx, RunParsed(ctx, parser), "");
  ctx.Finish();
  return code;
}

std::string Dispatcher::Help() const {
  GlobalOptions globals;
  Parser parser(commands_, &globals);
  return parser.root().help();
}

std::vector<std::string> Dispatcher::Complete(const std::vector<std::string>& words) const {
  GlobalOptions globals;
  Parser parser(commands_, &globals);
  size_t i = 0;
  for (; i < words.size() && absl::StartsWith(words[i], "-"); ++i) {
    // A global option's value: a path or a duration.
    if ((words[i] == "--socket" || words[i] == "--timeout") && ++i == words.size()) return {};
  }
  std::vector<std::string> out = CompleteCommand(parser, {words.begin() + i, words.end()});
  if (i == words.size()) {
    for (const char* flag : {"--socket", "--json", "--timeout", "--claim", "--help"}) {
      out.push_back(flag);
    }
  }
  return out;
}

std::vector<std::string> Dispatcher::CompleteCommand(const Parser& parser,
                                                     const std::vector<std::string>& words) {
  // The command's words.
  std::string path;
  const CLI::App* node = nullptr;
  size_t i = 0;
  for (; i < words.size(); ++i) {
    const std::string next = path.empty() ? words[i] : absl::StrCat(path, " ", words[i]);
    const CLI::App* child = parser.Node(next);
    if (child == nullptr) break;
    path = next;
    node = child;
  }
  std::vector<std::string> out;
  if (node == nullptr) {
    if (!words.empty()) return {};
    for (const Command& command : parser.commands()) {
      const std::string first = Words(command.name).front();
      if (out.empty() || out.back() != first) out.push_back(first);
    }
    return out;
  }
  // expect-error CODE, then another command.
  if (path == "expect-error") {
    if (i < words.size()) return CompleteCommand(parser, {words.begin() + i + 1, words.end()});
    for (int code = 1; code <= 16; ++code) {
      out.push_back(absl::StatusCodeToString(static_cast<absl::StatusCode>(code)));
    }
    return out;
  }
  // After a flag that takes a value, the value: the shell completes file names.
  if (i < words.size()) {
    for (const CLI::Option* option : node->get_options()) {
      if (!option->get_positional() && option->get_items_expected_max() != 0 &&
          option->check_name(words.back())) {
        return {};
      }
    }
  }
  if (i == words.size()) {
    for (const CLI::App* sub : node->get_subcommands({})) out.push_back(sub->get_name());
  }
  if (parser.IsCommand(node)) {
    for (const CLI::Option* option : node->get_options()) {
      if (!option->get_positional()) out.push_back(option->get_name());
    }
  }
  return out;
}

std::string Dispatcher::DeclaredSynopsis(const Command& command) {
  CLI::App app;
  command.define(app);
  std::vector<std::string> flags, operands;
  for (const CLI::Option* option : app.get_options()) {
    if (option == app.get_help_ptr()) continue;
    if (!option->get_positional()) {
      flags.push_back(
          option->get_items_expected_max() == 0
              ? absl::StrCat("[", option->get_name(), "]")
              : absl::StrCat("[", option->get_name(), " ", option->get_type_name(), "]"));
      continue;
    }
    std::string operand = option->get_name(true);
    if (option->get_items_expected_max() > 1) operand += "...";
    operands.push_back(option->get_required() ? operand : absl::StrCat("[", operand, "]"));
  }
  if (app.get_prefix_command()) operands.push_back("COMMAND...");
  flags.insert(flags.end(), operands.begin(), operands.end());
  return absl::StrJoin(flags, " ");
}

}  // namespace vfiod::cli
