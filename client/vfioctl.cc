// vfioctl: the operator CLI of vfiod. See kUsage for the commands.
//
// One vfioctl is one connection (one session on the daemon). `session` runs many commands on
// that one connection, so a multi-step owner workflow (register guest memory, map it, program
// the device, read the memory back) works from a script.
//
// Exit codes: 0 success, 1 an RPC (or connection) error or a failed check, 2 a usage error.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli_parse.h"
#include "client/config_decode.h"
#include "client/guest_memory.h"
#include "client/unique_fd.h"
#include "client/vfio_client.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitRpcError = 1;
constexpr int kExitUsage = 2;

// Default TIMEOUT of region poll32 and irq wait.
constexpr absl::Duration kWaitTimeout = absl::Seconds(5);

constexpr char kUsage[] = R"(usage: vfioctl [--socket PATH] [--json] [--timeout 5s] [--claim] COMMAND ...

Global options:
  --socket PATH    the daemon's socket (default: $VFIOD_SOCKET)
  --json           machine-readable output
  --timeout D      per-call deadline, e.g. 500ms, 5s (default 5s)
  --claim          claim ownership first, in this connection (needed by owner-only commands;
                   ownership ends when vfioctl exits)

Commands:
  info                                   device description
  config [--raw]                         config space, decoded (--raw: hex dump)
  config read OFFSET SIZE                SIZE 1, 2 or 4
  config write OFFSET SIZE VALUE         (owner)
  region read INDEX OFFSET SIZE          hex dump
  region read32 INDEX OFFSET
  region write INDEX OFFSET HEXBYTES     e.g. 0102a0ff (owner)
  region write32 INDEX OFFSET VALUE      (owner)
  region poll32 INDEX OFFSET MASK VALUE [TIMEOUT]
                                         read until (value & MASK) == VALUE; fails after
                                         TIMEOUT (default 5s)
  irq watch [--count N] [--timeout D] [--enable START:COUNT] [INDEX...]
                                         stream interrupts; --enable turns on daemon-owned
                                         eventfds for the INDEXes first (owner)
  irq enable-watch INDEX START COUNT     (owner)
  irq disable INDEX                      (owner)
  irq mask|unmask INDEX START COUNT      (owner)
  irq watch-start [INDEX...]             open this connection's watch stream (no INDEX: all)
                                         and return once the daemon streams it
  irq wait INDEX [TIMEOUT]               take one interrupt of INDEX from that stream,
                                         waiting up to TIMEOUT (default 5s)
  irq watch-stop                         close the watch stream
  memory create SIZE [NAME]              a sealed memfd of SIZE bytes, mapped by vfioctl and
                                         registered as guest memory; prints its id (owner)
  memory fill ID OFFSET LENGTH PATTERN   PATTERN: a byte (0x5a), seq (byte i = i*7+3) or
                                         random:SEED; i counts from OFFSET
  memory dump ID OFFSET LENGTH           hex dump of guest memory
  memory compare ID OFFSET_A OFFSET_B LENGTH
                                         fails with the first differing offset
  memory unregister ID                   (owner)
  dma map IOVA SIZE ID OFFSET [r|w|rw]   map memory ID at IOVA (default rw: the device may
                                         read and write it) (owner)
  dma unmap IOVA SIZE                    (owner)
  state                                  sessions, memory, DMA, IRQ state, counters
  claim | release | reset                roles; reset is owner-only
  sleep DURATION                         e.g. 100ms
  expect-error CODE COMMAND ...          succeeds only if COMMAND fails with the gRPC code
                                         CODE, e.g. PERMISSION_DENIED
  session [--keep-going] [FILE]          run commands from FILE (default or "-": stdin), one
                                         per line, all on one connection and fd channel

Sessions: blank lines and # comments are skipped; each command is echoed as "> COMMAND"
(with --json as {"command": ...}) before its output. The session stops at the first failing
command with its exit code, or with --keep-going runs every line and exits with the first
failure's code. Ownership, guest memory, mappings and the watch stream last for the session
(the daemon releases them when vfioctl exits). Memory commands work outside a session too, but
the memory is gone when that vfioctl exits. A memory ID is the number the daemon returned or
the NAME given to memory create.

Numbers accept 0x for hex and the size suffixes K, M, G (64K = 65536). IRQ INDEX: intx, msi,
msix, err, req or 0..4. Durations: 500ms, 3s, 1m.
Exit codes: 0 success, 1 failure (the daemon refused, a check failed), 2 usage error.
)";

struct UsageError {
  std::string message;
};

// A failure to connect or to claim ownership, before the command's first call.
struct ConnectError {
  std::string stage;
  absl::Status status;
};

struct Globals {
  std::string socket;
  bool json = false;
  absl::Duration timeout = absl::Seconds(5);
  bool claim = false;
};

// --- Parsing --------------------------------------------------------------------------------

using client::ParseHexBytes;
using client::ParseIrqIndex;
using client::ParseNumber;
using client::ParseNumber32;

// Takes a value for `--name VALUE` or `--name=VALUE` at args[*i]; nullopt when args[*i] is not
// that option.
std::optional<std::string> TakeOption(const std::vector<std::string>& args, size_t* i,
                                      absl::string_view name) {
  const std::string& arg = args[*i];
  if (arg == name) {
    if (*i + 1 >= args.size()) throw UsageError{absl::StrCat(name, " needs a value")};
    return args[++*i];
  }
  if (absl::StartsWith(arg, absl::StrCat(name, "="))) return arg.substr(name.size() + 1);
  return std::nullopt;
}

template <typename T>
T OrUsage(absl::StatusOr<T> value) {
  if (!value.ok()) throw UsageError{std::string(value.status().message())};
  return *std::move(value);
}

absl::Duration ParseDurationOrUsage(absl::string_view text) {
  absl::Duration duration;
  if (!absl::ParseDuration(text, &duration) || duration < absl::ZeroDuration()) {
    throw UsageError{absl::StrCat("bad duration \"", text, "\" (e.g. 500ms, 5s)")};
  }
  return duration;
}

void ExpectArgs(const std::vector<std::string>& args, size_t count, absl::string_view synopsis) {
  if (args.size() != count) throw UsageError{absl::StrCat("usage: vfioctl ", synopsis)};
}

// --- Output ---------------------------------------------------------------------------------

// Columns padded to their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render(absl::string_view indent = "  ") const {
    std::vector<size_t> widths;
    for (const auto& row : rows_) {
      if (widths.size() < row.size()) widths.resize(row.size());
      for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
    }
    std::string out;
    for (const auto& row : rows_) {
      std::string line(indent);
      for (size_t c = 0; c < row.size(); ++c) {
        absl::StrAppend(&line, row[c]);
        if (c + 1 < row.size()) line.append(widths[c] - row[c].size() + 2, ' ');
      }
      absl::StrAppend(&out, line, "\n");
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) return "{}";
  return json;
}

