#include "daemon/vfio/vfio_group.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"

namespace vfiod {
namespace {

absl::Status WithHint(const absl::Status& status, absl::string_view hint) {
  return absl::Status(status.code(), absl::StrCat(status.message(), ": ", hint));
}

}  // namespace

absl::StatusOr<VfioGroup> VfioGroup::Open(const std::string& path, uint32_t number) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    const int error = errno;
    const absl::Status status =
        ErrnoError(error, absl::StrCat("open IOMMU group ", number, " (", path, ")"));
    switch (error) {
      case ENOENT:
        return WithHint(status, "no VFIO group file: is the device bound to vfio-pci?");
      case EACCES:
      case EPERM:
        return WithHint(status,
                        "permission denied: run as root or give the daemon's user read-write "
                        "access to the group file");
      case EBUSY:
        return WithHint(status,
                        "already in use by another process (the group is already open, e.g. by "
                        "another vfiod or a VMM)");
      default:
        return status;
    }
  }
  return VfioGroup(std::move(fd), path, number);
}

absl::StatusOr<bool> VfioGroup::IsViable() const {
  vfio_group_status status = {};
  status.argsz = sizeof(status);
  if (::ioctl(fd_.get(), VFIO_GROUP_GET_STATUS, &status) != 0) {
    return ErrnoError(errno, absl::StrCat("VFIO_GROUP_GET_STATUS on group ", number_));
  }
  return (status.flags & VFIO_GROUP_FLAGS_VIABLE) != 0;
}

absl::Status VfioGroup::SetContainer(const VfioContainer& container) const {
  const int container_fd = container.fd().get();
  if (::ioctl(fd_.get(), VFIO_GROUP_SET_CONTAINER, &container_fd) != 0) {
    return ErrnoError(
        errno, absl::StrCat("VFIO_GROUP_SET_CONTAINER group ", number_, " to ", container.path()));
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> VfioGroup::GetDeviceFd(const std::string& name) const {
  const int fd = ::ioctl(fd_.get(), VFIO_GROUP_GET_DEVICE_FD, name.c_str());
  if (fd < 0) {
    return ErrnoError(errno,
                      absl::StrCat("VFIO_GROUP_GET_DEVICE_FD(\"", name, "\") on group ", number_));
  }
  UniqueFd device(fd);
  // The kernel already sets close-on-exec (get_unused_fd_flags(O_CLOEXEC)); make sure of it.
  if (::fcntl(device.get(), F_SETFD, FD_CLOEXEC) != 0) {
    return ErrnoError(errno, "fcntl(F_SETFD, FD_CLOEXEC) on the device fd");
  }
  return device;
}

}  // namespace vfiod
