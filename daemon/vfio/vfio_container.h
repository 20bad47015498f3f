// VfioContainer: an open VFIO container (/dev/vfio/vfio) with the Type1v2 IOMMU.
//
// Lifecycle (the kernel's order): Open() checks the API version and the Type1v2 extension;
// then a VfioGroup is attached (VfioGroup::SetContainer); then SetIommu(); then IOMMU info,
// MAP_DMA and UNMAP_DMA work. Closing the container (destruction) releases every mapping.
//
// Move-only; owns the fd. After setup every method is const and thread-safe: the kernel
// serialises DMA map/unmap on a container. MapDma may block while the kernel pins pages.
#ifndef VFIOD_DAEMON_VFIO_VFIO_CONTAINER_H_
#define VFIOD_DAEMON_VFIO_VFIO_CONTAINER_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/unique_fd.h"
#include "daemon/vfio/vfio_caps.h"

namespace vfiod {

class VfioContainer {
 public:
  // Opens `path` (normally /dev/vfio/vfio) and checks VFIO_GET_API_VERSION ==
  // VFIO_API_VERSION and VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU). The error names the path,
  // the step and the errno (NOT_FOUND when the file is missing: vfio not loaded).
  static absl::StatusOr<VfioContainer> Open(const std::string& path);

  VfioContainer(VfioContainer&&) = default;
  VfioContainer& operator=(VfioContainer&&) = default;

  // VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU). Needs at least one group attached.
  absl::Status SetIommu() const;

  // VFIO_IOMMU_GET_INFO in two passes (the kernel reports the argsz its capability chain
  // needs), parsed by ParseIommuInfo.
  absl::StatusOr<ParsedIommuInfo> GetIommuInfo() const;

  // VFIO_IOMMU_MAP_DMA: vaddr = host_address, flags READ/WRITE from the permissions.
  absl::Status MapDma(const DmaMap& map) const;
  // VFIO_IOMMU_UNMAP_DMA; returns the bytes the kernel unmapped (0 when nothing was mapped).
  absl::StatusOr<uint64_t> UnmapDma(uint64_t iova, uint64_t size) const;

  const UniqueFd& fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  VfioContainer(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  UniqueFd fd_;
  std::string path_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_VFIO_CONTAINER_H_
