// vfioctl's interrupt commands. Two ways to see interrupts: `irq watch` streams them until a
// count or a timeout; in a session, `irq watch-start` opens a stream that `irq wait` takes one
// event at a time from (so a script can trigger an interrupt, then wait for it), until
// `irq watch-stop`.
#include "client/cli/commands_irq.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/cli/context.h"
#include "client/cli/format.h"
#include "client/cli/output.h"
#include "client/cli_parse.h"
#include "client/vfio_client.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {
namespace {

// Default TIMEOUT of irq wait.
constexpr absl::Duration kWaitTimeout = absl::Seconds(5);

void PrintEvent(Context& ctx, const v1::IrqEvent& event) {
  ctx.out().Print(event, IrqEventText(event) + "\n");
  ctx.out().Flush();
}

// --- irq watch ------------------------------------------------------------------------------

struct WatchArgs {
  std::optional<uint64_t> count;
  absl::Duration timeout = absl::InfiniteDuration();
  std::optional<std::pair<uint32_t, uint32_t>> enable;
  std::vector<v1::IrqIndex> indexes;
};

void DeclareWatch(CLI::App& app, WatchArgs& args) {
  AddOptionalNumber(app, "--count", &args.count,
                    "stop after N events (fails if fewer arrive within --timeout)");
  AddDuration(app, "--timeout", &args.timeout, "stop after this long (default: never)");
  app.add_option_function<std::string>(
         "--enable",
         [&args](const std::string& text) {
           std::vector<std::string> parts = absl::StrSplit(text, ':');
           if (parts.size() != 2) throw CLI::ValidationError("--enable takes START:COUNT");
           absl::StatusOr<uint32_t> start = client::ParseNumber32(parts[0], "START");
           absl::StatusOr<uint32_t> count = client::ParseNumber32(parts[1], "COUNT");
           if (!start.ok()) throw CLI::ValidationError(std::string(start.status().message()));
           if (!count.ok()) throw CLI::ValidationError(std::string(count.status().message()));
           args.enable.emplace(*start, *count);
         },
         "first turn on daemon-owned eventfds for vectors START..START+COUNT-1 of each INDEX "
         "(owner)")
      ->type_name("START:COUNT");
  AddIrqIndexes(app, "INDEX", &args.indexes, "intx, msi, msix, err, req or 0..4 (none: all)");
  app.parse_complete_callback([&args] {
    if (args.enable.has_value() && args.indexes.empty()) {
      throw CLI::ValidationError("--enable needs an INDEX");
    }
  });
}

absl::Status Watch(Context& ctx, const WatchArgs& args) {
  absl::StatusOr<std::unique_ptr<IrqWatch>> watch = ctx.client().WatchIrqs(args.indexes);
  if (!watch.ok()) return watch.status();
  if (args.enable.has_value()) {
    for (v1::IrqIndex index : args.indexes) {
      absl::Status status =
          ctx.client().EnableIrqWatch(index, args.enable->first, args.enable->second);
      if (!status.ok()) return status;
    }
  }
  const absl::Time deadline = args.timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                       : absl::Now() + args.timeout;
  uint64_t seen = 0;
  while (!args.count.has_value() || seen < *args.count) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    absl::StatusOr<std::optional<v1::IrqEvent>> event = (*watch)->Next(left);
    if (!event.ok()) return event.status();
    if (!event->has_value()) continue;
    ++seen;
    PrintEvent(ctx, **event);
  }
  (*watch)->Cancel();
  if (args.count.has_value() && seen < *args.count) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "%d of %d events within %s", seen, *args.count, absl::FormatDuration(args.timeout)));
  }
  return absl::OkStatus();
}

// --- irq watch-start, wait, watch-stop ------------------------------------------------------

struct WatchStartArgs {
  std::vector<v1::IrqIndex> indexes;
};

void DeclareWatchStart(CLI::App& app, WatchStartArgs& args) {
  AddIrqIndexes(app, "INDEX", &args.indexes, "intx, msi, msix, err, req or 0..4 (none: all)");
}

absl::Status WatchStart(Context& ctx, const WatchStartArgs& args) {
  if (ctx.watch() != nullptr) {
    return absl::FailedPreconditionError("a watch stream is open already (irq watch-stop)");
  }
  absl::StatusOr<std::unique_ptr<IrqWatch>> watch = ctx.client().WatchIrqs(args.indexes);
  if (!watch.ok()) return watch.status();
  // Interrupts before the daemon has the subscription would not be streamed: wait for it.
  if (absl::Status status = (*watch)->WaitStarted(ctx.options().timeout); !status.ok()) {
    return status;
  }
  ctx.SetWatch(*std::move(watch));
  std::vector<std::string> names;
  for (v1::IrqIndex index : args.indexes) names.push_back(IrqIndexName(index));
  ctx.out().Done(
      absl::StrCat("watching ", names.empty() ? "every index" : absl::StrJoin(names, " ")));
  return absl::OkStatus();
}

struct WaitArgs {
  v1::IrqIndex index = v1::IRQ_INDEX_INTX;
  absl::Duration timeout = kWaitTimeout;
};

