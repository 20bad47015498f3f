// VfioGroup: an open VFIO group (/dev/vfio/<N>), the unit of IOMMU isolation.
//
// The kernel lets one open file per group exist at a time: Open() fails with EBUSY while
// another process (another vfiod, a VMM) has the group open. A group is usable only when it
// is viable: every device in it is bound to vfio-pci or to no driver.
//
// Move-only; owns the fd. Methods are const and thread-safe (the kernel serialises them);
// none blocks beyond the ioctl.
#ifndef VFIOD_DAEMON_VFIO_VFIO_GROUP_H_
#define VFIOD_DAEMON_VFIO_VFIO_GROUP_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/base/unique_fd.h"
#include "daemon/vfio/vfio_container.h"

namespace vfiod {

class VfioGroup {
 public:
  // Opens `path` (normally /dev/vfio/<number>). The error names the group, the path and the
  // errno, with what it means: NOT_FOUND (no such group), PERMISSION_DENIED (EACCES),
  // FAILED_PRECONDITION (EBUSY: already in use by another process).
  static absl::StatusOr<VfioGroup> Open(const std::string& path, uint32_t number);

  VfioGroup(VfioGroup&&) = default;
  VfioGroup& operator=(VfioGroup&&) = default;

  // VFIO_GROUP_GET_STATUS: whether VFIO_GROUP_FLAGS_VIABLE is set.
  absl::StatusOr<bool> IsViable() const;
  // VFIO_GROUP_SET_CONTAINER.
  absl::Status SetContainer(const VfioContainer& container) const;
  // VFIO_GROUP_GET_DEVICE_FD for the device named `name` ("0000:00:03.0"). Needs the container
  // set and its IOMMU set.
  absl::StatusOr<UniqueFd> GetDeviceFd(const std::string& name) const;

  uint32_t number() const { return number_; }
  const UniqueFd& fd() const { return fd_; }

 private:
  VfioGroup(UniqueFd fd, std::string path, uint32_t number)
      : fd_(std::move(fd)), path_(std::move(path)), number_(number) {}

  UniqueFd fd_;
  std::string path_;
  uint32_t number_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_VFIO_GROUP_H_