std::string Hex(uint64_t value) { return absl::StrFormat("0x%x", value); }
const char* YesNo(bool value) { return value ? "yes" : "no"; }

std::string IrqIndexName(int index) {
  std::string name = v1::IrqIndex_Name(static_cast<v1::IrqIndex>(index));
  if (name.empty()) return absl::StrCat(index);
  return std::string(absl::StripPrefix(name, "IRQ_INDEX_"));
}

std::string BarText(const v1::Bar& bar) {
  switch (bar.kind()) {
    case v1::Bar::KIND_MEMORY:
      return absl::StrFormat("memory %s %s at %s", bar.is_64bit() ? "64-bit" : "32-bit",
                             bar.prefetchable() ? "prefetchable" : "non-prefetchable",
                             Hex(bar.address()));
    case v1::Bar::KIND_IO:
      return absl::StrFormat("I/O at %s", Hex(bar.address()));
    case v1::Bar::KIND_ROM:
      return absl::StrFormat("ROM at %s", Hex(bar.address()));
    default:
      return "-";
  }
}

std::string PageSizes(uint64_t bitmap) {
  std::vector<std::string> sizes;
  for (int bit = 0; bit < 64; ++bit) {
    if (bitmap & (uint64_t{1} << bit)) sizes.push_back(client::FormatSize(uint64_t{1} << bit));
  }
  if (sizes.size() > 8) {
    return absl::StrFormat("%s and %d larger sizes (bitmap %s)", sizes.front(), sizes.size() - 1,
                           Hex(bitmap));
  }
  return absl::StrFormat("%s (bitmap %s)", sizes.empty() ? "none" : absl::StrJoin(sizes, " "),
                         Hex(bitmap));
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

// A JSON string literal.
std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  out += "\"";
  return out;
}

std::string IrqEventText(const v1::IrqEvent& e) {
  return absl::StrFormat("%d.%09d %s vector %d count %d", e.timestamp_ns() / 1000000000,
                         e.timestamp_ns() % 1000000000, IrqIndexName(e.index()), e.vector(),
                         e.count());
}

std::string HexString(absl::string_view data) {
  std::string out;
  for (char c : data) absl::StrAppendFormat(&out, "%02x", static_cast<uint8_t>(c));
  return out;
}

// --- Commands -------------------------------------------------------------------------------

// Each command parses all of its arguments before its first call, so usage errors never wait
// for a connection: the client connects on first use. A Cli is one connection: in a session,
// every command runs on the same Cli, so ownership, guest memory and the watch stream carry
// over from one command to the next.
class Cli {
 public:
  // `fd_channel`: connect the fd channel too (sessions and memory commands need it).
  Cli(Globals globals, bool fd_channel) : g_(std::move(globals)), fd_channel_(fd_channel) {}
  // Finish()es.
  ~Cli() { Finish(); }

  // Runs one command (`args`, command first) and reports its failure on stderr, prefixed with
  // `where` ("line 3: "). Returns the exit code.
  int RunCommand(const std::vector<std::string>& args, absl::string_view where = "");

  // `session [--keep-going] [FILE]`: runs the lines of FILE (or stdin). Returns the exit code.
  int Session(const std::vector<std::string>& args);

  // Ends what this connection holds: closes the watch stream and, if this CLI owns the
  // device, releases ownership, so the daemon's cleanup (interrupts off, DMA unmapped, memory
  // released) is done before vfioctl exits rather than when the daemon notices the closed
  // connection.
  void Finish();

 private:
  // Runs `args`. RPC errors are returned; usage errors are thrown as UsageError, connection
  // errors as ConnectError.
  absl::Status Run(const std::vector<std::string>& args);

  absl::Status Info();
  absl::Status Config(const std::vector<std::string>& args);
  absl::Status Region(const std::vector<std::string>& args);
  absl::Status RegionPoll32(const std::vector<std::string>& args);
  absl::Status Irq(const std::vector<std::string>& args);
  absl::Status IrqWatch(const std::vector<std::string>& args);
  absl::Status IrqWatchStart(const std::vector<std::string>& args);
  absl::Status IrqWait(const std::vector<std::string>& args);
  absl::Status Memory(const std::vector<std::string>& args);
  absl::Status MemoryCreate(const std::vector<std::string>& args);
  absl::Status Dma(const std::vector<std::string>& args);
  absl::Status ExpectError(const std::vector<std::string>& args);
  absl::Status State();
  void Done(absl::string_view text);
  VfioClient* client();

  // A memory ID argument: a number, or a NAME given to `memory create`.
  uint64_t MemoryIdOrUsage(const std::string& text) const;
  // The local mapping of memory `id`; NOT_FOUND when this vfioctl did not create it.
  absl::StatusOr<client::GuestMemory*> LocalMemory(uint64_t id);
  // The daemon forgot every registration (ownership released): forget the local mappings.
  void ForgetMemory();

  Globals g_;
  const bool fd_channel_;
  bool in_session_ = false;
  // Connecting (or claiming with --claim) failed: a session cannot go on.
  bool connect_failed_ = false;
  // This CLI claimed ownership (--claim or `claim`) and has not released it.
  bool owner_ = false;
  std::unique_ptr<VfioClient> client_;
  // Guest memory created by `memory create`, by daemon memory id, and their names.
  std::map<uint64_t, client::GuestMemory> memory_;
  std::map<std::string, uint64_t> memory_names_;
  // The stream of `irq watch-start`, and events `irq wait` took from it for another index.
  std::unique_ptr<vfiod::IrqWatch> watch_;
  std::deque<v1::IrqEvent> pending_events_;
};

// "config read", "region write32", "memory create", ...: a command's name for messages.
std::string CommandName(const std::vector<std::string>& command) {
  if (command.empty()) return "";
  std::string name = command[0];
  if (command.size() > 1 && !absl::StartsWith(command[1], "-") &&
      (name == "config" || name == "region" || name == "irq" || name == "memory" ||
       name == "dma")) {
    absl::StrAppend(&name, " ", command[1]);
  }
  return name;
}

// Whether `command` needs the fd channel (memory commands, also under expect-error).
bool NeedsFdChannel(const std::vector<std::string>& command) {
  size_t i = 0;
  while (i < command.size() && command[i] == "expect-error") i += 2;
  return i < command.size() && (command[i] == "memory" || command[i] == "session");
}

VfioClient* Cli::client() {
  if (client_ != nullptr) return client_.get();
  ConnectOptions options;
  options.default_timeout = g_.timeout;
  options.fd_channel = fd_channel_;
  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect(g_.socket, options);
  if (!client.ok()) throw ConnectError{"connect", client.status()};
  if (g_.claim) {
    absl::Status status = (*client)->ClaimOwnership();
    if (!status.ok()) throw ConnectError{"claim", status};
    owner_ = true;
  }
  client_ = std::move(*client);
  return client_.get();
}

