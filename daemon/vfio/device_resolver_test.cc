#include "daemon/vfio/device_resolver.h"

#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/vfio/fake_sysfs.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

class DeviceResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<FakeSysfs> fake = FakeSysfs::Create();
    ASSERT_TRUE(fake.ok()) << fake.status();
    fake_.emplace(*std::move(fake));
    resolver_.emplace(fake_->sysfs_root(), fake_->dev_root());
  }

  std::optional<FakeSysfs> fake_;
  std::optional<VfioDeviceResolver> resolver_;
};

TEST_F(DeviceResolverTest, ResolvesADeviceBoundToVfioPci) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 12, "vfio-pci").ok());
  absl::StatusOr<ResolvedDevice> device = resolver_->Resolve("0000:00:03.0");
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(device->name, "0000:00:03.0");
  EXPECT_EQ(device->iommu_group, 12u);
  EXPECT_EQ(device->sysfs_path, fake_->sysfs_root() + "/bus/pci/devices/0000:00:03.0");
}

TEST_F(DeviceResolverTest, AcceptsTheShortFormAndUpperCase) {
  ASSERT_TRUE(fake_->AddDevice("0000:0a:1f.2", 3, "vfio-pci").ok());
  for (const char* name : {"0a:1f.2", "0000:0A:1F.2", "0A:1f.2"}) {
    absl::StatusOr<ResolvedDevice> device = resolver_->Resolve(name);
    ASSERT_TRUE(device.ok()) << name << ": " << device.status();
    EXPECT_EQ(device->name, "0000:0a:1f.2");
  }
}

TEST_F(DeviceResolverTest, AcceptsSysfsPaths) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 4, "vfio-pci").ok());
  for (const char* path :
       {"/sys/bus/pci/devices/0000:00:03.0", "/sys/bus/pci/devices/0000:00:03.0/",
        "/sys/devices/pci0000:00/0000:00:03.0", "/sys/devices/pci0000:00/0000:00:03.0//"}) {
    absl::StatusOr<ResolvedDevice> device = resolver_->Resolve(path);
    ASSERT_TRUE(device.ok()) << path << ": " << device.status();
    EXPECT_EQ(device->name, "0000:00:03.0");
    EXPECT_EQ(device->iommu_group, 4u);
  }
}

TEST_F(DeviceResolverTest, RejectsBadArguments) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 4, "vfio-pci").ok());
  for (const char* bad : {
           "",
           "sim:edu",
           "0000:00:03.0/",
           "/dev/vfio/4",
           "/sys/bus/pci/devices/../devices/0000:00:03.0",
           "/sys/bus/pci/devices/./0000:00:03.0",
           "/sys/bus/pci/devices//0000:00:03.0",
           "/sys/bus/pci/devices/0000:00:03.0/config",
           "/sys/bus/pci/devices/00:03.0",  // sysfs names always carry the domain
           "/sys/bus/pci/devices/0000:00:03.0x",
           "/sys/bus/pci/0000:00:03.0",
           "/sys/devices/0000:00:03.0/..",
           "/sys/class/net/eth0",
           "/sys",
           "/",
       }) {
    absl::StatusOr<ResolvedDevice> device = resolver_->Resolve(bad);
    EXPECT_FALSE(device.ok()) << "accepted \"" << bad << "\"";
    if (!device.ok()) {
      EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument)
          << bad << ": " << device.status();
    }
  }
}

TEST_F(DeviceResolverTest, RejectsADevicesPathThatIsAnotherNode) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 4, "vfio-pci").ok());
  const std::string other = fake_->sysfs_root() + "/devices/platform/0000:00:03.0";
  ASSERT_EQ(::mkdir((fake_->sysfs_root() + "/devices/platform").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(other.c_str(), 0755), 0);
  absl::StatusOr<ResolvedDevice> device = resolver_->Resolve("/sys/devices/platform/0000:00:03.0");
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(device.status().message(), "not the same sysfs node"))
      << device.status();
  absl::StatusOr<ResolvedDevice> missing =
      resolver_->Resolve("/sys/devices/pci0000:01/0000:00:03.0");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
}

TEST_F(DeviceResolverTest, MissingDeviceIsNotFoundNamingThePath) {
  absl::StatusOr<ResolvedDevice> device = resolver_->Resolve("0000:00:04.0");
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(device.status().message(),
                                fake_->sysfs_root() + "/bus/pci/devices/0000:00:04.0"))
      << device.status();
  EXPECT_TRUE(absl::StrContains(device.status().message(), "errno 2")) << device.status();
}

