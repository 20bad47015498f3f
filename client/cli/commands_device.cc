// vfioctl's device commands: the description (info), config space, the state and reset.
#include "client/cli/commands_device.h"

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/cli/context.h"
#include "client/cli/format.h"
#include "client/cli/output.h"
#include "client/cli/text_table.h"
#include "client/config_decode.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {
namespace {

// --- info -----------------------------------------------------------------------------------

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

std::string InfoText(const v1::DeviceInfo& info) {
  std::string out;
  const v1::PciIds& ids = info.ids();
  absl::StrAppendFormat(&out, "Device:     %s (%s)\n", info.name(),
                        EnumWord(v1::BackendKind_Name(info.backend()), "BACKEND_KIND_"));
  absl::StrAppendFormat(&out,
                        "IDs:        %04x:%04x rev %02x, subsystem %04x:%04x, header type %02x\n",
                        ids.vendor_id(), ids.device_id(), ids.revision(), ids.subsystem_vendor_id(),
                        ids.subsystem_id(), ids.header_type());
  absl::StrAppendFormat(&out, "Class:      %06x (%s)\n", ids.class_code(),
                        client::ClassName(ids.class_code()));
  std::vector<std::string> flags;
  if (info.flags().pci()) flags.push_back("pci");
  if (info.flags().reset()) flags.push_back("reset");
  absl::StrAppendFormat(&out, "Flags:      %s (raw %s)\n",
                        flags.empty() ? "none" : absl::StrJoin(flags, " "),
                        Hex(info.flags().raw()));
  absl::StrAppendFormat(&out, "Config:     %d bytes\n", info.config_size());

  out += "\nRegions:\n";
  TextTable regions({"INDEX", "NAME", "SIZE", "FLAGS", "BAR", "EXTRA"});
  for (const v1::Region& region : info.regions()) {
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
                 region.size() == 0 ? "0"
                                    : absl::StrFormat("%s (%s)", Hex(region.size()),
                                                      client::FormatSize(region.size())),
                 rwm, region.has_bar() ? BarText(region.bar()) : "-",
                 extra.empty() ? "" : absl::StrJoin(extra, ", ")});
  }
  out += regions.Render();

  out += "\nIRQ indexes:\n";
  TextTable irqs({"INDEX", "COUNT", "FLAGS"});
  for (const v1::IrqIndexInfo& irq : info.irqs()) {
    std::vector<std::string> irq_flags;
    if (irq.eventfd()) irq_flags.push_back("eventfd");
    if (irq.maskable()) irq_flags.push_back("maskable");
    if (irq.automasked()) irq_flags.push_back("automasked");
    if (irq.noresize()) irq_flags.push_back("noresize");
    irqs.Add({IrqIndexName(irq.index()), absl::StrCat(irq.count()), absl::StrJoin(irq_flags, " ")});
  }
  out += irqs.Render();

  const v1::IommuInfo& iommu = info.iommu();
  out += "\nIOMMU:\n";
  absl::StrAppend(&out, "  page sizes: ", PageSizes(iommu.page_size_bitmap()), "\n");
  std::vector<std::string> ranges;
  for (const v1::IovaRange& range : iommu.usable_ranges()) {
    ranges.push_back(absl::StrFormat("%s-%s", Hex(range.start()), Hex(range.last())));
  }
  absl::StrAppend(
      &out, "  usable IOVA ranges: ", ranges.empty() ? "none" : absl::StrJoin(ranges, ", "), "\n");
  absl::StrAppend(&out, "  DMA mappings available: ", iommu.dma_mappings_available(), "\n");

  const v1::Limits& limits = info.limits();
  out += "\nLimits:\n";
  absl::StrAppendFormat(
      &out,
      "  memory: %d bytes in at most %d regions; DMA mappings: %d\n"
      "  region access: %d bytes per call; fds: %d per message, %d tokens outstanding\n",
      limits.max_memory_bytes(), limits.max_memory_regions(), limits.max_dma_mappings(),
      limits.max_region_access_bytes(), limits.max_fds_per_message(), limits.max_fd_tokens());

  out += "\nCapabilities:\n";
  if (info.capabilities().empty()) out += "  none\n";
  for (const v1::Capability& cap : info.capabilities()) {
    absl::StrAppendFormat(&out, "  [%02x] %s (id 0x%02x)\n", cap.offset(), cap.name(), cap.id());
  }
  if (!info.extended_capabilities().empty()) {
    out += "Extended capabilities:\n";
    for (const v1::Capability& cap : info.extended_capabilities()) {
      absl::StrAppendFormat(&out, "  [%03x v%d] %s (id 0x%04x)\n", cap.offset(), cap.version(),
                            cap.name(), cap.id());
    }
  }
  return out;
}

