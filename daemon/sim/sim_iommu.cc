#include "daemon/sim/sim_iommu.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"
#include "daemon/sim/sim_bytes.h"

namespace vfiod {
namespace sim {
namespace {

// Intel VT-d under Linux 6.1 with QEMU 7.2's intel-iommu: second-level 4 KiB pages with 2 MiB
// and 1 GiB superpages, the interrupt (MSI) window reserved, vfio_iommu_type1's default
// dma_entry_limit.
constexpr uint64_t kIommuPageSize = 4096;
constexpr uint64_t kIommuPageSizeBitmap =
    (uint64_t{1} << 12) | (uint64_t{1} << 21) | (uint64_t{1} << 30);
constexpr uint64_t kMsiWindowStart = 0xfee00000;
constexpr uint64_t kMsiWindowLast = 0xfeefffff;
constexpr uint32_t kDmaEntryLimit = 65535;

}  // namespace

SimIommu::SimIommu(int address_width, std::optional<uint64_t> memlock_limit)
    : memlock_limit_(memlock_limit), dma_avail_(kDmaEntryLimit) {
  info_.page_size_bitmap = kIommuPageSizeBitmap;
  const uint64_t last = (uint64_t{1} << address_width) - 1;
  info_.usable_ranges = {{0, kMsiWindowStart - 1}, {kMsiWindowLast + 1, last}};
  info_.dma_mappings_available = kDmaEntryLimit;
}

bool SimIommu::WithinUsableRange(uint64_t iova, uint64_t last) const {
  for (const IovaRange& range : info_.usable_ranges) {
    if (iova >= range.start && last <= range.last) return true;
  }
  return false;
}

absl::Status SimIommu::Map(const DmaMap& map) {
  const uint64_t vaddr = reinterpret_cast<uintptr_t>(map.host_address);
  const std::string what =
      absl::StrCat("MapDma iova ", Hex(map.iova), " size ", Hex(map.size), ": ");
  if (!map.device_read && !map.device_write) {
    return absl::InvalidArgumentError(absl::StrCat(what, "no read or write permission"));
  }
  if (map.size == 0 || ((map.size | map.iova | vaddr) & (kIommuPageSize - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "size 0 or iova, size or host address not aligned to ", kIommuPageSize));
  }
  if (map.iova + map.size - 1 < map.iova || vaddr + map.size - 1 < vaddr) {
    return absl::InvalidArgumentError(absl::StrCat(what, "range wraps around"));
  }
  const uint64_t last = map.iova + map.size - 1;
  auto it = mappings_.upper_bound(last);
  if (it != mappings_.begin()) {
    --it;
    if (it->first + it->second.size - 1 >= map.iova) {
      return absl::AlreadyExistsError(absl::StrCat(what, "overlaps the mapping at ", Hex(it->first),
                                                   " size ", Hex(it->second.size)));
    }
  }
  if (dma_avail_ == 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, "all ", kDmaEntryLimit, " DMA mappings are in use"));
  }
  if (!WithinUsableRange(map.iova, last)) {
    return absl::InvalidArgumentError(absl::StrCat(what, "not inside one usable IOVA range"));
  }
  if (map.host_address == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, "no host memory (EFAULT)"));
  }
  // vfio_pin_pages_remote(): locked_vm + the new pages must stay within RLIMIT_MEMLOCK.
  const uint64_t pages = map.size / kIommuPageSize;
  VFIOD_ASSIGN_OR_RETURN(const uint64_t limit_pages, MemlockLimitPages());
  if (pages > limit_pages || pinned_pages_ > limit_pages - pages) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, "pinning ", pages, " more pages on top of ", pinned_pages_,
                     " exceeds RLIMIT_MEMLOCK of ", limit_pages, " pages (ENOMEM)"));
  }
  mappings_[map.iova] =
      Mapping{map.size, static_cast<uint8_t*>(map.host_address), map.device_read, map.device_write};
  --dma_avail_;
  pinned_pages_ += pages;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> SimIommu::MemlockLimitPages() const {
  uint64_t bytes;
  if (memlock_limit_.has_value()) {
    bytes = *memlock_limit_;
  } else {
    struct rlimit limit;
    if (::prlimit(0, RLIMIT_MEMLOCK, nullptr, &limit) != 0) {
      return ErrnoError(errno, "MapDma: prlimit(RLIMIT_MEMLOCK)");
    }
    if (limit.rlim_cur == RLIM_INFINITY) return std::numeric_limits<uint64_t>::max();
    bytes = limit.rlim_cur;
  }
  return bytes / kIommuPageSize;
}