void Cli::Finish() {
  if (watch_ != nullptr) {
    watch_->Cancel();
    watch_.reset();
  }
  pending_events_.clear();
  if (owner_ && client_ != nullptr) {
    // Best effort: when it fails, the daemon cleans up once it sees the connection close.
    (void)client_->ReleaseOwnership();
    owner_ = false;
  }
  ForgetMemory();
}

void Cli::Done(absl::string_view text) {
  if (g_.json) {
    std::cout << "{}\n";
  } else if (!text.empty()) {
    std::cout << text << "\n";
  }
}

int Cli::RunCommand(const std::vector<std::string>& args, absl::string_view where) {
  const std::string name = CommandName(args);
  int code = kExitOk;
  try {
    absl::Status status = Run(args);
    if (!status.ok()) {
      std::cout.flush();
      std::cerr << absl::StrFormat("vfioctl: %s%s: %s: %s\n", where, name,
                                   absl::StatusCodeToString(status.code()), status.message());
      code = kExitRpcError;
    }
  } catch (const UsageError& error) {
    std::cout.flush();
    std::cerr << "vfioctl: " << where << name << ": " << error.message << "\n";
    code = kExitUsage;
  } catch (const ConnectError& error) {
    connect_failed_ = true;
    std::cout.flush();
    std::cerr << absl::StrFormat("vfioctl: %s%s: %s: %s\n", where, error.stage,
                                 absl::StatusCodeToString(error.status.code()),
                                 error.status.message());
    code = kExitRpcError;
  }
  std::cout.flush();
  return code;
}

int Cli::Session(const std::vector<std::string>& args) {
  bool keep_going = false;
  std::optional<std::string> path;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--keep-going") {
      keep_going = true;
    } else if (absl::StartsWith(args[i], "-") && args[i] != "-") {
      std::cerr << "vfioctl: session: unknown option " << args[i] << "\n";
      return kExitUsage;
    } else if (path.has_value()) {
      std::cerr << "vfioctl: session: usage: vfioctl session [--keep-going] [FILE]\n";
      return kExitUsage;
    } else {
      path = args[i];
    }
  }
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path.has_value() && *path != "-") {
    file.open(*path);
    if (!file.is_open()) {
      const int error = errno;
      std::cerr << absl::StrFormat("vfioctl: session: cannot open %s: %s\n", *path,
                                   std::strerror(error));
      return kExitRpcError;
    }
    in = &file;
  }

  in_session_ = true;
  int exit_code = kExitOk;
  int failures = 0;
  int commands = 0;
  int line_number = 0;
  std::string line;
  while (std::getline(*in, line)) {
    ++line_number;
    const std::vector<std::string> words = client::SplitSessionLine(line);
    if (words.empty()) continue;
    ++commands;
    const std::string text = absl::StrJoin(words, " ");
    if (g_.json) {
      std::cout << absl::StrFormat("{\"command\":%s,\"line\":%d}\n", JsonQuote(text), line_number);
    } else {
      std::cout << "> " << text << "\n";
    }
    std::cout.flush();
    const int code = RunCommand(words, absl::StrCat("line ", line_number, ": "));
    if (code == kExitOk) continue;
    ++failures;
    if (exit_code == kExitOk) exit_code = code;
    // Without a connection, no later line can run.
    if (!keep_going || connect_failed_) {
      std::cerr << absl::StrFormat("vfioctl: session stopped at line %d\n", line_number);
      break;
    }
  }
  if (in->bad()) {
    std::cerr << "vfioctl: session: read error\n";
    if (exit_code == kExitOk) exit_code = kExitRpcError;
  }
  if (keep_going && failures > 0) {
    std::cerr << absl::StrFormat("vfioctl: session: %d of %d commands failed\n", failures,
                                 commands);
  }
  Finish();
  in_session_ = false;
  return exit_code;
}

absl::Status Cli::Run(const std::vector<std::string>& args) {
  const std::string& command = args[0];
  if (command == "info") {
    ExpectArgs(args, 1, "info");
    return Info();
  }
  if (command == "config") return Config(args);
  if (command == "region") return Region(args);
  if (command == "irq") return Irq(args);
  if (command == "memory") return Memory(args);
  if (command == "dma") return Dma(args);
  if (command == "expect-error") return ExpectError(args);
  if (command == "state") {
    ExpectArgs(args, 1, "state");
    return State();
  }
  if (command == "sleep") {
    ExpectArgs(args, 2, "sleep DURATION");
    absl::SleepFor(ParseDurationOrUsage(args[1]));
    Done("");
    return absl::OkStatus();
  }
  if (command == "session") {
    throw UsageError{in_session_ ? "sessions cannot be nested"
                                 : "session must be the command itself, not an argument"};
  }
  if (command == "claim") {
    ExpectArgs(args, 1, "claim");
    absl::Status status = client()->ClaimOwnership();
    if (status.ok()) {
      owner_ = true;
      Done(in_session_ ? "ownership claimed (it ends with the session)"
                       : "ownership claimed (it ends when vfioctl exits)");
    }
    return status;
  }
  if (command == "release") {
    ExpectArgs(args, 1, "release");
    absl::Status status = client()->ReleaseOwnership();
    if (status.ok()) {
      owner_ = false;
      ForgetMemory();
      Done("ownership released");
    }
    return status;
  }
  if (command == "reset") {
    ExpectArgs(args, 1, "reset");
    absl::Status status = client()->Reset();
    if (status.ok()) Done("device reset");
    return status;
  }
  throw UsageError{absl::StrCat("unknown command \"", command, "\"")};
}

absl::Status Cli::ExpectError(const std::vector<std::string>& args) {
  if (args.size() < 3) throw UsageError{"usage: vfioctl expect-error CODE COMMAND ..."};
  const absl::StatusCode expected = OrUsage(client::ParseStatusCodeName(args[1]));
  const std::vector<std::string> command(args.begin() + 2, args.end());
  absl::Status status;
  try {
    status = Run(command);
  } catch (const ConnectError& error) {
    status = error.status;
  }
  const std::string expected_name = absl::StatusCodeToString(expected);
  if (status.ok()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("expected %s, but %s succeeded", expected_name, CommandName(command)));
  }
  if (status.code() != expected) {
    return absl::FailedPreconditionError(absl::StrFormat("expected %s, got %s: %s", expected_name,
                                                         absl::StatusCodeToString(status.code()),
                                                         status.message()));
  }
  if (g_.json) {
    std::cout << absl::StrFormat("{\"expected_error\":%s,\"message\":%s}\n",
                                 JsonQuote(expected_name), JsonQuote(status.message()));
  } else {
    std::cout << absl::StrFormat("failed as expected: %s: %s\n", expected_name, status.message());
  }
  return absl::OkStatus();
}

