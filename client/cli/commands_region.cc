// vfioctl's region commands: reads and writes of a BAR or the ROM, and register polling.
#include "client/cli/commands_region.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/cli/context.h"
#include "client/cli/format.h"
#include "client/cli/output.h"
#include "client/cli_parse.h"

namespace vfiod::cli {
namespace {

// Default TIMEOUT of region poll32.
constexpr absl::Duration kPollTimeout = absl::Seconds(5);

struct RegionArgs {
  uint32_t index = 0;
  uint64_t offset = 0;
  uint32_t size = 0;
  uint32_t value = 0;
  uint32_t mask = 0;
  std::string data;
  absl::Duration timeout = kPollTimeout;
};

void DeclareIndexOffset(CLI::App& app, RegionArgs& args) {
  AddNumber32(app, "INDEX", &args.index, "region index: 0-5 BARs, 6 ROM (vfioctl info)")
      ->required();
  AddNumber(app, "OFFSET", &args.offset, "byte offset in the region")->required();
}

void DeclareRead(CLI::App& app, RegionArgs& args) {
  DeclareIndexOffset(app, args);
  AddNumber32(app, "SIZE", &args.size, "bytes, at most the daemon's region access limit")
      ->required();
}

absl::Status Read(Context& ctx, const RegionArgs& args) {
  absl::StatusOr<std::string> data = ctx.client().ReadRegion(args.index, args.offset, args.size);
  if (!data.ok()) return data.status();
  ctx.out().Print(
      Json{{"index", args.index}, {"offset", Json64(args.offset)}, {"data", HexBytes(*data)}},
      HexDump64(*data, args.offset));
  return absl::OkStatus();
}

absl::Status Read32(Context& ctx, const RegionArgs& args) {
  absl::StatusOr<uint32_t> value = ctx.client().ReadRegion32(args.index, args.offset);
  if (!value.ok()) return value.status();
  ctx.out().Print(Json{{"index", args.index}, {"offset", Json64(args.offset)}, {"value", *value}},
                  absl::StrFormat("0x%08x\n", *value));
  return absl::OkStatus();
}

void DeclareWrite(CLI::App& app, RegionArgs& args) {
  DeclareIndexOffset(app, args);
  app.add_option_function<std::string>(
         "HEXBYTES",
         [&args](const std::string& text) {
           absl::StatusOr<std::string> data = client::ParseHexBytes(text);
           if (!data.ok()) throw CLI::ValidationError(std::string(data.status().message()));
           args.data = *data;
         },
         "the bytes in hex, e.g. 0102a0ff")
      ->required();
}

absl::Status Write(Context& ctx, const RegionArgs& args) {
  absl::Status status = ctx.client().WriteRegion(args.index, args.offset, args.data);
  if (status.ok()) ctx.out().Done("");
  return status;
}

void DeclareWrite32(CLI::App& app, RegionArgs& args) {
  DeclareIndexOffset(app, args);
  AddNumber32(app, "VALUE", &args.value, "the 32-bit value")->required();
}

absl::Status Write32(Context& ctx, const RegionArgs& args) {
  absl::Status status = ctx.client().WriteRegion32(args.index, args.offset, args.value);
  if (status.ok()) ctx.out().Done("");
  return status;
}

void DeclarePoll32(CLI::App& app, RegionArgs& args) {
  DeclareIndexOffset(app, args);
  AddNumber32(app, "MASK", &args.mask, "the bits to compare")->required();
  AddNumber32(app, "VALUE", &args.value, "what the masked bits must be")->required();
  AddDuration(app, "TIMEOUT", &args.timeout,
              "how long to keep reading (default 5s; 0s: read once, a check)");
  app.parse_complete_callback([&args] {
    if ((args.value & ~args.mask) != 0) {
      throw CLI::ValidationError(absl::StrFormat(
          "VALUE 0x%x has bits outside MASK 0x%x: it can never match", args.value, args.mask));
    }
  });
}

absl::Status Poll32(Context& ctx, const RegionArgs& args) {
  const absl::Time deadline = absl::Now() + args.timeout;
  absl::Duration pause = absl::Microseconds(100);
  uint64_t reads = 0;
  for (;;) {
    absl::StatusOr<uint32_t> value = ctx.client().ReadRegion32(args.index, args.offset);
    if (!value.ok()) return value.status();
    ++reads;
    const char* noun = reads == 1 ? "read" : "reads";
    if ((*value & args.mask) == args.value) {
      ctx.out().Print(Json{{"index", args.index},
                           {"offset", Json64(args.offset)},
                           {"value", *value},
                           {"reads", Json64(reads)}},
                      absl::StrFormat("0x%08x (after %d %s)\n", *value, reads, noun));
      return absl::OkStatus();
    }
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      const std::string waited =
          args.timeout == absl::ZeroDuration() ? "0s" : absl::FormatDuration(args.timeout);
      return absl::DeadlineExceededError(
          absl::StrFormat("0x%08x & 0x%x = 0x%x, not 0x%x, after %d %s (timeout %s)", *value,
                          args.mask, *value & args.mask, args.value, reads, noun, waited));
    }
    absl::SleepFor(std::min(pause, deadline - now));
    pause = std::min(pause * 2, absl::Milliseconds(10));
  }
}

}  // namespace

// Region reads need the owner, or an observer when the daemon runs with --observer-bar-reads:
// the daemon decides, so they are Role::kObserver here.
std::vector<Command> RegionCommands() {
  return {
      {"region read", "INDEX OFFSET SIZE", "read bytes of a region, as a hex dump", Role::kObserver,
       /*fd_channel=*/false, Define(DeclareRead, Read)},
      {"region read32", "INDEX OFFSET", "read a 32-bit register", Role::kObserver,
       /*fd_channel=*/false, Define(DeclareIndexOffset, Read32)},
      {"region write", "INDEX OFFSET HEXBYTES", "write bytes, e.g. 0102a0ff", Role::kOwner,
       /*fd_channel=*/false, Define(DeclareWrite, Write)},
      {"region write32", "INDEX OFFSET VALUE", "write a 32-bit register", Role::kOwner,
       /*fd_channel=*/false, Define(DeclareWrite32, Write32)},
      {"region poll32", "INDEX OFFSET MASK VALUE [TIMEOUT]",
       "read a register until (value & MASK) == VALUE; fails after TIMEOUT", Role::kObserver,
       /*fd_channel=*/false, Define(DeclarePoll32, Poll32)},
  };
}

}  // namespace vfiod::cli