absl::Status Info(Context& ctx) {
  absl::StatusOr<v1::DeviceInfo> info = ctx.client().GetDeviceInfo();
  if (!info.ok()) return info.status();
  ctx.out().Print(*info, ctx.out().json() ? "" : InfoText(*info));
  return absl::OkStatus();
}

// --- config ---------------------------------------------------------------------------------

struct ConfigArgs {
  bool raw = false;
};

void DeclareConfig(CLI::App& app, ConfigArgs& args) {
  app.add_flag("--raw", args.raw, "a hex dump like lspci -xxx (JSON: the bytes as hex)");
}

absl::Status Config(Context& ctx, const ConfigArgs& args) {
  absl::StatusOr<std::string> data = ctx.client().DumpConfig(0, 0);
  if (!data.ok()) return data.status();
  if (args.raw) {
    ctx.out().Print(Json{{"offset", 0}, {"data", HexBytes(*data)}}, client::HexDump(*data));
    return absl::OkStatus();
  }
  client::FormatOptions options;
  // BAR sizes come from the daemon's sizing; without them the decode still works.
  if (absl::StatusOr<v1::DeviceInfo> info = ctx.client().GetDeviceInfo(); info.ok()) {
    for (const v1::Region& region : info->regions()) {
      if (region.name() == "ROM") {
        options.rom_size = region.size();
      } else if (region.index() < 6 && region.has_bar()) {
        options.bar_sizes[region.index()] = region.bar().size();
      }
    }
  }
  if (ctx.out().json()) {
    ctx.out().Print(Json::parse(client::ConfigToJson(*data, options)), "");
  } else {
    ctx.out().Raw(client::FormatConfig(*data, options));
  }
  return absl::OkStatus();
}

struct ConfigAccessArgs {
  uint32_t offset = 0;
  uint32_t size = 0;
  uint32_t value = 0;
};

void DeclareConfigRead(CLI::App& app, ConfigAccessArgs& args) {
  AddNumber32(app, "OFFSET", &args.offset, "byte offset in config space, aligned to SIZE")
      ->required();
  AddNumber32(app, "SIZE", &args.size, "1, 2 or 4 bytes")->required();
}

absl::Status ConfigRead(Context& ctx, const ConfigAccessArgs& args) {
  absl::StatusOr<uint32_t> value = ctx.client().ReadConfig(args.offset, args.size);
  if (!value.ok()) return value.status();
  ctx.out().Print(Json{{"offset", args.offset}, {"size", args.size}, {"value", *value}},
                  absl::StrFormat("0x%0*x\n", static_cast<int>(2 * args.size), *value));
  return absl::OkStatus();
}

void DeclareConfigWrite(CLI::App& app, ConfigAccessArgs& args) {
  DeclareConfigRead(app, args);
  AddNumber32(app, "VALUE", &args.value, "the value, little-endian")->required();
}

absl::Status ConfigWrite(Context& ctx, const ConfigAccessArgs& args) {
  absl::Status status = ctx.client().WriteConfig(args.offset, args.size, args.value);
  if (status.ok()) ctx.out().Done("");
  return status;
}

// --- state ----------------------------------------------------------------------------------