uint64_t Cli::MemoryIdOrUsage(const std::string& text) const {
  if (auto it = memory_names_.find(text); it != memory_names_.end()) return it->second;
  if (!text.empty() && absl::ascii_isalpha(static_cast<unsigned char>(text[0]))) {
    throw UsageError{absl::StrCat("no memory named \"", text, "\" (memory create SIZE NAME)")};
  }
  return OrUsage(ParseNumber(text, "memory ID"));
}

absl::StatusOr<client::GuestMemory*> Cli::LocalMemory(uint64_t id) {
  auto it = memory_.find(id);
  if (it == memory_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "memory ", id, " was not created by this vfioctl (memory create), so it cannot see it"));
  }
  return &it->second;
}

void Cli::ForgetMemory() {
  memory_.clear();
  memory_names_.clear();
}

absl::Status Cli::Memory(const std::vector<std::string>& args) {
  const std::string sub = args.size() >= 2 ? args[1] : "";
  if (sub == "create") return MemoryCreate(args);
  if (sub == "fill") {
    ExpectArgs(args, 6, "memory fill ID OFFSET LENGTH PATTERN");
    const uint64_t id = MemoryIdOrUsage(args[2]);
    const uint64_t offset = OrUsage(ParseNumber(args[3], "OFFSET"));
    const uint64_t length = OrUsage(ParseNumber(args[4], "LENGTH"));
    const client::FillPattern pattern = OrUsage(client::ParseFillPattern(args[5]));
    absl::StatusOr<client::GuestMemory*> memory = LocalMemory(id);
    if (!memory.ok()) return memory.status();
    if (absl::Status status = (*memory)->Fill(offset, length, pattern); !status.ok()) {
      return status;
    }
    Done(absl::StrFormat("filled %s bytes at %s with %s", Hex(length), Hex(offset),
                         client::FillPatternName(pattern)));
    return absl::OkStatus();
  }
  if (sub == "dump") {
    ExpectArgs(args, 5, "memory dump ID OFFSET LENGTH");
    const uint64_t id = MemoryIdOrUsage(args[2]);
    const uint64_t offset = OrUsage(ParseNumber(args[3], "OFFSET"));
    const uint64_t length = OrUsage(ParseNumber(args[4], "LENGTH"));
    absl::StatusOr<client::GuestMemory*> memory = LocalMemory(id);
    if (!memory.ok()) return memory.status();
    absl::StatusOr<std::string> data = (*memory)->Read(offset, length);
    if (!data.ok()) return data.status();
    if (g_.json) {
      std::cout << absl::StrFormat("{\"memory_id\":%d,\"offset\":%d,\"data\":\"%s\"}\n", id, offset,
                                   HexString(*data));
    } else {
      std::cout << HexDump64(*data, offset);
    }
    return absl::OkStatus();
  }
  if (sub == "compare") {
    ExpectArgs(args, 6, "memory compare ID OFFSET_A OFFSET_B LENGTH");
    const uint64_t id = MemoryIdOrUsage(args[2]);
    const uint64_t offset_a = OrUsage(ParseNumber(args[3], "OFFSET_A"));
    const uint64_t offset_b = OrUsage(ParseNumber(args[4], "OFFSET_B"));
    const uint64_t length = OrUsage(ParseNumber(args[5], "LENGTH"));
    absl::StatusOr<client::GuestMemory*> memory = LocalMemory(id);
    if (!memory.ok()) return memory.status();
    absl::StatusOr<std::optional<uint64_t>> difference =
        (*memory)->Compare(offset_a, offset_b, length);
    if (!difference.ok()) return difference.status();
    if (!difference->has_value()) {
      if (g_.json) {
        std::cout << absl::StrFormat("{\"equal\":true,\"length\":%d}\n", length);
      } else {
        std::cout << absl::StrFormat("equal: %s bytes at %s and %s\n", Hex(length), Hex(offset_a),
                                     Hex(offset_b));
      }
      return absl::OkStatus();
    }
    const uint64_t at = **difference;
    const std::string a = *(*memory)->Read(offset_a + at, 1);
    const std::string b = *(*memory)->Read(offset_b + at, 1);
    if (g_.json) {
      std::cout << absl::StrFormat("{\"equal\":false,\"length\":%d,\"first_difference\":%d}\n",
                                   length, at);
    }
    return absl::DataLossError(
        absl::StrFormat("the ranges differ first at +%s: 0x%02x at %s, 0x%02x at %s", Hex(at),
                        static_cast<uint8_t>(a[0]), Hex(offset_a + at), static_cast<uint8_t>(b[0]),
                        Hex(offset_b + at)));
  }
  if (sub == "unregister") {
    ExpectArgs(args, 3, "memory unregister ID");
    const uint64_t id = MemoryIdOrUsage(args[2]);
    absl::Status status = client()->UnregisterMemory(id);
    if (!status.ok()) return status;
    memory_.erase(id);
    for (auto it = memory_names_.begin(); it != memory_names_.end();) {
      it = it->second == id ? memory_names_.erase(it) : std::next(it);
    }
    Done(absl::StrCat("memory ", id, " unregistered"));
    return absl::OkStatus();
  }
  throw UsageError{"usage: vfioctl memory create|fill|dump|compare|unregister ..."};
}

absl::Status Cli::MemoryCreate(const std::vector<std::string>& args) {
  if (args.size() != 3 && args.size() != 4) {
    throw UsageError{"usage: vfioctl memory create SIZE [NAME]"};
  }
  const uint64_t size = OrUsage(ParseNumber(args[2], "SIZE"));
  if (size == 0) throw UsageError{"SIZE must be > 0"};
  std::string name;
  if (args.size() == 4) {
    name = args[3];
    bool valid = absl::ascii_isalpha(static_cast<unsigned char>(name[0]));
    for (char c : name) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
        valid = false;
      }
    }
    if (!valid) {
      throw UsageError{
          absl::StrCat("bad NAME \"", name, "\" (a letter, then letters, digits, _ or -)")};
    }
    if (memory_names_.count(name) != 0) {
      throw UsageError{absl::StrCat("memory \"", name, "\" exists already")};
    }
  }
  absl::StatusOr<client::UniqueFd> fd = VfioClient::CreateSealedMemfd("vfioctl-guest", size);
  if (!fd.ok()) return fd.status();
  absl::StatusOr<client::GuestMemory> memory = client::GuestMemory::Map(*std::move(fd), size);
  if (!memory.ok()) return memory.status();
  absl::StatusOr<v1::RegisterMemoryResponse> registered =
      client()->RegisterMemory(memory->fd(), size);
  if (!registered.ok()) return registered.status();
  const uint64_t id = registered->memory_id();
  memory_.insert_or_assign(id, *std::move(memory));
  if (!name.empty()) memory_names_[name] = id;
  if (g_.json) {
    std::cout << absl::StrFormat("{\"memory_id\":%d,\"size\":%d%s}\n", id, registered->size(),
                                 name.empty() ? "" : absl::StrCat(",\"name\":", JsonQuote(name)));
  } else {
    std::cout << absl::StrFormat("memory %d: %s bytes (%s)%s\n", id, Hex(registered->size()),
                                 client::FormatSize(registered->size()),
                                 name.empty() ? "" : absl::StrCat(", named ", name));
  }
  if (!in_session_) {
    std::cerr << "vfioctl: note: the memory is released when this vfioctl exits; run memory "
                 "commands in a session\n";
  }
  return absl::OkStatus();
}