TEST_F(DeviceResolverTest, NotBoundToAnyDriver) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 4, std::nullopt).ok());
  absl::StatusOr<ResolvedDevice> device = resolver_->Resolve("0000:00:03.0");
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(device.status().message());
  EXPECT_TRUE(absl::StrContains(message, "0000:00:03.0 is bound to no driver, not vfio-pci"))
      << message;
  EXPECT_TRUE(absl::StrContains(message, "echo vfio-pci > " + fake_->sysfs_root() +
                                             "/bus/pci/devices/0000:00:03.0/driver_override"))
      << message;
  EXPECT_FALSE(absl::StrContains(message, "unbind")) << message;
}

TEST_F(DeviceResolverTest, BoundToAnotherDriver) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 4, "e1000e").ok());
  absl::StatusOr<ResolvedDevice> device = resolver_->Resolve("0000:00:03.0");
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(device.status().message());
  EXPECT_TRUE(absl::StrContains(message,
                                "0000:00:03.0 is bound to e1000e, not vfio-pci (echo "
                                "vfio-pci > "))
      << message;
  EXPECT_TRUE(absl::StrContains(message, "/driver/unbind")) << message;
  EXPECT_TRUE(absl::StrContains(message, "drivers_probe")) << message;
}

TEST_F(DeviceResolverTest, MissingIommuGroup) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", std::nullopt, "vfio-pci").ok());
  absl::StatusOr<ResolvedDevice> device = resolver_->Resolve("0000:00:03.0");
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(device.status().message(), "has no IOMMU group"))
      << device.status();
  EXPECT_TRUE(absl::StrContains(device.status().message(), "/iommu_group")) << device.status();
}

TEST_F(DeviceResolverTest, MalformedIommuGroupLink) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 4, "vfio-pci").ok());
  ASSERT_TRUE(fake_->SetIommuGroupLink("0000:00:03.0", "../../../kernel/iommu_groups/x7").ok());
  absl::StatusOr<ResolvedDevice> device = resolver_->Resolve("0000:00:03.0");
  ASSERT_FALSE(device.ok());
  EXPECT_TRUE(absl::StrContains(device.status().message(), "x7")) << device.status();
}

TEST(ParseIommuGroupLinkTest, GoodLinks) {
  EXPECT_EQ(*ParseIommuGroupLink("../../../kernel/iommu_groups/12"), 12u);
  EXPECT_EQ(*ParseIommuGroupLink("../../../../kernel/iommu_groups/0"), 0u);
  EXPECT_EQ(*ParseIommuGroupLink("/sys/kernel/iommu_groups/2147483647"), 2147483647u);
  EXPECT_EQ(*ParseIommuGroupLink("iommu_groups/5"), 5u);
}

TEST(ParseIommuGroupLinkTest, BadLinks) {
  for (const char* bad : {
           "",
           "../../../kernel/iommu_groups/",
           "../../../kernel/iommu_groups/-1",
           "../../../kernel/iommu_groups/+1",
           "../../../kernel/iommu_groups/012",
           "../../../kernel/iommu_groups/1a",
           "../../../kernel/iommu_groups/ 1",
           "../../../kernel/iommu_groups/2147483648",
           "../../../kernel/iommu_groups/99999999999",
           "../../../kernel/other_groups/3",
           "3",
       }) {
    EXPECT_FALSE(ParseIommuGroupLink(bad).ok()) << bad;
  }
}

TEST_F(DeviceResolverTest, DescribesTheGroupsDevicesAndDrivers) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 9, "vfio-pci").ok());
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.1", 9, "e1000e").ok());
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.2", 9, std::nullopt).ok());
  EXPECT_EQ(resolver_->DescribeGroupDevices(9),
            "0000:00:03.0 (vfio-pci), 0000:00:03.1 (e1000e), 0000:00:03.2 (no driver)");
  EXPECT_TRUE(absl::StrContains(resolver_->DescribeGroupDevices(10), "cannot list"));
}

TEST_F(DeviceResolverTest, DevPaths) {
  EXPECT_EQ(resolver_->ContainerPath(), fake_->dev_root() + "/vfio/vfio");
  EXPECT_EQ(resolver_->GroupPath(42), fake_->dev_root() + "/vfio/42");
  VfioDeviceResolver real;
  EXPECT_EQ(real.ContainerPath(), "/dev/vfio/vfio");
  EXPECT_EQ(real.GroupPath(7), "/dev/vfio/7");
}

}  // namespace
}  // namespace vfiod