absl::Status SimIommu::Unmap(uint64_t iova, uint64_t size) {
  const std::string what = absl::StrCat("UnmapDma iova ", Hex(iova), " size ", Hex(size), ": ");
  if (size == 0 || ((iova | size) & (kIommuPageSize - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "size 0 or iova or size not aligned to ", kIommuPageSize));
  }
  if (iova + size - 1 < iova) {
    return absl::InvalidArgumentError(absl::StrCat(what, "range wraps around"));
  }
  const uint64_t last = iova + size - 1;
  // No mapping may be cut by either end of the range.
  auto containing = [this](uint64_t address) -> std::map<uint64_t, Mapping>::const_iterator {
    auto it = mappings_.upper_bound(address);
    if (it == mappings_.begin()) return mappings_.end();
    --it;
    return address - it->first < it->second.size ? it : mappings_.end();
  };
  auto first = containing(iova);
  if (first != mappings_.end() && first->first != iova) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "would split the mapping at ", Hex(first->first)));
  }
  auto final = containing(last);
  if (final != mappings_.end() && final->first + final->second.size - 1 != last) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "would split the mapping at ", Hex(final->first)));
  }
  auto begin = mappings_.lower_bound(iova);
  auto end = mappings_.upper_bound(last);
  dma_avail_ += static_cast<uint32_t>(std::distance(begin, end));
  for (auto it = begin; it != end; ++it) pinned_pages_ -= it->second.size / kIommuPageSize;
  mappings_.erase(begin, end);
  return absl::OkStatus();
}

bool SimIommu::Translate(uint64_t iova, size_t size, bool device_write,
                         absl::InlinedVector<HostPiece, 4>* pieces) const {
  if (size == 0) return true;
  if (iova + (size - 1) < iova) return false;
  uint64_t at = iova;
  size_t left = size;
  while (left > 0) {
    auto it = mappings_.upper_bound(at);
    if (it == mappings_.begin()) return false;
    --it;
    const Mapping& mapping = it->second;
    const uint64_t offset = at - it->first;
    if (offset >= mapping.size) return false;
    if (device_write ? !mapping.device_write : !mapping.device_read) return false;
    const size_t piece = static_cast<size_t>(std::min<uint64_t>(left, mapping.size - offset));
    pieces->push_back(HostPiece{mapping.host + offset, piece});
    at += piece;
    left -= piece;
  }
  return true;
}

bool SimIommu::DeviceRead(uint64_t address, absl::Span<uint8_t> out) {
  absl::InlinedVector<HostPiece, 4> pieces;
  if (!Translate(address, out.size(), /*device_write=*/false, &pieces)) {
    ++faults_;
    LogDebug("sim: IOMMU blocked a device read",
             {{"iova", Hex(address)}, {"size", absl::StrCat(out.size())}});
    return false;
  }
  size_t done = 0;
  for (const HostPiece& piece : pieces) {
    std::memcpy(out.data() + done, piece.host, piece.size);
    done += piece.size;
  }
  return true;
}

bool SimIommu::DeviceWrite(uint64_t address, absl::Span<const uint8_t> data) {
  absl::InlinedVector<HostPiece, 4> pieces;
  if (!Translate(address, data.size(), /*device_write=*/true, &pieces)) {
    ++faults_;
    LogDebug("sim: IOMMU blocked a device write",
             {{"iova", Hex(address)}, {"size", absl::StrCat(data.size())}});
    return false;
  }
  size_t done = 0;
  for (const HostPiece& piece : pieces) {
    std::memcpy(piece.host, data.data() + done, piece.size);
    done += piece.size;
  }
  return true;
}

}  // namespace sim
}  // namespace vfiod
