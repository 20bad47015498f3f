// DmaSpace: the owner's registered memory and the device's DMA mappings into it.
//
// Memory arrives as an fd (a memfd sealed against shrinking), is mapped shared read/write by
// this process and named by an id; DMA mappings name (memory id, offset), never an address,
// and the host address handed to the backend is computed here inside memory this object
// mapped. Every request is validated completely before the backend sees it (the IOMMU's page
// size and usable IOVA ranges, overflow, overlap, limits); a failed request changes nothing.
//
// Invariant: memory is never unmapped from this process while a backend mapping into it may
// exist; UnregisterMemory refuses while mapped, and ReleaseAll() unmaps DMA before memory.
//
// Thread-safety: all methods are thread-safe. The changing ones (RegisterMemory,
// UnregisterMemory, MapDma, UnmapDma, ReleaseAll) are serialised by one mutex held across
// backend calls; the state they change has a mutex of its own that is never held across a
// backend call or a munmap, so the readers (Memory, Mappings: GetState) are not delayed by an
// unmap in progress (type1 unpinning a large guest's memory takes seconds). Meanwhile they see
// the mappings being unmapped as still there. Blocking: only in the backend's map/unmap and in
// mmap/munmap, and the changing methods for each other.
#ifndef VFIOD_DAEMON_PCI_DMA_SPACE_H_
#define VFIOD_DAEMON_PCI_DMA_SPACE_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/unique_fd.h"
#include "daemon/pci/pci_device.h"

namespace vfiod {

// A shared mapping of this process, unmapped on destruction. Move-only.
class MappedMemory {
 public:
  // Maps `size` bytes of `fd` from offset 0, MAP_SHARED, PROT_READ | PROT_WRITE.
  static absl::StatusOr<MappedMemory> Map(int fd, size_t size);

  MappedMemory(MappedMemory&& other) noexcept;
  MappedMemory& operator=(MappedMemory&& other) noexcept;
  MappedMemory(const MappedMemory&) = delete;
  MappedMemory& operator=(const MappedMemory&) = delete;
  ~MappedMemory();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedMemory(uint8_t* data, size_t size) : data_(data), size_(size) {}
  void Unmap();

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

class DmaSpace {
 public:
  // `backend` is not owned and must outlive this object. Only the memory and DMA fields of
  // `limits` are used.
  DmaSpace(DeviceBackend* backend, const DeviceLimits& limits);
  // Releases everything, as ReleaseAll().
  ~DmaSpace();
  DmaSpace(const DmaSpace&) = delete;
  DmaSpace& operator=(const DmaSpace&) = delete;

  // See PciDevice::RegisterMemory. INVALID_ARGUMENT unless `fd` is a regular file (memfds
  // are); FAILED_PRECONDITION unless it is sealed with F_SEAL_SHRINK, when it is sealed with
  // F_SEAL_WRITE or F_SEAL_FUTURE_WRITE, or when it is not open O_RDWR (all checked before the
  // mmap, which would fail with EPERM/EACCES); `size` 0 takes the file's size, and must then be > 0 and a multiple of the host
  // page (INVALID_ARGUMENT) and at most the file's size (OUT_OF_RANGE); RESOURCE_EXHAUSTED
  // beyond max_memory_regions or max_memory_bytes. Mapped MAP_SHARED, read/write, never
  // executable. `fd` is closed on return either way. Ids start at 1 and are never reused.
  absl::StatusOr<MemoryInfo> RegisterMemory(UniqueFd fd, uint64_t size);
  // NOT_FOUND for an unknown id; FAILED_PRECONDITION while DMA mappings use the memory.
  absl::Status UnregisterMemory(uint64_t memory_id);

  // Validates, in this order: size > 0, device_read or device_write, iova/size/offset aligned
  // to the IOMMU's smallest page (INVALID_ARGUMENT; FAILED_PRECONDITION when it reports
  // none); iova + size and offset + size without overflow (OUT_OF_RANGE); a registered memory
  // id (NOT_FOUND); offset + size inside it and [iova, iova + size) inside one usable IOVA
  // range (OUT_OF_RANGE; an IOMMU reporting no ranges leaves this to the kernel); no overlap
  // with a mapping (ALREADY_EXISTS); fewer mappings than min(limits.max_dma_mappings,
  // iommu.dma_mappings_available, where 0 means not reported) (RESOURCE_EXHAUSTED). Then the
  // backend maps base + offset.
  absl::Status MapDma(const DmaMapRequest& request);
  // size > 0 and iova and size aligned to the IOMMU's smallest page, as for MapDma (the
  // kernel's type1 EINVAL): INVALID_ARGUMENT (FAILED_PRECONDITION when it reports none);
  // iova + size without overflow (OUT_OF_RANGE). [iova, iova + size) must cover whole
  // mappings: INVALID_ARGUMENT when it cuts one, NOT_FOUND when it holds none. Mappings are unmapped one by one in IOVA order; if the
  // backend fails, the ones already unmapped stay unmapped and the error is returned.
  absl::StatusOr<UnmapResult> UnmapDma(uint64_t iova, uint64_t size);

  // Unmaps every mapping, then unregisters every memory. A mapping whose backend unmap fails
  // is logged and kept, and so is its memory (never munmapped while the device may still
  // reach it); a later ReleaseAll() retries.
  void ReleaseAll();

  std::vector<MemoryInfo> Memory() const;
  std::vector<DmaMapRequest> Mappings() const;  // sorted by iova

 private:
  struct RegisteredMemory {
    MappedMemory mapping;
    uint32_t dma_mappings = 0;
  };

  // INVALID_ARGUMENT naming the first of `values` (name, value) that is not a multiple of the
  // IOMMU's smallest page; FAILED_PRECONDITION when the IOMMU reports no page size.
  absl::Status CheckIommuAligned(
      absl::string_view op, std::initializer_list<std::pair<const char*, uint64_t>> values) const;
  absl::Status ValidateMap(const DmaMapRequest& request) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Unmaps `mapping` in the backend (without mu_), then forgets it.
  absl::Status UnmapOne(const DmaMapRequest& mapping) ABSL_EXCLUSIVE_LOCKS_REQUIRED(change_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);

  DeviceBackend* const backend_;
  const uint64_t max_memory_bytes_;
  const uint32_t max_memory_regions_;
  const uint32_t max_dma_mappings_;  // min of the limit and the IOMMU's, when it reports one
  const uint64_t iommu_page_size_;   // 0: the IOMMU reports no page size
  const uint64_t host_page_size_;

  // Serialises the changing methods; held across backend calls. Taken before mu_.
  absl::Mutex change_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  // The state; held briefly, never across a backend call or a munmap.
  mutable absl::Mutex mu_;
  std::map<uint64_t, RegisteredMemory> memory_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, DmaMapRequest> mappings_ ABSL_GUARDED_BY(mu_);  // by iova
  uint64_t memory_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_memory_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_PCI_DMA_SPACE_H_
