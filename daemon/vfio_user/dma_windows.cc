#include "daemon/vfio_user/dma_windows.h"

#include <linux/vfio.h>
#include <sys/stat.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/format.h"
#include "daemon/base/errno_status.h"
#include "daemon/vfio_user/protocol.h"

namespace vfiod::vfio_user {

absl::Status DmaWindows::Map(uint64_t address, uint64_t size, uint64_t offset, uint32_t flags,
                             std::optional<UniqueFd> fd, uint32_t max_windows) {
  if ((flags & ~(kDmaMapRead | kDmaMapWrite)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("DMA_MAP: unknown flags ", Hex(flags)));
  }
  if (size == 0) return absl::InvalidArgumentError("DMA_MAP: size is 0");
  if (address + size < address || offset + size < offset) {
    return absl::InvalidArgumentError(absl::StrCat("DMA_MAP: address ", Hex(address),
                                                   " or offset ", Hex(offset), " + size ",
                                                   Hex(size), " overflows"));
  }
  absl::MutexLock lock(&mu_);
  auto next = windows_.lower_bound(address);
  const bool overlaps_next = next != windows_.end() && next->first < address + size;
  const bool overlaps_previous =
      next != windows_.begin() &&
      std::prev(next)->first + std::prev(next)->second.size > address;
  if (overlaps_next || overlaps_previous) {
    const DmaWindow& other = overlaps_next ? next->second : std::prev(next)->second;
    return absl::AlreadyExistsError(absl::StrCat(
        "DMA_MAP: [", Hex(address), ", +", Hex(size), ") overlaps the window at ",
        Hex(other.address), " of ", Hex(other.size), " bytes"));
  }
  if (windows_.size() >= max_windows) {
    return absl::ResourceExhaustedError(
        absl::StrCat("DMA_MAP: ", windows_.size(), " windows, the negotiated max_dma_maps"));
  }
  DmaWindow window{address, size, offset, (flags & kDmaMapRead) != 0,
                   (flags & kDmaMapWrite) != 0, std::nullopt};
  if (!fd.has_value()) {
    windows_.emplace(address, window);
    return absl::OkStatus();
  }

  struct stat st;
  if (::fstat(fd->get(), &st) != 0) return ErrnoError(errno, "DMA_MAP: fstat");
  const FileKey key{st.st_dev, st.st_ino};
  auto file = files_.find(key);
  const bool new_file = file == files_.end();
  if (new_file) {
    absl::StatusOr<MemoryInfo> memory = device_->RegisterMemory(*std::move(fd), 0);
    if (!memory.ok()) {
      return absl::Status(memory.status().code(),
                          absl::StrCat("DMA_MAP: ", memory.status().message()));
    }
    file = files_.emplace(key, File{memory->id, 0}).first;
  }
  fd.reset();  // a later window of a registered file: its fd is not needed
  window.memory_id = file->second.memory_id;
  absl::Status mapped = device_->MapDma(DmaMapRequest{address, size, file->second.memory_id,
                                                      offset, window.readable,
                                                      window.writable});
  if (!mapped.ok()) {
    if (new_file) {
      (void)device_->UnregisterMemory(file->second.memory_id);
      files_.erase(file);
    }
    return absl::Status(mapped.code(), absl::StrCat("DMA_MAP: ", mapped.message()));
  }
  ++file->second.windows;
  windows_.emplace(address, window);
  return absl::OkStatus();
}

absl::Status DmaWindows::UnmapOne(std::map<uint64_t, DmaWindow>::iterator it) {
  const DmaWindow& window = it->second;
  if (window.memory_id.has_value()) {
    absl::StatusOr<UnmapResult> unmapped = device_->UnmapDma(window.address, window.size);
    if (!unmapped.ok()) {
      return absl::Status(unmapped.status().code(),
                          absl::StrCat("DMA_UNMAP: ", unmapped.status().message()));
    }
    for (auto file = files_.begin(); file != files_.end(); ++file) {
      if (file->second.memory_id != *window.memory_id) continue;
      if (--file->second.windows == 0) {
        absl::Status unregistered = device_->UnregisterMemory(file->second.memory_id);
        if (!unregistered.ok()) {
          return absl::Status(unregistered.code(),
                              absl::StrCat("DMA_UNMAP: ", unregistered.message()));
        }
        files_.erase(file);
      }
      break;
    }
  }
  windows_.erase(it);
  return absl::OkStatus();
}

absl::Status DmaWindows::Unmap(uint64_t address, uint64_t size, uint32_t flags) {
  if ((flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) != 0) {
    return absl::InvalidArgumentError(
        "DMA_UNMAP: no dirty page bitmap (migration was not negotiated)");
  }
  if ((flags & ~VFIO_DMA_UNMAP_FLAG_ALL) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("DMA_UNMAP: unknown flags ", Hex(flags)));
  }
  absl::MutexLock lock(&mu_);
  if ((flags & VFIO_DMA_UNMAP_FLAG_ALL) != 0) {
    if (address != 0 || size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "DMA_UNMAP: unmap-all needs address and size 0, not ", Hex(address), " and ",
          Hex(size)));
    }
    while (!windows_.empty()) {
      absl::Status status = UnmapOne(windows_.begin());
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }
  auto it = windows_.find(address);
  if (it == windows_.end()) {
    return absl::NotFoundError(
        absl::StrCat("DMA_UNMAP: no window starts at ", Hex(address)));
  }
  if (it->second.size != size) {
    return absl::InvalidArgumentError(absl::StrCat("DMA_UNMAP: the window at ", Hex(address),
                                                   " has ", Hex(it->second.size),
                                                   " bytes, not ", Hex(size)));
  }
  return UnmapOne(it);
}

void DmaWindows::Clear() {
  absl::MutexLock lock(&mu_);
  windows_.clear();
  files_.clear();
}

std::vector<DmaWindow> DmaWindows::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<DmaWindow> list;
  list.reserve(windows_.size());
  for (const auto& [address, window] : windows_) list.push_back(window);
  return list;
}

}  // namespace vfiod::vfio_user