void DeclareWait(CLI::App& app, WaitArgs& args) {
  AddIrqIndex(app, "INDEX", &args.index, "intx, msi, msix, err, req or 0..4")->required();
  AddDuration(app, "TIMEOUT", &args.timeout, "how long to wait (default 5s)");
}

absl::Status Wait(Context& ctx, const WaitArgs& args) {
  if (ctx.watch() == nullptr) {
    return absl::FailedPreconditionError(
        "no watch stream is open: run irq watch-start first, in the same session");
  }
  // An event of this index taken earlier, while waiting for another index.
  std::deque<v1::IrqEvent>& pending = ctx.pending_events();
  for (auto it = pending.begin(); it != pending.end(); ++it) {
    if (it->index() != args.index) continue;
    const v1::IrqEvent event = *it;
    pending.erase(it);
    PrintEvent(ctx, event);
    return absl::OkStatus();
  }
  const absl::Time deadline = absl::Now() + args.timeout;
  for (;;) {
    const absl::Duration left = std::max(deadline - absl::Now(), absl::ZeroDuration());
    absl::StatusOr<std::optional<v1::IrqEvent>> event = ctx.watch()->Next(left);
    if (!event.ok()) return event.status();
    if (event->has_value()) {
      if ((*event)->index() == args.index) {
        PrintEvent(ctx, **event);
        return absl::OkStatus();
      }
      pending.push_back(**std::move(event));
      continue;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrFormat("no %s interrupt within %s",
                                                         IrqIndexName(args.index),
                                                         absl::FormatDuration(args.timeout)));
    }
  }
}

absl::Status WatchStop(Context& ctx) {
  if (ctx.watch() == nullptr) {
    return absl::FailedPreconditionError("no watch stream is open (irq watch-start)");
  }
  ctx.SetWatch(nullptr);
  ctx.out().Done("watch stream closed");
  return absl::OkStatus();
}

// --- irq enable-watch, disable, mask, unmask ------------------------------------------------

struct VectorsArgs {
  v1::IrqIndex index = v1::IRQ_INDEX_INTX;
  uint32_t start = 0;
  uint32_t count = 0;
};

void DeclareIndex(CLI::App& app, VectorsArgs& args) {
  AddIrqIndex(app, "INDEX", &args.index, "intx, msi, msix, err, req or 0..4")->required();
}

void DeclareVectors(CLI::App& app, VectorsArgs& args) {
  DeclareIndex(app, args);
  AddNumber32(app, "START", &args.start, "the first vector")->required();
  AddNumber32(app, "COUNT", &args.count, "how many vectors")->required();
}

absl::Status EnableWatch(Context& ctx, const VectorsArgs& args) {
  absl::Status status = ctx.client().EnableIrqWatch(args.index, args.start, args.count);
  if (status.ok()) ctx.out().Done("");
  return status;
}

absl::Status Disable(Context& ctx, const VectorsArgs& args) {
  absl::Status status = ctx.client().DisableIrqs(args.index);
  if (status.ok()) ctx.out().Done("");
  return status;
}

absl::Status Mask(Context& ctx, const VectorsArgs& args) {
  absl::Status status =
      ctx.client().SetIrqAction(args.index, args.start, args.count, v1::IRQ_ACTION_MASK);
  if (status.ok()) ctx.out().Done("");
  return status;
}

absl::Status Unmask(Context& ctx, const VectorsArgs& args) {
  absl::Status status =
      ctx.client().SetIrqAction(args.index, args.start, args.count, v1::IRQ_ACTION_UNMASK);
  if (status.ok()) ctx.out().Done("");
  return status;
}

}  // namespace

std::vector<Command> IrqCommands() {
  return {
      {"irq watch", "[--count N] [--timeout DURATION] [--enable START:COUNT] [INDEX...]",
       "stream interrupts delivered to daemon-owned eventfds, one line each", Role::kObserver,
       /*fd_channel=*/false, Define(DeclareWatch, Watch)},
      {"irq enable-watch", "INDEX START COUNT",
       "turn on daemon-owned eventfds (whose interrupts watch streams show)", Role::kOwner,
       /*fd_channel=*/false, Define(DeclareVectors, EnableWatch)},
      {"irq disable", "INDEX", "turn off every vector of INDEX", Role::kOwner,
       /*fd_channel=*/false, Define(DeclareIndex, Disable)},
      {"irq mask", "INDEX START COUNT", "mask vectors", Role::kOwner, /*fd_channel=*/false,
       Define(DeclareVectors, Mask)},
      {"irq unmask", "INDEX START COUNT", "unmask vectors", Role::kOwner, /*fd_channel=*/false,
       Define(DeclareVectors, Unmask)},
      {"irq watch-start", "[INDEX...]",
       "open this connection's watch stream (none: all indexes); returns once it is live",
       Role::kObserver, /*fd_channel=*/false, Define(DeclareWatchStart, WatchStart)},
      {"irq wait", "INDEX [TIMEOUT]", "take one interrupt of INDEX from the watch stream",
       Role::kNone, /*fd_channel=*/false, Define(DeclareWait, Wait)},
      {"irq watch-stop", "", "close the watch stream", Role::kNone, /*fd_channel=*/false,
       Define(WatchStop)},
  };
}

}  // namespace vfiod::cli