absl::Status Cli::Dma(const std::vector<std::string>& args) {
  const std::string sub = args.size() >= 2 ? args[1] : "";
  if (sub == "map") {
    if (args.size() != 6 && args.size() != 7) {
      throw UsageError{"usage: vfioctl dma map IOVA SIZE ID OFFSET [r|w|rw]"};
    }
    const uint64_t iova = OrUsage(ParseNumber(args[2], "IOVA"));
    const uint64_t size = OrUsage(ParseNumber(args[3], "SIZE"));
    const uint64_t id = MemoryIdOrUsage(args[4]);
    const uint64_t offset = OrUsage(ParseNumber(args[5], "OFFSET"));
    const client::DmaAccess access =
        args.size() == 7 ? OrUsage(client::ParseDmaAccess(args[6])) : client::DmaAccess{true, true};
    absl::Status status =
        client()->MapDma(iova, size, id, offset, access.device_read, access.device_write);
    if (status.ok()) {
      Done(absl::StrFormat(
          "mapped IOVA %s-%s to memory %d at %s (device %s)", Hex(iova), Hex(iova + size - 1), id,
          Hex(offset),
          absl::StrCat(access.device_read ? "r" : "", access.device_write ? "w" : "")));
    }
    return status;
  }
  if (sub == "unmap") {
    ExpectArgs(args, 4, "dma unmap IOVA SIZE");
    const uint64_t iova = OrUsage(ParseNumber(args[2], "IOVA"));
    const uint64_t size = OrUsage(ParseNumber(args[3], "SIZE"));
    absl::StatusOr<v1::UnmapDmaResponse> response = client()->UnmapDma(iova, size);
    if (!response.ok()) return response.status();
    if (g_.json) {
      std::cout << ToJson(*response) << "\n";
    } else {
      std::cout << absl::StrFormat("unmapped %s bytes in %d mappings\n",
                                   Hex(response->unmapped_bytes()), response->unmapped_mappings());
    }
    return absl::OkStatus();
  }
  throw UsageError{"usage: vfioctl dma map|unmap IOVA SIZE ..."};
}

absl::Status Cli::Info() {
  absl::StatusOr<v1::DeviceInfo> info = client()->GetDeviceInfo();
  if (!info.ok()) return info.status();
  if (g_.json) {
    std::cout << ToJson(*info) << "\n";
    return absl::OkStatus();
  }
  const v1::PciIds& ids = info->ids();
  std::string backend = v1::BackendKind_Name(info->backend());
  backend = absl::AsciiStrToLower(absl::StripPrefix(backend, "BACKEND_KIND_"));
  std::cout << absl::StrFormat("Device:     %s (%s)\n", info->name(), backend);
  std::cout << absl::StrFormat(
      "IDs:        %04x:%04x rev %02x, subsystem %04x:%04x, header type %02x\n", ids.vendor_id(),
      ids.device_id(), ids.revision(), ids.subsystem_vendor_id(), ids.subsystem_id(),
      ids.header_type());
  std::cout << absl::StrFormat("Class:      %06x (%s)\n", ids.class_code(),
                               client::ClassName(ids.class_code()));
  std::vector<std::string> flags;
  if (info->flags().pci()) flags.push_back("pci");
  if (info->flags().reset()) flags.push_back("reset");
  std::cout << absl::StrFormat("Flags:      %s (raw %s)\n",
                               flags.empty() ? "none" : absl::StrJoin(flags, " "),
                               Hex(info->flags().raw()));
  std::cout << absl::StrFormat("Config:     %d bytes\n", info->config_size());

  std::cout << "\nRegions:\n";
  Table regions({"INDEX", "NAME", "SIZE", "FLAGS", "BAR", "EXTRA"});
  for (const v1::Region& region : info->regions()) {
    std::string rwm = absl::StrCat(region.readable() ? "r" : "-", region.writable() ? "w" : "-",
                                   region.mmappable() ? "m" : "-");
    std::vector<std::string> extra;
    for (const v1::SparseMmapArea& area : region.sparse_mmap()) {
      extra.push_back(absl::StrFormat("mmap %s+%s", Hex(area.offset()), Hex(area.size())));
    }
    if (region.has_type()) {
      extra.push_back(absl::StrFormat("type %d/%d", region.type().type(), region.type().subtype()));
    }
    if (region.msix_mappable()) extra.push_back("msix-mappable");
    regions.Add({absl::StrCat(region.index()), region.name(),
                 region.size() == 0 ? "0" : absl::StrFormat("%s (%s)", Hex(region.size()),
                                                            client::FormatSize(region.size())),
                 rwm, region.has_bar() ? BarText(region.bar()) : "-",
                 extra.empty() ? "" : absl::StrJoin(extra, ", ")});
  }
  std::cout << regions.Render();

  std::cout << "\nIRQ indexes:\n";
  Table irqs({"INDEX", "COUNT", "FLAGS"});
  for (const v1::IrqIndexInfo& irq : info->irqs()) {
    std::vector<std::string> irq_flags;
    if (irq.eventfd()) irq_flags.push_back("eventfd");
    if (irq.maskable()) irq_flags.push_back("maskable");
    if (irq.automasked()) irq_flags.push_back("automasked");
    if (irq.noresize()) irq_flags.push_back("noresize");
    irqs.Add({IrqIndexName(irq.index()), absl::StrCat(irq.count()),
              absl::StrJoin(irq_flags, " ")});
  }
  std::cout << irqs.Render();

  const v1::IommuInfo& iommu = info->iommu();
  std::cout << "\nIOMMU:\n";
  std::cout << "  page sizes: " << PageSizes(iommu.page_size_bitmap()) << "\n";
  std::vector<std::string> ranges;
  for (const v1::IovaRange& range : iommu.usable_ranges()) {
    ranges.push_back(absl::StrFormat("%s-%s", Hex(range.start()), Hex(range.last())));
  }
  std::cout << "  usable IOVA ranges: " << (ranges.empty() ? "none" : absl::StrJoin(ranges, ", "))
            << "\n";
  std::cout << "  DMA mappings available: " << iommu.dma_mappings_available() << "\n";

  const v1::Limits& limits = info->limits();
  std::cout << "\nLimits:\n";
  std::cout << absl::StrFormat(
      "  memory: %d bytes in at most %d regions; DMA mappings: %d\n"
      "  region access: %d bytes per call; fds: %d per message, %d tokens outstanding\n",
      limits.max_memory_bytes(), limits.max_memory_regions(), limits.max_dma_mappings(),
      limits.max_region_access_bytes(), limits.max_fds_per_message(), limits.max_fd_tokens());

  std::cout << "\nCapabilities:\n";
  if (info->capabilities().empty()) std::cout << "  none\n";
  for (const v1::Capability& cap : info->capabilities()) {
    std::cout << absl::StrFormat("  [%02x] %s (id 0x%02x)\n", cap.offset(), cap.name(), cap.id());
  }
  if (!info->extended_capabilities().empty()) {
    std::cout << "Extended capabilities:\n";
    for (const v1::Capability& cap : info->extended_capabilities()) {
      std::cout << absl::StrFormat("  [%03x v%d] %s (id 0x%04x)\n", cap.offset(), cap.version(),
                                   cap.name(), cap.id());
    }
  }
  return absl::OkStatus();
}

