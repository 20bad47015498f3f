// Parsing of the buffers that VFIO's INFO ioctls fill: vfio_region_info and
// vfio_iommu_type1_info with their capability chains.
//
// A chain is a list of vfio_info_cap_header linked by `next`, an offset from the start of the
// info buffer (0 ends the chain). The kernel writes it, but a daemon that parses it must not
// trust it to be well formed: every walk checks that each header lies after the fixed struct
// and wholly inside the valid bytes (min(argsz, buffer size)), that each `next` is beyond the
// current header (so offsets strictly increase and the walk ends), and that each known
// capability's body fits before the next capability or the end. A malformed chain is an error;
// nothing outside the buffer is ever read. Fields are read with memcpy, so the buffer need not
// be aligned.
//
// Pure functions on caller-owned bytes: thread-safe, no system calls.
#ifndef VFIOD_DAEMON_VFIO_VFIO_CAPS_H_
#define VFIOD_DAEMON_VFIO_VFIO_CAPS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "daemon/backend/device_backend.h"

namespace vfiod {

struct VfioCap {
  uint16_t id = 0;
  uint16_t version = 0;
  uint32_t offset = 0;  // of the header, from the start of the info buffer
  uint32_t extent = 0;  // bytes from `offset` to the next capability or the end of valid bytes
};

// The capabilities of the chain that starts at `first_offset` (0: none) in the first `valid`
// bytes of `buffer` (valid <= buffer.size()). `fixed_size` is the size of the info struct
// before the chain; no capability may start inside it. INTERNAL on a malformed chain.
absl::StatusOr<std::vector<VfioCap>> WalkCapChain(absl::Span<const uint8_t> buffer, uint32_t valid,
                                                  uint32_t first_offset, uint32_t fixed_size);

// One region as VFIO_DEVICE_GET_REGION_INFO reported it.
struct VfioRegion {
  RegionInfo info;
  uint32_t raw_flags = 0;  // vfio_region_info.flags
  uint64_t fd_offset = 0;  // where the region starts in the device fd (pread/pwrite/mmap)
};

// Parses a filled vfio_region_info buffer (at least sizeof(vfio_region_info) bytes) with its
// SPARSE_MMAP, TYPE and MSIX_MAPPABLE capabilities; other capability ids are skipped. A sparse
// area must lie inside the region. When the flags announce capabilities that the buffer did
// not receive (argsz larger than the buffer, or cap_offset 0), the result is INTERNAL: the
// caller must repeat the ioctl with the argsz the kernel asked for.
absl::StatusOr<VfioRegion> ParseRegionInfo(absl::Span<const uint8_t> buffer);

struct ParsedIommuInfo {
  IommuInfo info;
  bool has_iova_ranges = false;  // else usable_ranges is [0, 2^64 - 1]
  bool has_dma_avail = false;    // else dma_mappings_available is kDefaultDmaMappings
};

// The type1 driver's default dma_entry_limit, assumed when DMA_AVAIL is absent.
inline constexpr uint32_t kDefaultDmaMappings = 65535;

// Parses a filled vfio_iommu_type1_info buffer (at least sizeof(vfio_iommu_type1_info)
// bytes) with its IOVA_RANGE and DMA_AVAIL capabilities; other ids are skipped. IOVA ranges
// must each have start <= end. Same rule as ParseRegionInfo for a chain that did not fit.
absl::StatusOr<ParsedIommuInfo> ParseIommuInfo(absl::Span<const uint8_t> buffer);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_VFIO_CAPS_H_
