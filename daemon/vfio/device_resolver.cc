#include "daemon/vfio/device_resolver.h"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/format.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/status_macros.h"

namespace vfiod {
namespace {

constexpr absl::string_view kSysPrefix = "/sys/";
constexpr size_t kMaxDeviceArgument = 4096;

absl::StatusOr<std::string> ReadLink(const std::string& path) {
  char buffer[PATH_MAX];
  const ssize_t n = ::readlink(path.c_str(), buffer, sizeof(buffer));
  if (n < 0) return ErrnoError(errno, absl::StrCat("readlink ", path));
  if (static_cast<size_t>(n) >= sizeof(buffer)) {
    return absl::InternalError(absl::StrCat("readlink ", path, ": target too long"));
  }
  return std::string(buffer, static_cast<size_t>(n));
}

absl::string_view Basename(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

absl::Status BadArgument(absl::string_view device, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("device \"", absl::CHexEscape(device), "\": ", why,
                   " (expected a PCI address DDDD:BB:DD.F or BB:DD.F, or a sysfs path "
                   "/sys/bus/pci/devices/DDDD:BB:DD.F or /sys/devices/.../DDDD:BB:DD.F)"));
}

}  // namespace

absl::StatusOr<uint32_t> ParseIommuGroupLink(absl::string_view target) {
  const absl::string_view number = Basename(target);
  absl::string_view parent = target.substr(0, target.size() - number.size());
  if (absl::EndsWith(parent, "/")) parent.remove_suffix(1);
  auto bad = [&](absl::string_view why) {
    return absl::InternalError(
        absl::StrCat("iommu_group link \"", absl::CHexEscape(target), "\" is not a group: ", why));
  };
  if (Basename(parent) != "iommu_groups") return bad("not under an iommu_groups directory");
  if (number.empty() || number.size() > 10)
    return bad("the group number has no or too many digits");
  if (number.size() > 1 && number[0] == '0') return bad("the group number has a leading zero");
  uint64_t value = 0;
  for (char c : number) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return bad("the group number is not decimal");
    }
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > static_cast<uint64_t>(INT32_MAX)) return bad("the group number is too large");
  return static_cast<uint32_t>(value);
}

VfioDeviceResolver::VfioDeviceResolver(std::string sysfs_root, std::string dev_root)
    : sysfs_root_(std::move(sysfs_root)), dev_root_(std::move(dev_root)) {}

std::string VfioDeviceResolver::DevicePath(const std::string& name) const {
  return absl::StrCat(sysfs_root_, "/bus/pci/devices/", name);
}

std::string VfioDeviceResolver::ContainerPath() const {
  return absl::StrCat(dev_root_, "/vfio/vfio");
}

std::string VfioDeviceResolver::GroupPath(uint32_t group) const {
  return absl::StrCat(dev_root_, "/vfio/", group);
}

absl::StatusOr<PciAddress> VfioDeviceResolver::ParseDeviceArgument(absl::string_view device) const {
  if (device.size() > kMaxDeviceArgument) return BadArgument(device.substr(0, 64), "too long");
  if (!absl::StartsWith(device, "/")) {
    absl::StatusOr<PciAddress> address = ParsePciAddress(device);
    if (!address.ok()) return Annotate(address.status(), "device");
    return address;
  }
  if (!absl::StartsWith(device, kSysPrefix)) return BadArgument(device, "not a path under /sys");
  absl::string_view path = device;
  while (path.size() > 1 && absl::EndsWith(path, "/")) path.remove_suffix(1);
  std::vector<absl::string_view> parts = absl::StrSplit(path.substr(1), '/');
  for (absl::string_view part : parts) {
    if (part.empty() || part == "." || part == "..") {
      return BadArgument(device, "empty, \".\" or \"..\" path component");
    }
  }
  // parts[0] == "sys".
  const bool bus_form =
      parts.size() == 5 && parts[1] == "bus" && parts[2] == "pci" && parts[3] == "devices";
  const bool devices_form = parts.size() >= 4 && parts[1] == "devices";
  if (!bus_form && !devices_form) {
    return BadArgument(device, "not /sys/bus/pci/devices/<address> or /sys/devices/.../<address>");
  }
  absl::StatusOr<PciAddress> address = ParsePciAddress(parts.back());
  if (!address.ok()) return Annotate(address.status(), "device: last path component");
  if (parts.back() != address->ToString()) {
    return BadArgument(device, absl::StrCat("sysfs names the device ", address->ToString()));
  }
  if (devices_form) {
    // The path must be the device's own sysfs node, not some other node with a PCI-like name.
    const std::string given = absl::StrCat(sysfs_root_, path.substr(kSysPrefix.size() - 1));
    const std::string canonical = DevicePath(address->ToString());
    struct stat given_stat, canonical_stat;
    if (::stat(given.c_str(), &given_stat) != 0) {
      return Annotate(ErrnoError(errno, absl::StrCat("stat ", given)), "device");
    }
    if (::stat(canonical.c_str(), &canonical_stat) != 0) {
      return Annotate(ErrnoError(errno, absl::StrCat("stat ", canonical)), "device");
    }
    if (given_stat.st_dev != canonical_stat.st_dev || given_stat.st_ino != canonical_stat.st_ino) {
      return BadArgument(device, absl::StrCat("not the same sysfs node as ", canonical));
    }
  }
  return address;
}

