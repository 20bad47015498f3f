// vfioctl top: a live view of one daemon, refreshed every --interval: owner, sessions, memory
// and DMA mappings, IRQ vectors with their rates, RPC methods with their rates, device
// counters. Rates are the differences of successive GetState counters over the time between
// the two calls; the first frame has none. On a terminal each frame replaces the last (ANSI
// home and clear); otherwise frames follow one another, and with --json each is one line.
#include "client/cli/commands_top.h"

#include <unistd.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/cli/context.h"
#include "client/cli/format.h"
#include "client/cli/output.h"
#include "client/cli/text_table.h"
#include "client/cli_parse.h"
#include "client/config_decode.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {
namespace {

// Moves the cursor home and clears the screen.
constexpr char kClearScreen[] = "\033[H\033[2J";

struct TopArgs {
  std::optional<uint64_t> count;
  absl::Duration interval = absl::Seconds(1);
};

void DeclareTop(CLI::App& app, TopArgs& args) {
  AddOptionalNumber(app, "--count", &args.count,
                    "stop after N frames (default: run until interrupted)");
  AddDuration(app, "--interval", &args.interval, "time between frames (default 1s)");
  app.parse_complete_callback([&args] {
    if (args.interval <= absl::ZeroDuration()) {
      throw CLI::ValidationError("--interval must be > 0");
    }
  });
}

// One GetState and when it was taken.
struct Sample {
  absl::Time time;
  v1::DeviceState state;
};

// The per-second increase of `counter` since `previous`; nullopt without a previous value or
// when the counter went down (reset).
std::optional<double> Rate(uint64_t counter, std::optional<uint64_t> previous,
                           absl::Duration elapsed) {
  if (!previous.has_value() || counter < *previous || elapsed <= absl::ZeroDuration()) {
    return std::nullopt;
  }
  return static_cast<double>(counter - *previous) / absl::ToDoubleSeconds(elapsed);
}

std::string RateText(std::optional<double> rate) {
  return rate.has_value() ? absl::StrFormat("%.1f", *rate) : "-";
}

Json RateJson(std::optional<double> rate) { return rate.has_value() ? Json(*rate) : Json(); }

// Rates of one frame, keyed like the state's repeated fields.
struct Rates {
  std::map<std::pair<int, uint32_t>, std::optional<double>> irq;  // (index, vector)
  std::map<std::string, std::pair<std::optional<double>, std::optional<double>>> rpc;  // ok, err
  std::optional<double> interrupts;
  std::optional<double> dma_faults;
};

Rates ComputeRates(const Sample& now, const std::optional<Sample>& before) {
  const absl::Duration elapsed =
      before.has_value() ? now.time - before->time : absl::ZeroDuration();
  std::map<std::pair<int, uint32_t>, uint64_t> delivered;
  std::map<std::string, std::pair<uint64_t, uint64_t>> calls;
  if (before.has_value()) {
    for (const v1::IrqIndexState& irq : before->state.irqs()) {
      for (const v1::IrqVectorState& v : irq.vectors()) {
        delivered[{irq.index(), v.vector()}] = v.delivered();
      }
    }
    for (const v1::RpcCounter& c : before->state.counters())
      calls[c.method()] = {c.ok(), c.errors()};
  }
  auto previous = [](const auto& map, const auto& key) {
    auto it = map.find(key);
    return it == map.end() ? std::nullopt : std::make_optional(it->second);
  };
  Rates rates;
  for (const v1::IrqIndexState& irq : now.state.irqs()) {
    for (const v1::IrqVectorState& v : irq.vectors()) {
      const std::pair<int, uint32_t> key{irq.index(), v.vector()};
      rates.irq[key] = Rate(v.delivered(), previous(delivered, key), elapsed);
    }
  }
  for (const v1::RpcCounter& c : now.state.counters()) {
    std::optional<std::pair<uint64_t, uint64_t>> was = previous(calls, c.method());
    rates.rpc[c.method()] = {
        Rate(c.ok(), was.has_value() ? std::make_optional(was->first) : std::nullopt, elapsed),
        Rate(c.errors(), was.has_value() ? std::make_optional(was->second) : std::nullopt,
             elapsed)};
  }
  if (before.has_value()) {
    rates.interrupts =
        Rate(now.state.device().interrupts(), before->state.device().interrupts(), elapsed);
    rates.dma_faults =
        Rate(now.state.device().dma_faults(), before->state.device().dma_faults(), elapsed);
  }
  return rates;
}

std::string FrameText(const std::string& header, const v1::DeviceState& state, const Rates& rates) {
  std::string out = header;
  uint64_t memory_bytes = 0;
  for (const v1::MemoryState& m : state.memory()) memory_bytes += m.size();
  absl::StrAppendFormat(&out, "Owner: %s   Sessions: %d (this one included)   Owner losses: %d\n",
                        state.owner_attached() ? "attached" : "none", state.sessions(),
                        state.owner_losses());
  absl::StrAppendFormat(&out, "Memory: %d regions, %s bytes   DMA mappings: %d\n",
                        state.memory_size(), client::FormatSize(memory_bytes),
                        state.dma_mappings_size());
  if (!state.dma_mappings().empty()) {
    TextTable dma({"IOVA", "SIZE", "MEMORY", "OFFSET", "DEVICE ACCESS"});
    for (const v1::DmaMappingState& d : state.dma_mappings()) {
      dma.Add({Hex(d.iova()), Hex(d.size()), absl::StrCat(d.memory_id()), Hex(d.offset()),
               absl::StrCat(d.device_read() ? "r" : "-", d.device_write() ? "w" : "-")});
    }
    out += dma.Render();
  }

  out += "\nIRQs:\n";
  TextTable irqs({"INDEX", "VECTOR", "TRIGGER", "MASKED", "DELIVERED", "PER SECOND"});
  bool any_vector = false;
  for (const v1::IrqIndexState& irq : state.irqs()) {
    for (const v1::IrqVectorState& v : irq.vectors()) {
      any_vector = true;
      auto rate = rates.irq.find({irq.index(), v.vector()});
      irqs.Add({IrqIndexName(irq.index()), absl::StrCat(v.vector()),
                EnumWord(v1::IrqVectorState::Trigger_Name(v.trigger()), "TRIGGER_"),
                YesNo(v.masked()), absl::StrCat(v.delivered()),
                RateText(rate == rates.irq.end() ? std::nullopt : rate->second)});
    }
  }
  out += any_vector ? irqs.Render() : "  no vector enabled\n";

  out += "\nRPCs (methods called so far):\n";
  TextTable rpcs({"METHOD", "OK", "ERRORS", "OK/S", "ERRORS/S"});
  bool any_call = false;
  for (const v1::RpcCounter& c : state.counters()) {
    if (c.ok() == 0 && c.errors() == 0) continue;
    any_call = true;
    auto rate = rates.rpc.find(c.method());
    const bool known = rate != rates.rpc.end();
    rpcs.Add({c.method(), absl::StrCat(c.ok()), absl::StrCat(c.errors()),
              RateText(known ? rate->second.first : std::nullopt),
              RateText(known ? rate->second.second : std::nullopt)});
  }
  out += any_call ? rpcs.Render() : "  none\n";
  absl::StrAppendFormat(&out, "\nDevice: interrupts %d (%s/s), DMA faults %d (%s/s)\n",
                        state.device().interrupts(), RateText(rates.interrupts),
                        state.device().dma_faults(), RateText(rates.dma_faults));
  return out;
}

Json FrameJson(const v1::DeviceInfo& info, const Sample& sample, const Rates& rates) {
  Json irq_rates = Json::array();
  for (const auto& [key, rate] : rates.irq) {
    irq_rates.push_back({{"index", IrqIndexName(key.first)},
                         {"vector", key.second},
                         {"perSecond", RateJson(rate)}});
  }
  Json rpc_rates = Json::array();
  for (const auto& [method, rate] : rates.rpc) {
    rpc_rates.push_back({{"method", method},
                         {"okPerSecond", RateJson(rate.first)},
                         {"errorsPerSecond", RateJson(rate.second)}});
  }
  return Json{{"time", absl::FormatTime(absl::RFC3339_full, sample.time, absl::UTCTimeZone())},
              {"device", info.name()},
              {"state", ProtoToJsonValue(sample.state)},
              {"irqRates", std::move(irq_rates)},
              {"rpcRates", std::move(rpc_rates)},
              {"interruptsPerSecond", RateJson(rates.interrupts)},
              {"dmaFaultsPerSecond", RateJson(rates.dma_faults)}};
}

absl::Status Top(Context& ctx, const TopArgs& args) {
  absl::StatusOr<v1::DeviceInfo> info = ctx.client().GetDeviceInfo();
  if (!info.ok()) return info.status();
  const bool terminal = !ctx.out().json() && ::isatty(STDOUT_FILENO) == 1;
  const absl::Time start = absl::Now();
  std::optional<Sample> before;
  for (uint64_t frame = 0; !args.count.has_value() || frame < *args.count; ++frame) {
    if (frame > 0) absl::SleepFor(start + frame * args.interval - absl::Now());
    absl::StatusOr<v1::DeviceState> state = ctx.client().GetState();
    if (!state.ok()) return state.status();
    Sample sample{absl::Now(), *std::move(state)};
    const Rates rates = ComputeRates(sample, before);
    if (ctx.out().json()) {
      ctx.out().Print(FrameJson(*info, sample, rates), "");
    } else {
      const std::string header =
          absl::StrFormat("vfioctl top: %s (%s) at %s, every %s, %s\n", info->name(),
                          EnumWord(v1::BackendKind_Name(info->backend()), "BACKEND_KIND_"),
                          ctx.options().socket, absl::FormatDuration(args.interval),
                          absl::FormatTime("%H:%M:%S", sample.time, absl::LocalTimeZone()));
      ctx.out().Raw(absl::StrCat(terminal ? kClearScreen : (frame > 0 ? "\n" : ""),
                                 FrameText(header, sample.state, rates)));
    }
    ctx.out().Flush();
    before = std::move(sample);
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<Command> TopCommands() {
  return {
      {"top", "[--count N] [--interval DURATION]",
       "a live view: owner, sessions, mappings, IRQ rates per vector, RPC rates and errors",
       Role::kObserver, /*fd_channel=*/false, Define(DeclareTop, Top)},
  };
}

}  // namespace vfiod::cli
