// VfioDeviceResolver: from the --device argument to the files VFIO needs, through sysfs.
//
// Resolution of "0000:00:03.0", "00:03.0", "/sys/bus/pci/devices/0000:00:03.0" or
// "/sys/devices/pci0000:00/0000:00:03.0":
//   1. the address is parsed strictly (ParsePciAddress); a path must be one of the two sysfs
//      forms, without "." or ".." components, and a /sys/devices path must be the same sysfs
//      node as /sys/bus/pci/devices/<address>;
//   2. <sysfs>/bus/pci/devices/<address> must exist (NOT_FOUND);
//   3. its iommu_group link gives the group number (FAILED_PRECONDITION without one: the
//      device sits behind no IOMMU);
//   4. its driver link must name vfio-pci (FAILED_PRECONDITION naming the driver it is bound
//      to, with the commands that rebind it).
// Every error names the step, the path and, for a failed system call, the errno.
//
// The sysfs and /dev roots are constructor parameters so that tests can point them at a fake
// tree. Stateless after construction: thread-safe. Blocks only on sysfs reads.
#ifndef VFIOD_DAEMON_VFIO_DEVICE_RESOLVER_H_
#define VFIOD_DAEMON_VFIO_DEVICE_RESOLVER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/vfio/pci_address.h"

namespace vfiod {

inline constexpr absl::string_view kVfioPciDriver = "vfio-pci";

struct ResolvedDevice {
  PciAddress address;
  std::string name;        // canonical address, the kernel's device name
  std::string sysfs_path;  // <sysfs root>/bus/pci/devices/<name>
  uint32_t iommu_group = 0;
};

// Parses the target of an iommu_group link ("../../../kernel/iommu_groups/12" → 12): the last
// component must be a decimal number without sign or leading zeros, at most INT32_MAX (the
// kernel's group ids are ints), under a directory named iommu_groups.
absl::StatusOr<uint32_t> ParseIommuGroupLink(absl::string_view target);

class VfioDeviceResolver {
 public:
  explicit VfioDeviceResolver(std::string sysfs_root = "/sys", std::string dev_root = "/dev");

  // Steps 1-4 above.
  absl::StatusOr<ResolvedDevice> Resolve(absl::string_view device) const;

  // Step 1 only: the address named by an address or a sysfs path (no file is read for the
  // /sys/bus/pci/devices form).
  absl::StatusOr<PciAddress> ParseDeviceArgument(absl::string_view device) const;

  // One line per device in the group: "0000:00:03.0 (vfio-pci), 0000:00:03.1 (e1000e)", for
  // the error that explains a group that is not viable. Never fails: what cannot be read is
  // said so in the text.
  std::string DescribeGroupDevices(uint32_t group) const;

  std::string ContainerPath() const;            // <dev root>/vfio/vfio
  std::string GroupPath(uint32_t group) const;  // <dev root>/vfio/<group>

 private:
  std::string DevicePath(const std::string& name) const;
  // The driver's name, or "" when the device is bound to none.
  absl::StatusOr<std::string> BoundDriver(const std::string& device_path) const;

  std::string sysfs_root_;
  std::string dev_root_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_VFIO_DEVICE_RESOLVER_H_
