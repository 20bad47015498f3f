// FakeSysfs: a temporary directory laid out like the parts of /sys and /dev that device
// resolution reads, for tests. Test-only; not thread-safe.
#ifndef VFIOD_DAEMON_VFIO_FAKE_SYSFS_H_
#define VFIOD_DAEMON_VFIO_FAKE_SYSFS_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vfiod {

class FakeSysfs {
 public:
  // A fresh tree under $TEST_TMPDIR (or /tmp); removed by the destructor.
  static absl::StatusOr<FakeSysfs> Create();
  FakeSysfs(FakeSysfs&& other) noexcept : root_(std::move(other.root_)) { other.root_.clear(); }
  FakeSysfs& operator=(FakeSysfs&&) = delete;
  ~FakeSysfs();

  std::string root() const { return root_; }
  std::string sysfs_root() const { return root_ + "/sys"; }
  std::string dev_root() const { return root_ + "/dev"; }

  // A PCI device as sysfs shows it: the node sys/devices/pci0000:00/<name>, the link
  // sys/bus/pci/devices/<name> to it, an iommu_group link to
  // ../../../kernel/iommu_groups/<group> (with the group's devices/<name> link back) when
  // `group` is set, and a driver link to ../../../bus/pci/drivers/<driver> when `driver` is set.
  absl::Status AddDevice(const std::string& name, std::optional<uint32_t> group,
                         std::optional<std::string> driver);
  // Replaces the device's iommu_group link by one to `target`.
  absl::Status SetIommuGroupLink(const std::string& name, const std::string& target);
  // Creates dev/vfio/ with empty regular files "vfio" and "<group>" (not character devices:
  // opening works, VFIO ioctls fail with ENOTTY).
  absl::Status AddDevVfio(uint32_t group);

 private:
  explicit FakeSysfs(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_FAKE_SYSFS_H_