absl::StatusOr<std::string> VfioDeviceResolver::BoundDriver(const std::string& device_path) const {
  const std::string link = absl::StrCat(device_path, "/driver");
  absl::StatusOr<std::string> target = ReadLink(link);
  if (!target.ok()) {
    if (absl::IsNotFound(target.status())) return std::string();
    return target.status();
  }
  return std::string(Basename(*target));
}

absl::StatusOr<ResolvedDevice> VfioDeviceResolver::Resolve(absl::string_view device) const {
  ResolvedDevice resolved;
  VFIOD_ASSIGN_OR_RETURN(resolved.address, ParseDeviceArgument(device));
  resolved.name = resolved.address.ToString();
  resolved.sysfs_path = DevicePath(resolved.name);
  const std::string& name = resolved.name;

  struct stat device_stat;
  if (::stat(resolved.sysfs_path.c_str(), &device_stat) != 0) {
    const int error = errno;
    absl::Status status = ErrnoError(error, absl::StrCat("stat ", resolved.sysfs_path));
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrCat("no PCI device ", name, ": ", status.message()));
    }
    return Annotate(status, absl::StrCat("PCI device ", name));
  }

  const std::string group_link = absl::StrCat(resolved.sysfs_path, "/iommu_group");
  absl::StatusOr<std::string> group_target = ReadLink(group_link);
  if (!group_target.ok()) {
    if (absl::IsNotFound(group_target.status())) {
      return absl::FailedPreconditionError(absl::StrCat(
          name, " has no IOMMU group (", group_target.status().message(),
          "): VFIO needs an IOMMU (enable VT-d/AMD-Vi in firmware and intel_iommu=on or "
          "amd_iommu=on on the kernel command line; in QEMU add -device intel-iommu,intremap=on)"));
    }
    return Annotate(group_target.status(), absl::StrCat(name, ": IOMMU group"));
  }
  absl::StatusOr<uint32_t> group = ParseIommuGroupLink(*group_target);
  if (!group.ok()) return Annotate(group.status(), absl::StrCat(name, ": ", group_link));
  resolved.iommu_group = *group;

  absl::StatusOr<std::string> bound = BoundDriver(resolved.sysfs_path);
  if (!bound.ok()) return Annotate(bound.status(), absl::StrCat(name, ": bound driver"));
  const std::string& driver = *bound;
  if (driver != kVfioPciDriver) {
    const std::string rebind = absl::StrCat(
        "echo ", kVfioPciDriver, " > ", resolved.sysfs_path, "/driver_override; ",
        driver.empty()
            ? ""
            : absl::StrCat("echo ", name, " > ", resolved.sysfs_path, "/driver/unbind; "),
        "echo ", name, " > ", sysfs_root_, "/bus/pci/drivers_probe");
    return absl::FailedPreconditionError(
        absl::StrCat(name, driver.empty() ? " is bound to no driver" : " is bound to " + driver,
                     ", not ", kVfioPciDriver, " (", rebind, ")"));
  }
  return resolved;
}

std::string VfioDeviceResolver::DescribeGroupDevices(uint32_t group) const {
  const std::string dir = absl::StrCat(sysfs_root_, "/kernel/iommu_groups/", group, "/devices");
  DIR* stream = ::opendir(dir.c_str());
  if (stream == nullptr) {
    return absl::StrCat("(cannot list ", dir, ": ", ErrnoError(errno, "opendir").message(), ")");
  }
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(stream)) {
    const absl::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(stream);
  std::sort(names.begin(), names.end());
  std::vector<std::string> described;
  for (const std::string& name : names) {
    absl::StatusOr<std::string> driver = BoundDriver(absl::StrCat(dir, "/", name));
    described.push_back(absl::StrCat(name, " (",
                                     !driver.ok()      ? "driver unknown"
                                     : driver->empty() ? "no driver"
                                                       : *driver,
                                     ")"));
  }
  if (described.empty()) return absl::StrCat("(", dir, " lists no devices)");
  return absl::StrJoin(described, ", ");
}

}  // namespace vfiod