absl::Status Cli::Config(const std::vector<std::string>& args) {
  if (args.size() >= 2 && args[1] == "read") {
    ExpectArgs(args, 4, "config read OFFSET SIZE");
    const uint32_t offset = OrUsage(ParseNumber32(args[2], "OFFSET"));
    const uint32_t size = OrUsage(ParseNumber32(args[3], "SIZE"));
    absl::StatusOr<uint32_t> value = client()->ReadConfig(offset, size);
    if (!value.ok()) return value.status();
    if (g_.json) {
      std::cout << absl::StrFormat("{\"offset\":%d,\"size\":%d,\"value\":%d}\n", offset, size,
                                   *value);
    } else {
      std::cout << absl::StrFormat("0x%0*x\n", static_cast<int>(2 * size), *value);
    }
    return absl::OkStatus();
  }
  if (args.size() >= 2 && args[1] == "write") {
    ExpectArgs(args, 5, "config write OFFSET SIZE VALUE");
    const uint32_t offset = OrUsage(ParseNumber32(args[2], "OFFSET"));
    const uint32_t size = OrUsage(ParseNumber32(args[3], "SIZE"));
    const uint32_t value = OrUsage(ParseNumber32(args[4], "VALUE"));
    absl::Status status = client()->WriteConfig(offset, size, value);
    if (status.ok()) Done("");
    return status;
  }
  bool raw = false;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--raw") {
      raw = true;
    } else {
      throw UsageError{"usage: vfioctl config [--raw] | config read ... | config write ..."};
    }
  }
  absl::StatusOr<std::string> data = client()->DumpConfig(0, 0);
  if (!data.ok()) return data.status();
  if (raw) {
    if (g_.json) {
      v1::DumpConfigResponse response;
      response.set_data(*data);
      std::cout << ToJson(response) << "\n";
    } else {
      std::cout << client::HexDump(*data);
    }
    return absl::OkStatus();
  }
  client::FormatOptions options;
  // BAR sizes come from the daemon's sizing; without them the decode still works.
  if (absl::StatusOr<v1::DeviceInfo> info = client()->GetDeviceInfo(); info.ok()) {
    for (const v1::Region& region : info->regions()) {
      if (region.name() == "ROM") {
        options.rom_size = region.size();
      } else if (region.index() < 6 && region.has_bar()) {
        options.bar_sizes[region.index()] = region.bar().size();
      }
    }
  }
  std::cout << (g_.json ? client::ConfigToJson(*data, options) + "\n"
                        : client::FormatConfig(*data, options));
  return absl::OkStatus();
}

absl::Status Cli::Region(const std::vector<std::string>& args) {
  const std::string sub = args.size() >= 2 ? args[1] : "";
  if (sub == "read") {
    ExpectArgs(args, 5, "region read INDEX OFFSET SIZE");
    const uint32_t index = OrUsage(ParseNumber32(args[2], "INDEX"));
    const uint64_t offset = OrUsage(ParseNumber(args[3], "OFFSET"));
    const uint32_t size = OrUsage(ParseNumber32(args[4], "SIZE"));
    absl::StatusOr<std::string> data = client()->ReadRegion(index, offset, size);
    if (!data.ok()) return data.status();
    if (g_.json) {
      std::cout << absl::StrFormat("{\"index\":%d,\"offset\":%d,\"data\":\"%s\"}\n", index, offset,
                                   HexString(*data));
    } else {
      std::cout << HexDump64(*data, offset);
    }
    return absl::OkStatus();
  }
  if (sub == "read32") {
    ExpectArgs(args, 4, "region read32 INDEX OFFSET");
    const uint32_t index = OrUsage(ParseNumber32(args[2], "INDEX"));
    const uint64_t offset = OrUsage(ParseNumber(args[3], "OFFSET"));
    absl::StatusOr<uint32_t> value = client()->ReadRegion32(index, offset);
    if (!value.ok()) return value.status();
    if (g_.json) {
      std::cout << absl::StrFormat("{\"index\":%d,\"offset\":%d,\"value\":%d}\n", index, offset,
                                   *value);
    } else {
      std::cout << absl::StrFormat("0x%08x\n", *value);
    }
    return absl::OkStatus();
  }
  if (sub == "write") {
    ExpectArgs(args, 5, "region write INDEX OFFSET HEXBYTES");
    const uint32_t index = OrUsage(ParseNumber32(args[2], "INDEX"));
    const uint64_t offset = OrUsage(ParseNumber(args[3], "OFFSET"));
    const std::string data = OrUsage(ParseHexBytes(args[4]));
    absl::Status status = client()->WriteRegion(index, offset, data);
    if (status.ok()) Done("");
    return status;
  }
  if (sub == "write32") {
    ExpectArgs(args, 5, "region write32 INDEX OFFSET VALUE");
    const uint32_t index = OrUsage(ParseNumber32(args[2], "INDEX"));
    const uint64_t offset = OrUsage(ParseNumber(args[3], "OFFSET"));
    const uint32_t value = OrUsage(ParseNumber32(args[4], "VALUE"));
    absl::Status status = client()->WriteRegion32(index, offset, value);
    if (status.ok()) Done("");
    return status;
  }
  if (sub == "poll32") return RegionPoll32(args);
  throw UsageError{"usage: vfioctl region read|read32|write|write32|poll32 INDEX OFFSET ..."};
}

