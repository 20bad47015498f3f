#include "daemon/vfio_user/negotiation.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "daemon/vfio_user/protocol.h"
#include "daemon/vfio_user/version.pb.h"

namespace vfiod::vfio_user {
namespace {

// JSON numbers are exact between implementations only up to 2^53.
constexpr uint64_t kExactJsonNumbers = (uint64_t{1} << 53) - 1;

// The largest JSON this server parses: QEMU's proposal is about 200 bytes.
constexpr size_t kMaxVersionJsonBytes = 4096;

absl::StatusOr<VersionData> ParseVersionJson(absl::Span<const uint8_t> bytes) {
  VersionData data;
  if (bytes.empty()) return data;
  if (bytes.size() > kMaxVersionJsonBytes) {
    return absl::InvalidArgumentError(absl::StrCat("VERSION: version data of ", bytes.size(),
                                                   " bytes (limit ", kMaxVersionJsonBytes, ")"));
  }
  if (bytes.back() != 0) {
    return absl::InvalidArgumentError("VERSION: version data is not NUL-terminated");
  }
  absl::string_view json(reinterpret_cast<const char*>(bytes.data()), bytes.size() - 1);
  if (json.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("VERSION: version data holds a NUL before its end");
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  google::protobuf::util::Status parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &data, options);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VERSION: version data is not the spec's JSON: ", std::string(parsed.message())));
  }
  return data;
}

uint32_t Smaller(uint64_t proposed, uint32_t ours) {
  return static_cast<uint32_t>(std::min<uint64_t>(proposed, ours));
}

}  // namespace

absl::StatusOr<Negotiated> Negotiate(absl::Span<const uint8_t> payload,
                                     const ServerLimits& limits) {
  VersionPayload version;
  if (payload.size() < sizeof(version)) {
    return absl::InvalidArgumentError(
        absl::StrCat("VERSION: payload of ", payload.size(), " bytes, need at least 4"));
  }
  std::memcpy(&version, payload.data(), sizeof(version));
  if (version.major != kMajorVersion) {
    return absl::InvalidArgumentError(absl::StrCat("VERSION: major version ", version.major,
                                                   " is not supported (only ", kMajorVersion,
                                                   ")"));
  }
  absl::StatusOr<VersionData> data = ParseVersionJson(payload.subspan(sizeof(version)));
  if (!data.ok()) return data.status();
  const Capabilities& proposed = data->capabilities();

  Negotiated result;
  result.major = kMajorVersion;
  result.minor = kMinorVersion;
  result.client_max_msg_fds =
      Smaller(proposed.has_max_msg_fds() ? proposed.max_msg_fds() : kDefaultMaxMsgFds,
              UINT32_MAX);
  result.max_msg_fds = limits.max_msg_fds;
  result.max_data_xfer_size = Smaller(proposed.has_max_data_xfer_size()
                                          ? proposed.max_data_xfer_size()
                                          : kDefaultMaxDataXferSize,
                                      limits.max_data_xfer_size);
  result.max_dma_maps = Smaller(
      proposed.has_max_dma_maps() ? proposed.max_dma_maps() : kDefaultMaxDmaMaps,
      limits.max_dma_maps);
  const uint64_t client_pages = proposed.has_pgsizes() ? proposed.pgsizes() : kDefaultPageSizes;
  result.page_sizes = client_pages & limits.page_sizes & kExactJsonNumbers;
  if (result.max_data_xfer_size == 0) {
    return absl::InvalidArgumentError("VERSION: max_data_xfer_size is 0");
  }
  if (result.max_dma_maps == 0) {
    return absl::InvalidArgumentError("VERSION: max_dma_maps is 0");
  }
  if (result.page_sizes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VERSION: no page size in common (client pgsizes 0x", absl::Hex(client_pages),
        ", IOMMU 0x", absl::Hex(limits.page_sizes), ")"));
  }
  return result;
}

std::vector<uint8_t> VersionReply(const Negotiated& negotiated) {
  google::protobuf::Struct capabilities;
  auto& fields = *capabilities.mutable_fields();
  fields["max_msg_fds"].set_number_value(negotiated.max_msg_fds);
  fields["max_data_xfer_size"].set_number_value(negotiated.max_data_xfer_size);
  fields["max_dma_maps"].set_number_value(negotiated.max_dma_maps);
  fields["pgsizes"].set_number_value(
      static_cast<double>(negotiated.page_sizes & kExactJsonNumbers));
  google::protobuf::Struct root;
  *(*root.mutable_fields())["capabilities"].mutable_struct_value() = capabilities;
  std::string json;
  // Cannot fail for a Struct of finite numbers.
  (void)google::protobuf::util::MessageToJsonString(root, &json);

  VersionPayload version{negotiated.major, negotiated.minor};
  std::vector<uint8_t> reply(sizeof(version) + json.size() + 1);
  std::memcpy(reply.data(), &version, sizeof(version));
  std::memcpy(reply.data() + sizeof(version), json.data(), json.size());
  reply.back() = 0;
  return reply;
}

}  // namespace vfiod::vfio_user
