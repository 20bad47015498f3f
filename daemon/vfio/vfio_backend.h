// VfioBackend: DeviceBackend on the kernel's vfio-pci, one device in its own container.
//
// Open() does all of the privileged setup in the kernel's order: resolve the device through
// sysfs (VfioDeviceResolver), open the container (API version, Type1v2), open the group and
// check that it is viable (else the error lists the group's devices and their drivers), attach
// the group, set the Type1v2 IOMMU, get the device fd, and read everything immutable into
// Info(): device flags, every region with its capabilities, the five PCI IRQ indexes, and the
// IOMMU's page sizes, usable IOVA ranges and available DMA mappings. Nothing is queried after
// Open(), so the serving phase needs only pread/pwrite on the device fd, SET_IRQS and RESET on
// the device fd, and MAP_DMA/UNMAP_DMA on the container fd.
//
// Status codes follow DeviceBackend's contract, as the simulated backend does: unknown region
// NOT_FOUND, missing read/write flag PERMISSION_DENIED, beyond the region OUT_OF_RANGE, EIO
// FAILED_PRECONDITION, Reset without support FAILED_PRECONDITION; other kernel errors map
// their errno as ErrnoError does and name the ioctl. One deliberate difference: UnmapDma of a
// range in which the kernel unmapped nothing is NOT_FOUND (the simulated backend returns OK),
// and a partial unmap is INTERNAL; the device model only unmaps whole mappings it made.
//
// Thread-safe: Info() is immutable and every other method is a system call that the kernel
// serialises; there is no other shared state. Owns the container, group and device fds;
// destruction closes the device first, then the group, then the container (which drops every
// DMA mapping).
#ifndef VFIOD_DAEMON_VFIO_VFIO_BACKEND_H_
#define VFIOD_DAEMON_VFIO_VFIO_BACKEND_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/unique_fd.h"
#include "daemon/vfio/vfio_caps.h"
#include "daemon/vfio/vfio_container.h"
#include "daemon/vfio/vfio_device.h"
#include "daemon/vfio/vfio_group.h"

namespace vfiod {

// Where sysfs and /dev are; tests point them at a fake tree.
struct VfioPaths {
  std::string sysfs_root = "/sys";
  std::string dev_root = "/dev";
};

class VfioBackend final : public DeviceBackend {
 public:
  // `device`: "0000:00:03.0", "00:03.0", "/sys/bus/pci/devices/0000:00:03.0" or
  // "/sys/devices/.../0000:00:03.0". Every error names the device, the step, the path and
  // the errno.
  static absl::StatusOr<std::unique_ptr<VfioBackend>> Open(absl::string_view device,
                                                           const VfioPaths& paths = {});

  // Once FdsForJail() has been called, the three fds are never closed here: the jail pinned
  // them to fixed numbers that the seccomp policy forbids closing (a freed number could be
  // taken by another fd, which the fd-specific rules would then trust). The kernel closes them
  // when the process exits.
  ~VfioBackend() override;

  const BackendInfo& Info() const override { return info_; }
  absl::Status ReadRegion(uint32_t index, uint64_t offset, absl::Span<uint8_t> data) override;
  absl::Status WriteRegion(uint32_t index, uint64_t offset,
                           absl::Span<const uint8_t> data) override;
  absl::Status SetIrqs(const IrqSet& set) override;
  absl::Status MapDma(const DmaMap& map) override;
  absl::Status UnmapDma(uint64_t iova, uint64_t size) override;
  absl::Status Reset() override;
  // The container, group and device fds, for the jail to move to their fixed numbers in place.
  JailFds FdsForJail() override;

  // For the jail to pin fd numbers only: never close, move or use these for anything else.
  const UniqueFd& container_fd() const { return container_.fd(); }
  const UniqueFd& group_fd() const { return group_.fd(); }
  const UniqueFd& device_fd() const { return device_.fd(); }

 private:
  VfioBackend(VfioContainer container, VfioGroup group, VfioDevice device, BackendInfo info,
              std::vector<VfioRegion> regions);

  absl::StatusOr<const VfioRegion*> Region(const char* op, uint32_t index) const;

  // Declaration order is destruction order reversed: device, then group, then container.
  VfioContainer container_;
  VfioGroup group_;
  VfioDevice device_;
  const BackendInfo info_;
  const std::vector<VfioRegion> regions_;
  bool fds_pinned_ = false;  // FdsForJail() was called  // regions_[i].info == info_.regions[i]
};

// VfioBackend::Open with the real /sys and /dev.
absl::StatusOr<std::unique_ptr<DeviceBackend>> OpenVfioBackend(absl::string_view device);

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_VFIO_BACKEND_H_