absl::Status Cli::Irq(const std::vector<std::string>& args) {
  const std::string sub = args.size() >= 2 ? args[1] : "";
  if (sub == "watch") return IrqWatch(args);
  if (sub == "watch-start") return IrqWatchStart(args);
  if (sub == "wait") return IrqWait(args);
  if (sub == "watch-stop") {
    ExpectArgs(args, 2, "irq watch-stop");
    if (watch_ == nullptr) {
      return absl::FailedPreconditionError("no watch stream is open (irq watch-start)");
    }
    watch_->Cancel();
    watch_.reset();
    pending_events_.clear();
    Done("watch stream closed");
    return absl::OkStatus();
  }
  if (sub == "enable-watch") {
    ExpectArgs(args, 5, "irq enable-watch INDEX START COUNT");
    const v1::IrqIndex index = OrUsage(ParseIrqIndex(args[2]));
    const uint32_t start = OrUsage(ParseNumber32(args[3], "START"));
    const uint32_t count = OrUsage(ParseNumber32(args[4], "COUNT"));
    absl::Status status = client()->EnableIrqWatch(index, start, count);
    if (status.ok()) Done("");
    return status;
  }
  if (sub == "disable") {
    ExpectArgs(args, 3, "irq disable INDEX");
    absl::Status status = client()->DisableIrqs(OrUsage(ParseIrqIndex(args[2])));
    if (status.ok()) Done("");
    return status;
  }
  if (sub == "mask" || sub == "unmask") {
    ExpectArgs(args, 5, absl::StrCat("irq ", sub, " INDEX START COUNT"));
    const v1::IrqIndex index = OrUsage(ParseIrqIndex(args[2]));
    const uint32_t start = OrUsage(ParseNumber32(args[3], "START"));
    const uint32_t count = OrUsage(ParseNumber32(args[4], "COUNT"));
    absl::Status status = client()->SetIrqAction(
        index, start, count, sub == "mask" ? v1::IRQ_ACTION_MASK : v1::IRQ_ACTION_UNMASK);
    if (status.ok()) Done("");
    return status;
  }
  throw UsageError{
      "usage: vfioctl irq watch|watch-start|wait|watch-stop|enable-watch|disable|mask|unmask "
      "..."};
}

absl::Status Cli::IrqWatch(const std::vector<std::string>& args) {
  std::optional<uint64_t> count;
  absl::Duration timeout = absl::InfiniteDuration();
  std::optional<std::pair<uint32_t, uint32_t>> enable;
  std::vector<v1::IrqIndex> indexes;
  for (size_t i = 2; i < args.size(); ++i) {
    if (std::optional<std::string> value = TakeOption(args, &i, "--count")) {
      count = OrUsage(ParseNumber(*value, "--count"));
    } else if (std::optional<std::string> value = TakeOption(args, &i, "--timeout")) {
      timeout = ParseDurationOrUsage(*value);
    } else if (std::optional<std::string> value = TakeOption(args, &i, "--enable")) {
      std::vector<std::string> parts = absl::StrSplit(*value, ':');
      if (parts.size() != 2) throw UsageError{"--enable takes START:COUNT"};
      enable.emplace(OrUsage(ParseNumber32(parts[0], "START")),
                     OrUsage(ParseNumber32(parts[1], "COUNT")));
    } else if (absl::StartsWith(args[i], "-")) {
      throw UsageError{absl::StrCat("irq watch: unknown option ", args[i])};
    } else {
      indexes.push_back(OrUsage(ParseIrqIndex(args[i])));
    }
  }
  if (enable.has_value() && indexes.empty()) throw UsageError{"--enable needs an INDEX"};

  absl::StatusOr<std::unique_ptr<vfiod::IrqWatch>> watch = client()->WatchIrqs(indexes);
  if (!watch.ok()) return watch.status();
  if (enable.has_value()) {
    for (v1::IrqIndex index : indexes) {
      absl::Status status = client()->EnableIrqWatch(index, enable->first, enable->second);
      if (!status.ok()) return status;
    }
  }
  const absl::Time deadline =
      timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
  uint64_t seen = 0;
  while (!count.has_value() || seen < *count) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    absl::StatusOr<std::optional<v1::IrqEvent>> event = (*watch)->Next(left);
    if (!event.ok()) return event.status();
    if (!event->has_value()) continue;
    ++seen;
    const v1::IrqEvent& e = **event;
    if (g_.json) {
      std::cout << ToJson(e) << std::endl;
    } else {
      std::cout << IrqEventText(e) << std::endl;
    }
  }
  (*watch)->Cancel();
  if (count.has_value() && seen < *count) {
    return absl::DeadlineExceededError(absl::StrFormat("%d of %d events within %s", seen, *count,
                                                       absl::FormatDuration(timeout)));
  }
  return absl::OkStatus();
}

absl::Status Cli::RegionPoll32(const std::vector<std::string>& args) {
  if (args.size() != 6 && args.size() != 7) {
    throw UsageError{"usage: vfioctl region poll32 INDEX OFFSET MASK VALUE [TIMEOUT]"};
  }
  const uint32_t index = OrUsage(ParseNumber32(args[2], "INDEX"));
  const uint64_t offset = OrUsage(ParseNumber(args[3], "OFFSET"));
  const uint32_t mask = OrUsage(ParseNumber32(args[4], "MASK"));
  const uint32_t expected = OrUsage(ParseNumber32(args[5], "VALUE"));
  const absl::Duration timeout = args.size() == 7 ? ParseDurationOrUsage(args[6]) : kWaitTimeout;
  if ((expected & ~mask) != 0) {
    throw UsageError{absl::StrFormat("VALUE 0x%x has bits outside MASK 0x%x: it can never match",
                                     expected, mask)};
  }
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + timeout;
  absl::Duration pause = absl::Microseconds(100);
  uint64_t reads = 0;
  for (;;) {
    absl::StatusOr<uint32_t> value = client()->ReadRegion32(index, offset);
    if (!value.ok()) return value.status();
    ++reads;
    if ((*value & mask) == expected) {
      if (g_.json) {
        std::cout << absl::StrFormat("{\"index\":%d,\"offset\":%d,\"value\":%d,\"reads\":%d}\n",
                                     index, offset, *value, reads);
      } else {
        std::cout << absl::StrFormat("0x%08x (after %d %s)\n", *value, reads,
                                     reads == 1 ? "read" : "reads");
      }
      return absl::OkStatus();
    }
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      const std::string waited =
          timeout == absl::ZeroDuration() ? "0s" : absl::FormatDuration(timeout);
      return absl::DeadlineExceededError(absl::StrFormat(
          "0x%08x & 0x%x = 0x%x, not 0x%x, after %d %s (timeout %s)", *value, mask,
          *value & mask, expected, reads, reads == 1 ? "read" : "reads", waited));
    }
    absl::SleepFor(std::min(pause, deadline - now));
    pause = std::min(pause * 2, absl::Milliseconds(10));
  }
}

absl::Status Cli::IrqWatchStart(const std::vector<std::string>& args) {
  std::vector<v1::IrqIndex> indexes;
  for (size_t i = 2; i < args.size(); ++i) indexes.push_back(OrUsage(ParseIrqIndex(args[i])));
  if (watch_ != nullptr) {
    return absl::FailedPreconditionError("a watch stream is open already (irq watch-stop)");
  }
  absl::StatusOr<std::unique_ptr<vfiod::IrqWatch>> watch = client()->WatchIrqs(indexes);
  if (!watch.ok()) return watch.status();
  // Interrupts before the daemon has the subscription would not be streamed: wait for it.
  if (absl::Status status = (*watch)->WaitStarted(g_.timeout); !status.ok()) return status;
  watch_ = *std::move(watch);
  pending_events_.clear();
  std::vector<std::string> names;
  for (v1::IrqIndex index : indexes) names.push_back(IrqIndexName(index));
  Done(absl::StrCat("watching ", names.empty() ? "every index" : absl::StrJoin(names, " ")));
  return absl::OkStatus();
}