std::string StateText(const v1::DeviceState& state) {
  std::string out =
      absl::StrFormat("Caller role: %s\nOwner attached: %s\nSessions: %d\nOwner losses: %d\n",
                      EnumWord(v1::Role_Name(state.caller_role()), "ROLE_"),
                      YesNo(state.owner_attached()), state.sessions(), state.owner_losses());

  out += "\nMemory:\n";
  if (state.memory().empty()) {
    out += "  none\n";
  } else {
    TextTable memory({"ID", "SIZE", "MAPPINGS"});
    for (const v1::MemoryState& m : state.memory()) {
      memory.Add({absl::StrCat(m.memory_id()), Hex(m.size()), absl::StrCat(m.mappings())});
    }
    out += memory.Render();
  }

  out += "\nDMA mappings:\n";
  if (state.dma_mappings().empty()) {
    out += "  none\n";
  } else {
    TextTable dma({"IOVA", "SIZE", "MEMORY", "OFFSET", "DEVICE ACCESS"});
    for (const v1::DmaMappingState& d : state.dma_mappings()) {
      dma.Add({Hex(d.iova()), Hex(d.size()), absl::StrCat(d.memory_id()), Hex(d.offset()),
               absl::StrCat(d.device_read() ? "r" : "-", d.device_write() ? "w" : "-")});
    }
    out += dma.Render();
  }

  out += "\nIRQs:\n";
  if (state.irqs().empty()) out += "  none\n";
  for (const v1::IrqIndexState& irq : state.irqs()) {
    absl::StrAppendFormat(&out, "  %s: %s\n", IrqIndexName(irq.index()),
                          irq.enabled() ? "enabled" : "disabled");
    if (irq.vectors().empty()) continue;
    TextTable vectors({"VECTOR", "TRIGGER", "MASKED", "RESAMPLE", "DELIVERED"});
    for (const v1::IrqVectorState& v : irq.vectors()) {
      vectors.Add({absl::StrCat(v.vector()),
                   EnumWord(v1::IrqVectorState::Trigger_Name(v.trigger()), "TRIGGER_"),
                   YesNo(v.masked()), YesNo(v.unmask_eventfd()), absl::StrCat(v.delivered())});
    }
    out += vectors.Render("    ");
  }

  out += "\nRPC counters:\n";
  if (state.counters().empty()) {
    out += "  none\n";
  } else {
    TextTable counters({"METHOD", "OK", "ERRORS"});
    for (const v1::RpcCounter& c : state.counters()) {
      counters.Add({c.method(), absl::StrCat(c.ok()), absl::StrCat(c.errors())});
    }
    out += counters.Render();
  }
  absl::StrAppendFormat(&out, "\nDevice counters: dma_faults=%d interrupts=%d\n",
                        state.device().dma_faults(), state.device().interrupts());
  return out;
}

absl::Status State(Context& ctx) {
  absl::StatusOr<v1::DeviceState> state = ctx.client().GetState();
  if (!state.ok()) return state.status();
  ctx.out().Print(*state, ctx.out().json() ? "" : StateText(*state));
  return absl::OkStatus();
}

// --- reset ----------------------------------------------------------------------------------

absl::Status Reset(Context& ctx) {
  absl::Status status = ctx.client().Reset();
  if (status.ok()) ctx.out().Done("device reset");
  return status;
}

}  // namespace

std::vector<Command> DeviceCommands() {
  return {
      {"info", "", "the device: ids, regions and BARs, IRQ indexes, IOMMU, limits, capabilities",
       Role::kObserver, /*fd_channel=*/false, Define(Info)},
      {"config", "[--raw]", "config space decoded like lspci -vv (--raw: a hex dump)",
       Role::kObserver, /*fd_channel=*/false, Define(DeclareConfig, Config)},
      {"config read", "OFFSET SIZE", "one config space read", Role::kObserver,
       /*fd_channel=*/false, Define(DeclareConfigRead, ConfigRead)},
      {"config write", "OFFSET SIZE VALUE", "one config space write", Role::kOwner,
       /*fd_channel=*/false, Define(DeclareConfigWrite, ConfigWrite)},
      {"state", "",
       "sessions, owner, memory, DMA mappings, IRQ state per vector, RPC and device counters",
       Role::kObserver, /*fd_channel=*/false, Define(State)},
      {"reset", "", "reset the device", Role::kOwner, /*fd_channel=*/false, Define(Reset)},
  };
}

}  // namespace vfiod::cli
