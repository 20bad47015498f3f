// The simulated type1 IOMMU: Linux 6.1's vfio_iommu_type1 (v2) with the facts of QEMU 7.2's
// intel-iommu (see sim_backend.h): the DMA mappings, their page accounting against
// RLIMIT_MEMLOCK, and the translation of device DMA through them.
//
// Thread-safety: none of its own; the owning backend guards it with its mutex (the device
// reaches memory only through Read/Write under that lock, so once Unmap returns the device never
// touches the unmapped memory again).
#ifndef VFIOD_DAEMON_SIM_SIM_IOMMU_H_
#define VFIOD_DAEMON_SIM_SIM_IOMMU_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "daemon/backend/device_backend.h"

namespace vfiod {
namespace sim {

class SimIommu {
 public:
  // `address_width`: 39 or 48 (checked by the caller); `memlock_limit`: the RLIMIT_MEMLOCK in
  // bytes, nullopt to read the process's soft limit at each Map.
  SimIommu(int address_width, std::optional<uint64_t> memlock_limit);

  // What VFIO_IOMMU_GET_INFO reports.
  const IommuInfo& Info() const { return info_; }

  // vfio_dma_do_map() / vfio_dma_do_unmap() for a Type1v2 container.
  absl::Status Map(const DmaMap& map);
  absl::Status Unmap(uint64_t iova, uint64_t size);

  // A device (bus-master) access: false, with nothing copied and the fault counted, when any
  // byte is unmapped or lacks the permission.
  bool DeviceRead(uint64_t address, absl::Span<uint8_t> out);
  bool DeviceWrite(uint64_t address, absl::Span<const uint8_t> data);

  uint64_t faults() const { return faults_; }

 private:
  struct Mapping {
    uint64_t size = 0;
    uint8_t* host = nullptr;
    bool device_read = false;
    bool device_write = false;
  };
  struct HostPiece {
    uint8_t* host;
    size_t size;
  };

  // Splits [iova, iova + size) into host pieces, or fails without side effects.
  bool Translate(uint64_t iova, size_t size, bool device_write,
                 absl::InlinedVector<HostPiece, 4>* pieces) const;
  bool WithinUsableRange(uint64_t iova, uint64_t last) const;
  // The pages the kernel would let this process pin: RLIMIT_MEMLOCK's soft limit (or the
  // injected one) in pages; no limit for RLIM_INFINITY. The errno status when it cannot be read.
  absl::StatusOr<uint64_t> MemlockLimitPages() const;

  IommuInfo info_;
  const std::optional<uint64_t> memlock_limit_;
  std::map<uint64_t, Mapping> mappings_;  // by IOVA
  uint32_t dma_avail_;
  uint64_t pinned_pages_ = 0;  // of kIommuPageSize (the host page), over all mappings
  uint64_t faults_ = 0;
};

}  // namespace sim
}  // namespace vfiod

#endif  // VFIOD_DAEMON_SIM_SIM_IOMMU_H_
