#include "daemon/vfio/vfio_caps.h"

#include <linux/vfio.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "daemon/base/status_macros.h"

namespace vfiod {
namespace {

template <typename T>
T Load(absl::Span<const uint8_t> buffer, size_t offset) {
  T value;
  std::memcpy(&value, buffer.data() + offset, sizeof(T));
  return value;
}

absl::Status Malformed(absl::string_view what, uint32_t offset, absl::string_view why) {
  return absl::InternalError(
      absl::StrCat(what, ": malformed capability chain at offset ", offset, ": ", why));
}

// `body` bytes after the capability's start must fit in its extent.
absl::Status CheckFits(absl::string_view what, const VfioCap& cap, uint64_t body) {
  if (body > cap.extent) {
    return Malformed(what, cap.offset,
                     absl::StrCat("capability ", cap.id, " needs ", body, " bytes, ", cap.extent,
                                  " are left before the next capability or the end"));
  }
  return absl::OkStatus();
}

// The valid bytes: min(argsz, buffer size).
uint32_t ValidBytes(absl::Span<const uint8_t> buffer) {
  const uint32_t argsz = Load<uint32_t>(buffer, 0);
  const size_t size = std::min<size_t>(buffer.size(), std::numeric_limits<uint32_t>::max());
  return std::min<uint32_t>(argsz, static_cast<uint32_t>(size));
}

}  // namespace

absl::StatusOr<std::vector<VfioCap>> WalkCapChain(absl::Span<const uint8_t> buffer, uint32_t valid,
                                                  uint32_t first_offset, uint32_t fixed_size) {
  constexpr absl::string_view kWhat = "VFIO info";
  std::vector<VfioCap> caps;
  if (first_offset == 0) return caps;
  if (valid > buffer.size()) {
    return absl::InternalError(
        absl::StrCat("VFIO info: ", valid, " valid bytes in a buffer of ", buffer.size()));
  }
  constexpr uint32_t kHeader = sizeof(vfio_info_cap_header);
  uint32_t offset = first_offset;
  if (offset < fixed_size) {
    return Malformed(kWhat, offset, absl::StrCat("inside the ", fixed_size, "-byte info struct"));
  }
  while (true) {
    if (offset > valid || valid - offset < kHeader) {
      return Malformed(kWhat, offset, absl::StrCat("header beyond the ", valid, " valid bytes"));
    }
    vfio_info_cap_header header;
    std::memcpy(&header, buffer.data() + offset, kHeader);
    VfioCap cap;
    cap.id = header.id;
    cap.version = header.version;
    cap.offset = offset;
    if (header.next == 0) {
      cap.extent = valid - offset;
      caps.push_back(cap);
      return caps;
    }
    if (header.next < offset + kHeader) {
      return Malformed(kWhat, offset,
                       absl::StrCat("next ", header.next, " does not lie beyond this header"));
    }
    if (header.next > valid) {
      return Malformed(kWhat, offset,
                       absl::StrCat("next ", header.next, " beyond the ", valid, " valid bytes"));
    }
    cap.extent = header.next - offset;
    caps.push_back(cap);
    offset = header.next;
  }
}

absl::StatusOr<VfioRegion> ParseRegionInfo(absl::Span<const uint8_t> buffer) {
  if (buffer.size() < sizeof(vfio_region_info)) {
    return absl::InternalError(absl::StrCat("vfio_region_info: buffer of ", buffer.size(),
                                            " bytes, need ", sizeof(vfio_region_info)));
  }
  const auto raw = Load<vfio_region_info>(buffer, 0);
  const std::string what = absl::StrCat("region ", raw.index, " info");
  if (raw.argsz < sizeof(vfio_region_info)) {
    return absl::InternalError(
        absl::StrCat(what, ": argsz ", raw.argsz, " is below ", sizeof(vfio_region_info)));
  }
  VfioRegion region;
  region.raw_flags = raw.flags;
  region.fd_offset = raw.offset;
  region.info.index = raw.index;
  region.info.size = raw.size;
  region.info.readable = (raw.flags & VFIO_REGION_INFO_FLAG_READ) != 0;
  region.info.writable = (raw.flags & VFIO_REGION_INFO_FLAG_WRITE) != 0;
  region.info.mmappable = (raw.flags & VFIO_REGION_INFO_FLAG_MMAP) != 0;
  if (region.fd_offset > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
      region.info.size >
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - region.fd_offset) {
    return absl::InternalError(absl::StrCat(what, ": offset 0x", absl::Hex(raw.offset), " size 0x",
                                            absl::Hex(raw.size), " is beyond a file offset"));
  }
  if ((raw.flags & VFIO_REGION_INFO_FLAG_CAPS) == 0) return region;
  if (raw.argsz > buffer.size() || raw.cap_offset == 0) {
    return absl::InternalError(absl::StrCat(what, ": the capability chain needs argsz ", raw.argsz,
                                            ", the buffer has ", buffer.size(), " bytes"));
  }
  VFIOD_ASSIGN_OR_RETURN(
      std::vector<VfioCap> caps,
      WalkCapChain(buffer, ValidBytes(buffer), raw.cap_offset, sizeof(vfio_region_info)));
  bool seen_sparse = false, seen_type = false;
  for (const VfioCap& cap : caps) {
    switch (cap.id) {
      case VFIO_REGION_INFO_CAP_SPARSE_MMAP: {
        if (seen_sparse) break;
        seen_sparse = true;
        constexpr uint64_t kFixed = sizeof(vfio_region_info_cap_sparse_mmap);
        VFIOD_RETURN_IF_ERROR(CheckFits(what, cap, kFixed));
        const auto sparse = Load<vfio_region_info_cap_sparse_mmap>(buffer, cap.offset);
        constexpr uint64_t kArea = sizeof(vfio_region_sparse_mmap_area);
        VFIOD_RETURN_IF_ERROR(CheckFits(what, cap, kFixed + kArea * uint64_t{sparse.nr_areas}));
        for (uint32_t i = 0; i < sparse.nr_areas; ++i) {
          const auto area =
              Load<vfio_region_sparse_mmap_area>(buffer, cap.offset + kFixed + kArea * i);
          if (area.offset > region.info.size || area.size > region.info.size - area.offset) {
            return Malformed(
                what, cap.offset,
                absl::StrCat("sparse mmap area ", i, " [0x", absl::Hex(area.offset), " +0x",
                             absl::Hex(area.size), ") is outside the region of size 0x",
                             absl::Hex(region.info.size)));
          }
          region.info.sparse_mmap.push_back(SparseMmapArea{area.offset, area.size});
        }
        break;
      }
      case VFIO_REGION_INFO_CAP_TYPE: {
        if (seen_type) break;
        seen_type = true;
        VFIOD_RETURN_IF_ERROR(CheckFits(what, cap, sizeof(vfio_region_info_cap_type)));
        const auto type = Load<vfio_region_info_cap_type>(buffer, cap.offset);
        region.info.type = type.type;
        region.info.subtype = type.subtype;
        break;
      }
      case VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
        region.info.msix_mappable = true;
        break;
      default:
        break;
    }
  }
  return region;
}

absl::StatusOr<ParsedIommuInfo> ParseIommuInfo(absl::Span<const uint8_t> buffer) {
  constexpr absl::string_view kWhat = "IOMMU info";
  if (buffer.size() < sizeof(vfio_iommu_type1_info)) {
    return absl::InternalError(absl::StrCat("vfio_iommu_type1_info: buffer of ", buffer.size(),
                                            " bytes, need ", sizeof(vfio_iommu_type1_info)));
  }
  const auto raw = Load<vfio_iommu_type1_info>(buffer, 0);
  ParsedIommuInfo parsed;
  if (raw.flags & VFIO_IOMMU_INFO_PGSIZES) parsed.info.page_size_bitmap = raw.iova_pgsizes;
  parsed.info.dma_mappings_available = kDefaultDmaMappings;
  if (raw.flags & VFIO_IOMMU_INFO_CAPS) {
    if (raw.argsz > buffer.size() || raw.cap_offset == 0) {
      return absl::InternalError(absl::StrCat(kWhat, ": the capability chain needs argsz ",
                                              raw.argsz, ", the buffer has ", buffer.size(),
                                              " bytes"));
    }
    VFIOD_ASSIGN_OR_RETURN(
        std::vector<VfioCap> caps,
        WalkCapChain(buffer, ValidBytes(buffer), raw.cap_offset, sizeof(vfio_iommu_type1_info)));
    for (const VfioCap& cap : caps) {
      if (cap.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE && !parsed.has_iova_ranges) {
        constexpr uint64_t kFixed = sizeof(vfio_iommu_type1_info_cap_iova_range);
        VFIOD_RETURN_IF_ERROR(CheckFits(kWhat, cap, kFixed));
        const auto ranges = Load<vfio_iommu_type1_info_cap_iova_range>(buffer, cap.offset);
        constexpr uint64_t kRange = sizeof(vfio_iova_range);
        VFIOD_RETURN_IF_ERROR(CheckFits(kWhat, cap, kFixed + kRange * uint64_t{ranges.nr_iovas}));
        for (uint32_t i = 0; i < ranges.nr_iovas; ++i) {
          const auto range = Load<vfio_iova_range>(buffer, cap.offset + kFixed + kRange * i);
          if (range.start > range.end) {
            return Malformed(kWhat, cap.offset,
                             absl::StrCat("IOVA range ", i, " starts at 0x", absl::Hex(range.start),
                                          " after its end 0x", absl::Hex(range.end)));
          }
          parsed.info.usable_ranges.push_back(IovaRange{range.start, range.end});
        }
        parsed.has_iova_ranges = true;
      } else if (cap.id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL && !parsed.has_dma_avail) {
        VFIOD_RETURN_IF_ERROR(CheckFits(kWhat, cap, sizeof(vfio_iommu_type1_info_dma_avail)));
        parsed.info.dma_mappings_available =
            Load<vfio_iommu_type1_info_dma_avail>(buffer, cap.offset).avail;
        parsed.has_dma_avail = true;
      }
    }
  }
  if (!parsed.has_iova_ranges) {
    parsed.info.usable_ranges.push_back(IovaRange{0, std::numeric_limits<uint64_t>::max()});
  }
  return parsed;
}

}  // namespace vfiod
