// DmaWindows: the client's DMA address space as vfio-user describes it (DMA_MAP, DMA_UNMAP),
// on top of the device model's memory and DMA rules.
//
// A window backed by an fd becomes device-accessible: the file is registered with the device
// model once per file (identified by device and inode; QEMU sends its RAM memfd again for every
// window) and reference-counted by the windows that use it, and the window is mapped at its
// address through PciDevice::MapDma, which applies every memory and IOMMU rule (sealing,
// alignment, usable ranges, limits). A window without an fd (QEMU's ROM and legacy areas) is
// recorded and never reachable by the device: this server does not use DMA_READ/DMA_WRITE.
//
// Semantics: a window may not overlap another (ALREADY_EXISTS: EEXIST); an unmap must name a
// window exactly (NOT_FOUND when nothing starts there, INVALID_ARGUMENT when the size differs)
// or set VFIO_DMA_UNMAP_FLAG_ALL with address and size 0. A failed call changes nothing.
//
// Thread-safety: all methods are thread-safe (one mutex, held across device calls).
#ifndef VFIOD_DAEMON_VFIO_USER_DMA_WINDOWS_H_
#define VFIOD_DAEMON_VFIO_USER_DMA_WINDOWS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/pci_device.h"

namespace vfiod::vfio_user {

struct DmaWindow {
  uint64_t address = 0;
  uint64_t size = 0;
  uint64_t offset = 0;  // into the file
  bool readable = false;
  bool writable = false;
  std::optional<uint64_t> memory_id;  // nullopt: no fd, not device-accessible
};

class DmaWindows {
 public:
  // `device` must outlive this object.
  explicit DmaWindows(PciDevice* device) : device_(device) {}
  DmaWindows(const DmaWindows&) = delete;
  DmaWindows& operator=(const DmaWindows&) = delete;

  // DMA_MAP: `flags` are the message's (kDmaMapRead, kDmaMapWrite); `fd` the one sent with it.
  // INVALID_ARGUMENT for unknown flags, a zero size or address/offset + size overflowing;
  // ALREADY_EXISTS for an overlap; RESOURCE_EXHAUSTED beyond `max_windows`; then the device
  // model's codes for the memory and the mapping. The fd is closed either way.
  absl::Status Map(uint64_t address, uint64_t size, uint64_t offset, uint32_t flags,
                   std::optional<UniqueFd> fd, uint32_t max_windows);

  // DMA_UNMAP with the message's flags (VFIO_DMA_UNMAP_FLAG_ALL; the dirty bitmap is refused:
  // no migration was negotiated).
  absl::Status Unmap(uint64_t address, uint64_t size, uint32_t flags);

  // Forgets every window and file, without calling the device: for owner loss, where the device
  // model's own release has unmapped and unregistered everything already.
  void Clear();

  std::vector<DmaWindow> List() const;  // by address

 private:
  struct FileKey {
    dev_t device;
    ino_t inode;
    bool operator<(const FileKey& other) const {
      return std::pair(device, inode) < std::pair(other.device, other.inode);
    }
  };
  struct File {
    uint64_t memory_id;
    uint32_t windows;
  };

  absl::Status UnmapOne(std::map<uint64_t, DmaWindow>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  PciDevice* const device_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, DmaWindow> windows_ ABSL_GUARDED_BY(mu_);  // by address
  std::map<FileKey, File> files_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vfiod::vfio_user

#endif  // VFIOD_DAEMON_VFIO_USER_DMA_WINDOWS_H_