absl::Status Cli::IrqWait(const std::vector<std::string>& args) {
  if (args.size() != 3 && args.size() != 4) {
    throw UsageError{"usage: vfioctl irq wait INDEX [TIMEOUT]"};
  }
  const v1::IrqIndex index = OrUsage(ParseIrqIndex(args[2]));
  const absl::Duration timeout = args.size() == 4 ? ParseDurationOrUsage(args[3]) : kWaitTimeout;
  if (watch_ == nullptr) {
    return absl::FailedPreconditionError(
        "no watch stream is open: run irq watch-start first, in the same session");
  }
  auto print = [this](const v1::IrqEvent& event) {
    if (g_.json) {
      std::cout << ToJson(event) << "\n";
    } else {
      std::cout << IrqEventText(event) << "\n";
    }
    return absl::OkStatus();
  };
  // An event of this index taken earlier, while waiting for another index.
  for (auto it = pending_events_.begin(); it != pending_events_.end(); ++it) {
    if (it->index() != index) continue;
    const v1::IrqEvent event = *it;
    pending_events_.erase(it);
    return print(event);
  }
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const absl::Duration left = std::max(deadline - absl::Now(), absl::ZeroDuration());
    absl::StatusOr<std::optional<v1::IrqEvent>> event = watch_->Next(left);
    if (!event.ok()) return event.status();
    if (event->has_value()) {
      if ((*event)->index() == index) return print(**event);
      pending_events_.push_back(**std::move(event));
      continue;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "no %s interrupt within %s", IrqIndexName(index), absl::FormatDuration(timeout)));
    }
  }
}

absl::Status Cli::State() {
  absl::StatusOr<v1::DeviceState> state = client()->GetState();
  if (!state.ok()) return state.status();
  if (g_.json) {
    std::cout << ToJson(*state) << "\n";
    return absl::OkStatus();
  }
  std::string role = v1::Role_Name(state->caller_role());
  role = absl::AsciiStrToLower(absl::StripPrefix(role, "ROLE_"));
  std::cout << absl::StrFormat("Caller role: %s\nOwner attached: %s\nSessions: %d\n"
                               "Owner losses: %d\n",
                               role, YesNo(state->owner_attached()), state->sessions(),
                               state->owner_losses());

  std::cout << "\nMemory:\n";
  if (state->memory().empty()) {
    std::cout << "  none\n";
  } else {
    Table memory({"ID", "SIZE", "MAPPINGS"});
    for (const v1::MemoryState& m : state->memory()) {
      memory.Add({absl::StrCat(m.memory_id()), Hex(m.size()), absl::StrCat(m.mappings())});
    }
    std::cout << memory.Render();
  }

  std::cout << "\nDMA mappings:\n";
  if (state->dma_mappings().empty()) {
    std::cout << "  none\n";
  } else {
    Table dma({"IOVA", "SIZE", "MEMORY", "OFFSET", "DEVICE ACCESS"});
    for (const v1::DmaMappingState& d : state->dma_mappings()) {
      dma.Add({Hex(d.iova()), Hex(d.size()), absl::StrCat(d.memory_id()), Hex(d.offset()),
               absl::StrCat(d.device_read() ? "r" : "-", d.device_write() ? "w" : "-")});
    }
    std::cout << dma.Render();
  }

  std::cout << "\nIRQs:\n";
  if (state->irqs().empty()) std::cout << "  none\n";
  for (const v1::IrqIndexState& irq : state->irqs()) {
    std::cout << absl::StrFormat("  %s: %s\n", IrqIndexName(irq.index()),
                                 irq.enabled() ? "enabled" : "disabled");
    if (irq.vectors().empty()) continue;
    Table vectors({"VECTOR", "TRIGGER", "MASKED", "RESAMPLE", "DELIVERED"});
    for (const v1::IrqVectorState& v : irq.vectors()) {
      std::string trigger = v1::IrqVectorState::Trigger_Name(v.trigger());
      trigger = absl::AsciiStrToLower(absl::StripPrefix(trigger, "TRIGGER_"));
      vectors.Add({absl::StrCat(v.vector()), trigger, YesNo(v.masked()),
                   YesNo(v.unmask_eventfd()), absl::StrCat(v.delivered())});
    }
    std::cout << vectors.Render("    ");
  }

  std::cout << "\nRPC counters:\n";
  if (state->counters().empty()) {
    std::cout << "  none\n";
  } else {
    Table counters({"METHOD", "OK", "ERRORS"});
    for (const v1::RpcCounter& c : state->counters()) {
      counters.Add({c.method(), absl::StrCat(c.ok()), absl::StrCat(c.errors())});
    }
    std::cout << counters.Render();
  }
  std::cout << absl::StrFormat("\nDevice counters: dma_faults=%d interrupts=%d\n",
                               state->device().dma_faults(), state->device().interrupts());
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  Globals globals;
  if (const char* env = std::getenv("VFIOD_SOCKET"); env != nullptr) globals.socket = env;
  size_t i = 0;
  std::vector<std::string> command;
  try {
    for (; i < args.size() && absl::StartsWith(args[i], "-"); ++i) {
      if (args[i] == "--help" || args[i] == "-h") {
        std::cout << kUsage;
        return kExitOk;
      }
      if (args[i] == "--json") {
        globals.json = true;
      } else if (args[i] == "--claim") {
        globals.claim = true;
      } else if (std::optional<std::string> value = TakeOption(args, &i, "--socket")) {
        globals.socket = *value;
      } else if (std::optional<std::string> value = TakeOption(args, &i, "--timeout")) {
        globals.timeout = ParseDurationOrUsage(*value);
        if (globals.timeout == absl::ZeroDuration()) throw UsageError{"--timeout must be > 0"};
      } else {
        throw UsageError{absl::StrCat("unknown option ", args[i])};
      }
    }
    if (i == args.size()) throw UsageError{"no command"};
    if (globals.socket.empty()) throw UsageError{"no --socket (or $VFIOD_SOCKET)"};
  } catch (const UsageError& error) {
    std::cerr << "vfioctl: " << error.message << "\n\n" << kUsage;
    return kExitUsage;
  }
  command.assign(args.begin() + i, args.end());
  Cli cli(globals, NeedsFdChannel(command));
  if (command[0] == "session") return cli.Session(command);
  return cli.RunCommand(command);
}

}  // namespace
}  // namespace vfiod

int main(int argc, char** argv) { return vfiod::Main(argc, argv); }
