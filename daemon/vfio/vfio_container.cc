#include "daemon/vfio/vfio_container.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"

namespace vfiod {
namespace {

// The largest vfio_iommu_type1_info buffer accepted from the kernel's argsz.
constexpr uint32_t kMaxInfoBytes = 1 << 20;

absl::Status WithHint(const absl::Status& status, absl::string_view hint) {
  return absl::Status(status.code(), absl::StrCat(status.message(), ": ", hint));
}

}  // namespace

absl::StatusOr<VfioContainer> VfioContainer::Open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    const int error = errno;
    absl::Status status = ErrnoError(error, absl::StrCat("open VFIO container ", path));
    if (error == ENOENT) return WithHint(status, "is the vfio module loaded (modprobe vfio-pci)?");
    if (error == EACCES || error == EPERM) {
      return WithHint(status, "the daemon needs read-write access to it");
    }
    return status;
  }
  const int version = ::ioctl(fd.get(), VFIO_GET_API_VERSION);
  if (version < 0) {
    return ErrnoError(errno, absl::StrCat("VFIO_GET_API_VERSION on ", path));
  }
  if (version != VFIO_API_VERSION) {
    return absl::FailedPreconditionError(absl::StrCat("VFIO_GET_API_VERSION on ", path,
                                                      ": the kernel speaks version ", version,
                                                      ", vfiod speaks ", VFIO_API_VERSION));
  }
  const int type1v2 = ::ioctl(fd.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU);
  if (type1v2 < 0) {
    return ErrnoError(errno, absl::StrCat("VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU) on ", path));
  }
  if (type1v2 == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU) on ", path,
                     ": the kernel offers no Type1v2 IOMMU (is vfio_iommu_type1 loaded?)"));
  }
  return VfioContainer(std::move(fd), path);
}

absl::Status VfioContainer::SetIommu() const {
  if (::ioctl(fd_.get(), VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) {
    const int error = errno;
    absl::Status status = ErrnoError(error, "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)");
    if (error == EPERM) {
      return WithHint(status,
                      "the IOMMU has no interrupt remapping (enable it, e.g. QEMU "
                      "-device intel-iommu,intremap=on, or accept the risk with "
                      "vfio_iommu_type1.allow_unsafe_interrupts=1)");
    }
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<ParsedIommuInfo> VfioContainer::GetIommuInfo() const {
  std::vector<uint8_t> buffer(sizeof(vfio_iommu_type1_info));
  for (int pass = 0; pass < 2; ++pass) {
    std::fill(buffer.begin(), buffer.end(), 0);
    const uint32_t argsz = static_cast<uint32_t>(buffer.size());
    std::memcpy(buffer.data(), &argsz, sizeof(argsz));
    if (::ioctl(fd_.get(), VFIO_IOMMU_GET_INFO, buffer.data()) != 0) {
      return ErrnoError(errno, "VFIO_IOMMU_GET_INFO");
    }
    uint32_t wanted;
    std::memcpy(&wanted, buffer.data(), sizeof(wanted));
    if (wanted <= buffer.size()) return ParseIommuInfo(buffer);
    if (wanted > kMaxInfoBytes) {
      return absl::InternalError(absl::StrCat("VFIO_IOMMU_GET_INFO: the kernel asks for argsz ",
                                              wanted, ", more than ", kMaxInfoBytes));
    }
    buffer.resize(wanted);
  }
  return absl::InternalError("VFIO_IOMMU_GET_INFO: argsz still grew on the second call");
}

absl::Status VfioContainer::MapDma(const DmaMap& map) const {
  vfio_iommu_type1_dma_map request = {};
  request.argsz = sizeof(request);
  request.flags = (map.device_read ? VFIO_DMA_MAP_FLAG_READ : 0) |
                  (map.device_write ? VFIO_DMA_MAP_FLAG_WRITE : 0);
  request.vaddr = reinterpret_cast<uintptr_t>(map.host_address);
  request.iova = map.iova;
  request.size = map.size;
  if (::ioctl(fd_.get(), VFIO_IOMMU_MAP_DMA, &request) != 0) {
    return ErrnoError(errno, absl::StrCat("VFIO_IOMMU_MAP_DMA iova 0x", absl::Hex(map.iova),
                                          " size 0x", absl::Hex(map.size)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> VfioContainer::UnmapDma(uint64_t iova, uint64_t size) const {
  vfio_iommu_type1_dma_unmap request = {};
  request.argsz = sizeof(request);
  request.iova = iova;
  request.size = size;
  if (::ioctl(fd_.get(), VFIO_IOMMU_UNMAP_DMA, &request) != 0) {
    return ErrnoError(errno, absl::StrCat("VFIO_IOMMU_UNMAP_DMA iova 0x", absl::Hex(iova),
                                          " size 0x", absl::Hex(size)));
  }
  return request.size;
}

}  // namespace vfiod
