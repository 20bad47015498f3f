// VFIO_USER_VERSION: parsing the client's proposal and choosing what this server takes.
//
// The client's JSON is parsed with protobuf's JSON parser into VersionData (version.proto), so
// types are checked and unknown capabilities ignored. The server answers with the same major,
// minor 0, and a subset of the client's capabilities: max_msg_fds (what this server receives
// per message), max_data_xfer_size and max_dma_maps (the smaller of the two sides' values),
// pgsizes (the IOMMU's page sizes that the client also supports). It takes no migration, no
// write_multiple and no twin socket, so those are left out of the reply.
//
// Thread-safety: pure functions.
#ifndef VFIOD_DAEMON_VFIO_USER_NEGOTIATION_H_
#define VFIOD_DAEMON_VFIO_USER_NEGOTIATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vfiod::vfio_user {

// What this server can offer, from the device and the daemon's limits.
struct ServerLimits {
  uint32_t max_msg_fds = 16;             // fds this server receives in one message
  uint32_t max_data_xfer_size = 65536;   // largest REGION_READ/WRITE count
  uint32_t max_dma_maps = 65535;         // DMA windows at once
  uint64_t page_sizes = 4096;            // the IOMMU's page-size bitmap
};

// What both sides agreed on.
struct Negotiated {
  uint16_t major = 0;
  uint16_t minor = 0;
  uint32_t client_max_msg_fds = 1;  // fds the client receives per message (unused: none sent)
  uint32_t max_msg_fds = 16;
  uint32_t max_data_xfer_size = 0;
  uint32_t max_dma_maps = 0;
  uint64_t page_sizes = 0;
};

// Parses a VERSION request payload (major, minor, optional NUL-terminated JSON) and
// negotiates. INVALID_ARGUMENT (the reply's EINVAL) for: a payload under 4 bytes; a major
// other than 0; JSON that is not NUL-terminated, holds a NUL, is not valid UTF-8 or not the
// spec's object; no page size in common; a zero max_data_xfer_size or max_dma_maps.
absl::StatusOr<Negotiated> Negotiate(absl::Span<const uint8_t> payload,
                                     const ServerLimits& limits);

// The VERSION reply payload for `negotiated`: major, minor, NUL-terminated JSON. Page sizes
// are limited to those below 2^53, the largest integers JSON numbers carry exactly between
// implementations (RFC 8259, section 6).
std::vector<uint8_t> VersionReply(const Negotiated& negotiated);

}  // namespace vfiod::vfio_user

#endif  // VFIOD_DAEMON_VFIO_USER_NEGOTIATION_H_
