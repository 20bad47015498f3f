// vfioctl: the operator CLI of vfiod. See Usage() for the commands.
//
// Exit codes: 0 success, 1 an RPC (or connection) error, 2 a usage error.
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
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
#include "client/config_decode.h"
#include "client/vfio_client.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitRpcError = 1;
constexpr int kExitUsage = 2;

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
  irq watch [--count N] [--timeout D] [--enable START:COUNT] [INDEX...]
                                         stream interrupts; --enable turns on daemon-owned
                                         eventfds for the INDEXes first (owner)
  irq enable-watch INDEX START COUNT     (owner)
  irq disable INDEX                      (owner)
  irq mask|unmask INDEX START COUNT      (owner)
  state                                  sessions, memory, DMA, IRQ state, counters
  claim | release | reset                roles; reset is owner-only

Numbers accept 0x for hex. IRQ INDEX: intx, msi, msix, err, req or 0..4.
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

absl::StatusOr<uint64_t> ParseNumber(absl::string_view text, absl::string_view what) {
  const absl::string_view original = text;
  uint64_t value = 0;
  bool ok;
  if (absl::StartsWithIgnoreCase(text, "0x")) {
    text.remove_prefix(2);
    ok = !text.empty() && text.size() <= 16;
    for (char c : text) {
      if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) ok = false;
    }
    if (ok) ok = absl::SimpleHexAtoi(text, &value);
  } else {
    ok = !text.empty() && absl::ascii_isdigit(static_cast<unsigned char>(text[0])) &&
         absl::SimpleAtoi(text, &value);
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("bad ", what, " \"", original, "\""));
  }
  return value;
}

absl::StatusOr<uint32_t> ParseNumber32(absl::string_view text, absl::string_view what) {
  absl::StatusOr<uint64_t> value = ParseNumber(text, what);
  if (!value.ok()) return value.status();
  if (*value > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", text, " does not fit 32 bits"));
  }
  return static_cast<uint32_t>(*value);
}

absl::StatusOr<v1::IrqIndex> ParseIrqIndex(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  static constexpr struct {
    const char* name;
    v1::IrqIndex index;
  } kNames[] = {{"intx", v1::IRQ_INDEX_INTX}, {"msi", v1::IRQ_INDEX_MSI},
                {"msix", v1::IRQ_INDEX_MSIX}, {"msi-x", v1::IRQ_INDEX_MSIX},
                {"err", v1::IRQ_INDEX_ERR},   {"req", v1::IRQ_INDEX_REQ}};
  for (const auto& entry : kNames) {
    if (lower == entry.name) return entry.index;
  }
  uint32_t number;
  if (absl::SimpleAtoi(text, &number) && v1::IrqIndex_IsValid(static_cast<int>(number))) {
    return static_cast<v1::IrqIndex>(number);
  }
  return absl::InvalidArgumentError(absl::StrCat("bad IRQ index \"", text, "\""));
}

absl::StatusOr<std::string> ParseHexBytes(absl::string_view text) {
  if (absl::StartsWithIgnoreCase(text, "0x")) text.remove_prefix(2);
  if (text.empty() || text.size() % 2 != 0) {
    return absl::InvalidArgumentError("HEXBYTES needs an even, non-zero number of hex digits");
  }
  std::string bytes;
  for (size_t i = 0; i < text.size(); i += 2) {
    int value = 0;
    for (size_t j = i; j < i + 2; ++j) {
      const char c = absl::ascii_tolower(static_cast<unsigned char>(text[j]));
      if (c >= '0' && c <= '9') {
        value = value * 16 + (c - '0');
      } else if (c >= 'a' && c <= 'f') {
        value = value * 16 + (c - 'a' + 10);
      } else {
        return absl::InvalidArgumentError(absl::StrCat("bad hex digit '", std::string(1, c), "'"));
      }
    }
    bytes.push_back(static_cast<char>(value));
  }
  return bytes;
}

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

std::string HexString(absl::string_view data) {
  std::string out;
  for (char c : data) absl::StrAppendFormat(&out, "%02x", static_cast<uint8_t>(c));
  return out;
}

