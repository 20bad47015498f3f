// vfioctl's DMA commands: IOMMU mappings of guest memory (memory create) for the device.
#include "client/cli/commands_dma.h"

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/args.h"
#include "client/cli/command.h"
#include "client/cli/context.h"
#include "client/cli/format.h"
#include "client/cli/output.h"
#include "client/cli_parse.h"
#include "proto/vfiod/v1/vfiod.pb.h"

namespace vfiod::cli {
namespace {

struct MapArgs {
  uint64_t iova = 0;
  uint64_t size = 0;
  std::string id;
  uint64_t offset = 0;
  client::DmaAccess access{true, true};
};

void DeclareMap(CLI::App& app, MapArgs& args) {
  AddNumber(app, "IOVA", &args.iova, "the device address")->required();
  AddNumber(app, "SIZE", &args.size, "bytes")->required();
  AddText(app, "ID", &args.id, "the memory: the id memory create printed, or its NAME")->required();
  AddNumber(app, "OFFSET", &args.offset, "where in the memory the mapping starts")->required();
  app.add_option_function<std::string>(
      "ACCESS",
      [&args](const std::string& text) {
        absl::StatusOr<client::DmaAccess> access = client::ParseDmaAccess(text);
        if (!access.ok()) throw CLI::ValidationError(std::string(access.status().message()));
        args.access = *access;
      },
      "what the device may do: r, w or rw (default rw)");
}

absl::Status Map(Context& ctx, const MapArgs& args) {
  absl::StatusOr<uint64_t> id = ctx.MemoryId(args.id);
  if (!id.ok()) return id.status();
  absl::Status status = ctx.client().MapDma(args.iova, args.size, *id, args.offset,
                                            args.access.device_read, args.access.device_write);
  if (!status.ok()) return status;
  ctx.out().Done(absl::StrFormat(
      "mapped IOVA %s-%s to memory %d at %s (device %s)", Hex(args.iova),
      Hex(args.iova + args.size - 1), *id, Hex(args.offset),
      absl::StrCat(args.access.device_read ? "r" : "", args.access.device_write ? "w" : "")));
  return absl::OkStatus();
}

struct UnmapArgs {
  uint64_t iova = 0;
  uint64_t size = 0;
};

void DeclareUnmap(CLI::App& app, UnmapArgs& args) {
  AddNumber(app, "IOVA", &args.iova, "the first device address")->required();
  AddNumber(app, "SIZE", &args.size, "bytes; every mapping inside the range goes")->required();
}

absl::Status Unmap(Context& ctx, const UnmapArgs& args) {
  absl::StatusOr<v1::UnmapDmaResponse> response = ctx.client().UnmapDma(args.iova, args.size);
  if (!response.ok()) return response.status();
  ctx.out().Print(*response,
                  absl::StrFormat("unmapped %s bytes in %d mappings\n",
                                  Hex(response->unmapped_bytes()), response->unmapped_mappings()));
  return absl::OkStatus();
}

}  // namespace

std::vector<Command> DmaCommands() {
  return {
      {"dma map", "IOVA SIZE ID OFFSET [ACCESS]",
       "map guest memory ID from OFFSET at IOVA for the device", Role::kOwner,
       /*fd_channel=*/false, Define(DeclareMap, Map)},
      {"dma unmap", "IOVA SIZE", "remove the mappings in a range", Role::kOwner,
       /*fd_channel=*/false, Define(DeclareUnmap, Unmap)},
  };
}

}  // namespace vfiod::cli
