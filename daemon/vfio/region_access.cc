#include "daemon/vfio/region_access.h"

#include "absl/strings/str_cat.h"

namespace vfiod {

uint32_t NaturalAccessSize(uint64_t offset, uint64_t remaining) {
  if (remaining >= 4 && offset % 4 == 0) return 4;
  if (remaining >= 2 && offset % 2 == 0) return 2;
  return 1;
}

std::vector<AccessChunk> SplitRegionAccess(uint64_t offset, uint64_t size) {
  std::vector<AccessChunk> chunks;
  uint64_t done = 0;
  while (done < size) {
    const uint32_t chunk = NaturalAccessSize(offset + done, size - done);
    chunks.push_back(AccessChunk{offset + done, chunk});
    done += chunk;
  }
  return chunks;
}

absl::Status CheckRegionAccess(absl::string_view op, const RegionInfo& region, uint64_t offset,
                               uint64_t size, bool write) {
  if (write ? !region.writable : !region.readable) {
    return absl::PermissionDeniedError(absl::StrCat(op, ": region ", region.index, " is not ",
                                                    write ? "writable" : "readable", " (size 0x",
                                                    absl::Hex(region.size), ")"));
  }
  return CheckRegionBounds(op, region, offset, size);
}

}  // namespace vfiod