// --- Commands -------------------------------------------------------------------------------

// Each command parses all of its arguments before its first call, so usage errors never wait
// for a connection: the client connects on first use.
class Cli {
 public:
  explicit Cli(Globals globals) : g_(std::move(globals)) {}

  // Runs `args` (command first). RPC errors are returned; usage errors are thrown as
  // UsageError, connection errors as ConnectError.
  absl::Status Run(const std::vector<std::string>& args);

 private:
  absl::Status Info();
  absl::Status Config(const std::vector<std::string>& args);
  absl::Status Region(const std::vector<std::string>& args);
  absl::Status Irq(const std::vector<std::string>& args);
  absl::Status IrqWatch(const std::vector<std::string>& args);
  absl::Status State();
  void Done(absl::string_view text);
  VfioClient* client();

  Globals g_;
  std::unique_ptr<VfioClient> client_;
};

VfioClient* Cli::client() {
  if (client_ != nullptr) return client_.get();
  ConnectOptions options;
  options.default_timeout = g_.timeout;
  options.fd_channel = false;
  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect(g_.socket, options);
  if (!client.ok()) throw ConnectError{"connect", client.status()};
  if (g_.claim) {
    absl::Status status = (*client)->ClaimOwnership();
    if (!status.ok()) throw ConnectError{"claim", status};
  }
  client_ = std::move(*client);
  return client_.get();
}

void Cli::Done(absl::string_view text) {
  if (g_.json) {
    std::cout << "{}\n";
  } else if (!text.empty()) {
    std::cout << text << "\n";
  }
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
  if (command == "state") {
    ExpectArgs(args, 1, "state");
    return State();
  }
  if (command == "claim") {
    ExpectArgs(args, 1, "claim");
    absl::Status status = client()->ClaimOwnership();
    if (status.ok()) Done("ownership claimed (it ends when vfioctl exits)");
    return status;
  }
  if (command == "release") {
    ExpectArgs(args, 1, "release");
    absl::Status status = client()->ReleaseOwnership();
    if (status.ok()) Done("ownership released");
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
  throw UsageError{"usage: vfioctl region read|read32|write|write32 INDEX OFFSET ..."};
}

absl::Status Cli::Irq(const std::vector<std::string>& args) {
  const std::string sub = args.size() >= 2 ? args[1] : "";
  if (sub == "watch") return IrqWatch(args);
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
  throw UsageError{"usage: vfioctl irq watch|enable-watch|disable|mask|unmask ..."};
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
      std::cout << absl::StrFormat("%d.%09d %s vector %d count %d\n", e.timestamp_ns() / 1000000000,
                                   e.timestamp_ns() % 1000000000, IrqIndexName(e.index()),
                                   e.vector(), e.count())
                << std::flush;
    }
  }
  (*watch)->Cancel();
  if (count.has_value() && seen < *count) {
    return absl::DeadlineExceededError(absl::StrFormat("%d of %d events within %s", seen, *count,
                                                       absl::FormatDuration(timeout)));
  }
  return absl::OkStatus();
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
  // The command's name for error messages: "config read", "region write32", ...
  std::string name = command[0];
  if (command.size() > 1 && !absl::StartsWith(command[1], "-") &&
      (name == "config" || name == "region" || name == "irq")) {
    absl::StrAppend(&name, " ", command[1]);
  }

  auto fail = [&](absl::string_view what, const absl::Status& status) {
    std::cerr << absl::StrFormat("vfioctl: %s: %s: %s\n", what,
                                 absl::StatusCodeToString(status.code()), status.message());
    return kExitRpcError;
  };
  Cli cli(globals);
  try {
    absl::Status status = cli.Run(command);
    if (!status.ok()) return fail(name, status);
  } catch (const UsageError& error) {
    std::cerr << "vfioctl: " << name << ": " << error.message << "\n";
    return kExitUsage;
  } catch (const ConnectError& error) {
    return fail(error.stage, error.status);
  }
  return kExitOk;
}

}  // namespace
}  // namespace vfiod

int main(int argc, char** argv) { return vfiod::Main(argc, argv); }
