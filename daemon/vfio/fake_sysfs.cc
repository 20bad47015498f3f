#include "daemon/vfio/fake_sysfs.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace vfiod {
namespace {

absl::Status Failed(absl::string_view call, const std::string& path) {
  return absl::InternalError(absl::StrCat(call, " ", path, ": ", std::strerror(errno)));
}

absl::Status MakeDirs(const std::string& path) {
  std::string sofar;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    absl::StrAppend(&sofar, "/", part);
    if (::mkdir(sofar.c_str(), 0755) != 0 && errno != EEXIST) return Failed("mkdir", sofar);
  }
  return absl::OkStatus();
}

absl::Status Link(const std::string& target, const std::string& path) {
  ::unlink(path.c_str());
  if (::symlink(target.c_str(), path.c_str()) != 0) return Failed("symlink", path);
  return absl::OkStatus();
}

absl::Status Touch(const std::string& path) {
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return Failed("open", path);
  ::close(fd);
  return absl::OkStatus();
}

int RemoveOne(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }

}  // namespace

absl::StatusOr<FakeSysfs> FakeSysfs::Create() {
  const char* tmp = ::getenv("TEST_TMPDIR");
  std::string templ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/fake_sysfs.XXXXXX");
  std::vector<char> buffer(templ.begin(), templ.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) return Failed("mkdtemp", templ);
  FakeSysfs fake(buffer.data());
  for (const char* dir : {"/sys/bus/pci/devices", "/sys/bus/pci/drivers", "/sys/devices/pci0000:00",
                          "/sys/kernel/iommu_groups"}) {
    if (absl::Status s = MakeDirs(fake.root_ + dir); !s.ok()) return s;
  }
  return fake;
}

FakeSysfs::~FakeSysfs() {
  if (!root_.empty()) ::nftw(root_.c_str(), RemoveOne, 16, FTW_DEPTH | FTW_PHYS);
}

absl::Status FakeSysfs::AddDevice(const std::string& name, std::optional<uint32_t> group,
                                  std::optional<std::string> driver) {
  const std::string node = absl::StrCat(sysfs_root(), "/devices/pci0000:00/", name);
  if (absl::Status s = MakeDirs(node); !s.ok()) return s;
  if (absl::Status s = Link(absl::StrCat("../../../devices/pci0000:00/", name),
                            absl::StrCat(sysfs_root(), "/bus/pci/devices/", name));
      !s.ok()) {
    return s;
  }
  if (group.has_value()) {
    const std::string group_dir = absl::StrCat(sysfs_root(), "/kernel/iommu_groups/", *group);
    if (absl::Status s = MakeDirs(group_dir + "/devices"); !s.ok()) return s;
    if (absl::Status s = Link(absl::StrCat("../../../../devices/pci0000:00/", name),
                              absl::StrCat(group_dir, "/devices/", name));
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            Link(absl::StrCat("../../../kernel/iommu_groups/", *group), node + "/iommu_group");
        !s.ok()) {
      return s;
    }
  }
  if (driver.has_value()) {
    if (absl::Status s = MakeDirs(absl::StrCat(sysfs_root(), "/bus/pci/drivers/", *driver));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = Link(absl::StrCat("../../../bus/pci/drivers/", *driver), node + "/driver");
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status FakeSysfs::SetIommuGroupLink(const std::string& name, const std::string& target) {
  return Link(target, absl::StrCat(sysfs_root(), "/devices/pci0000:00/", name, "/iommu_group"));
}

absl::Status FakeSysfs::AddDevVfio(uint32_t group) {
  if (absl::Status s = MakeDirs(dev_root() + "/vfio"); !s.ok()) return s;
  if (absl::Status s = Touch(dev_root() + "/vfio/vfio"); !s.ok()) return s;
  return Touch(absl::StrCat(dev_root(), "/vfio/", group));
}

}  // namespace vfiod
