// vfioctl's guest memory commands. `memory create` makes a sealed memfd, maps it in vfioctl and
// registers it with the daemon (passing the fd on the fd channel); fill, dump and compare work
// on vfioctl's own mapping, so a script can prepare and check what the device reads and writes
// by DMA. The memory lives as long as the connection: use these in a session.
#include "client/cli/commands_memory.h"

#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/cli/context.h"
#include "client/cli/format.h"
#include "client/cli/output.h"
#include "client/config_decode.h"
#include "client/guest_memory.h"
#include "client/vfio_client.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {
namespace {

// A memory ID operand: a number, or the NAME given to memory create (resolved at run time).
constexpr char kIdHelp[] = "the memory: the id memory create printed, or its NAME";

// --- memory create --------------------------------------------------------------------------

struct CreateArgs {
  uint64_t size = 0;
  std::string name;
};

bool ValidName(const std::string& name) {
  if (name.empty() || !absl::ascii_isalpha(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

void DeclareCreate(CLI::App& app, CreateArgs& args) {
  AddNumber(app, "SIZE", &args.size, "bytes, e.g. 64K")->required();
  AddText(app, "NAME", &args.name,
          "a name for later commands: a letter, then letters, digits, _ or -");
  app.parse_complete_callback([&args] {
    if (args.size == 0) throw CLI::ValidationError("SIZE must be > 0");
    if (!args.name.empty() && !ValidName(args.name)) {
      throw CLI::ValidationError(
          absl::StrCat("bad NAME \"", args.name, "\" (a letter, then letters, digits, _ or -)"));
    }
  });
}

absl::Status Create(Context& ctx, const CreateArgs& args) {
  if (!args.name.empty() && ctx.HasMemoryName(args.name)) {
    return UsageError(absl::StrCat("memory \"", args.name, "\" exists already"));
  }
  absl::StatusOr<client::UniqueFd> fd = VfioClient::CreateSealedMemfd("vfioctl-guest", args.size);
  if (!fd.ok()) return fd.status();
  absl::StatusOr<client::GuestMemory> memory = client::GuestMemory::Map(*std::move(fd), args.size);
  if (!memory.ok()) return memory.status();
  absl::StatusOr<v1::RegisterMemoryResponse> registered =
      ctx.client().RegisterMemory(memory->fd(), args.size);
  if (!registered.ok()) return registered.status();
  const uint64_t id = registered->memory_id();
  ctx.AddMemory(id, *std::move(memory), args.name);
  Json json = {{"memoryId", Json64(id)}, {"size", Json64(registered->size())}};
  if (!args.name.empty()) json["name"] = args.name;
  ctx.out().Print(json, absl::StrFormat("memory %d: %s bytes (%s)%s\n", id, Hex(registered->size()),
                                        client::FormatSize(registered->size()),
                                        args.name.empty() ? "" : ", named " + args.name));
  if (!ctx.in_session()) {
    ctx.out().Flush();
    std::cerr << "vfioctl: note: the memory is released when this vfioctl exits; run memory "
                 "commands in a session\n";
  }
  return absl::OkStatus();
}

// --- memory fill, dump, compare -------------------------------------------------------------

struct RangeArgs {
  std::string id;
  uint64_t offset = 0;
  uint64_t offset_b = 0;
  uint64_t length = 0;
  client::FillPattern pattern;
};

void DeclareFill(CLI::App& app, RangeArgs& args) {
  AddText(app, "ID", &args.id, kIdHelp)->required();
  AddNumber(app, "OFFSET", &args.offset, "where to start")->required();
  AddNumber(app, "LENGTH", &args.length, "how many bytes")->required();
  app.add_option_function<std::string>(
         "PATTERN",
         [&args](const std::string& text) {
           absl::StatusOr<client::FillPattern> pattern = client::ParseFillPattern(text);
           if (!pattern.ok()) throw CLI::ValidationError(std::string(pattern.status().message()));
           args.pattern = *pattern;
         },
         "a byte (0x5a), seq (byte i = i*7+3) or random:SEED; i counts from OFFSET")
      ->required();
}

absl::Status Fill(Context& ctx, const RangeArgs& args) {
  absl::StatusOr<uint64_t> id = ctx.MemoryId(args.id);
  if (!id.ok()) return id.status();
  absl::StatusOr<client::GuestMemory*> memory = ctx.LocalMemory(*id);
  if (!memory.ok()) return memory.status();
  absl::Status status = (*memory)->Fill(args.offset, args.length, args.pattern);
  if (!status.ok()) return status;
  ctx.out().Done(absl::StrFormat("filled %s bytes at %s with %s", Hex(args.length),
                                 Hex(args.offset), client::FillPatternName(args.pattern)));
  return absl::OkStatus();
}

void DeclareDump(CLI::App& app, RangeArgs& args) {
  AddText(app, "ID", &args.id, kIdHelp)->required();
  AddNumber(app, "OFFSET", &args.offset, "where to start")->required();
  AddNumber(app, "LENGTH", &args.length, "how many bytes")->required();
}

absl::Status Dump(Context& ctx, const RangeArgs& args) {
  absl::StatusOr<uint64_t> id = ctx.MemoryId(args.id);
  if (!id.ok()) return id.status();
  absl::StatusOr<client::GuestMemory*> memory = ctx.LocalMemory(*id);
  if (!memory.ok()) return memory.status();
  absl::StatusOr<std::string> data = (*memory)->Read(args.offset, args.length);
  if (!data.ok()) return data.status();
  ctx.out().Print(
      Json{{"memoryId", Json64(*id)}, {"offset", Json64(args.offset)}, {"data", HexBytes(*data)}},
      HexDump64(*data, args.offset));
  return absl::OkStatus();
}

void DeclareCompare(CLI::App& app, RangeArgs& args) {
  AddText(app, "ID", &args.id, kIdHelp)->required();
  AddNumber(app, "OFFSET_A", &args.offset, "the first range")->required();
  AddNumber(app, "OFFSET_B", &args.offset_b, "the second range")->required();
  AddNumber(app, "LENGTH", &args.length, "how many bytes")->required();
}

absl::Status Compare(Context& ctx, const RangeArgs& args) {
  absl::StatusOr<uint64_t> id = ctx.MemoryId(args.id);
  if (!id.ok()) return id.status();
  absl::StatusOr<client::GuestMemory*> memory = ctx.LocalMemory(*id);
  if (!memory.ok()) return memory.status();
  absl::StatusOr<std::optional<uint64_t>> difference =
      (*memory)->Compare(args.offset, args.offset_b, args.length);
  if (!difference.ok()) return difference.status();
  if (!difference->has_value()) {
    ctx.out().Print(Json{{"equal", true}, {"length", Json64(args.length)}},
                    absl::StrFormat("equal: %s bytes at %s and %s\n", Hex(args.length),
                                    Hex(args.offset), Hex(args.offset_b)));
    return absl::OkStatus();
  }
  const uint64_t at = **difference;
  const std::string a = *(*memory)->Read(args.offset + at, 1);
  const std::string b = *(*memory)->Read(args.offset_b + at, 1);
  if (ctx.out().json()) {
    ctx.out().Print(
        Json{{"equal", false}, {"length", Json64(args.length)}, {"firstDifference", Json64(at)}},
        "");
  }
  return absl::DataLossError(
      absl::StrFormat("the ranges differ first at +%s: 0x%02x at %s, 0x%02x at %s", Hex(at),
                      static_cast<uint8_t>(a[0]), Hex(args.offset + at), static_cast<uint8_t>(b[0]),
                      Hex(args.offset_b + at)));
}

// --- memory unregister ----------------------------------------------------------------------

void DeclareUnregister(CLI::App& app, RangeArgs& args) {
  AddText(app, "ID", &args.id, kIdHelp)->required();
}

absl::Status Unregister(Context& ctx, const RangeArgs& args) {
  absl::StatusOr<uint64_t> id = ctx.MemoryId(args.id);
  if (!id.ok()) return id.status();
  absl::Status status = ctx.client().UnregisterMemory(*id);
  if (!status.ok()) return status;
  ctx.ForgetMemory(*id);
  ctx.out().Done(absl::StrCat("memory ", *id, " unregistered"));
  return absl::OkStatus();
}

}  // namespace

std::vector<Command> MemoryCommands() {
  return {
      {"memory create", "SIZE [NAME]",
       "a sealed memfd of SIZE bytes, mapped here and registered as guest memory; prints its id",
       Role::kOwner, /*fd_channel=*/true, Define(DeclareCreate, Create)},
      {"memory fill", "ID OFFSET LENGTH PATTERN", "fill guest memory with a pattern", Role::kNone,
       /*fd_channel=*/false, Define(DeclareFill, Fill)},
      {"memory dump", "ID OFFSET LENGTH", "hex dump of guest memory", Role::kNone,
       /*fd_channel=*/false, Define(DeclareDump, Dump)},
      {"memory compare", "ID OFFSET_A OFFSET_B LENGTH",
       "compare two ranges; fails with the first differing offset", Role::kNone,
       /*fd_channel=*/false, Define(DeclareCompare, Compare)},
      {"memory unregister", "ID", "unregister guest memory", Role::kOwner, /*fd_channel=*/false,
       Define(DeclareUnregister, Unregister)},
  };
}

}  // namespace vfiod::cli
