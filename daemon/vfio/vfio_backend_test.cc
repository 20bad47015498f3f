// VfioBackend::Open up to the first step that needs a real /dev/vfio, against a fake sysfs
// tree; everything after it runs in the VM lab.
#include "daemon/vfio/vfio_backend.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/vfio/fake_sysfs.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

class VfioBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<FakeSysfs> fake = FakeSysfs::Create();
    ASSERT_TRUE(fake.ok()) << fake.status();
    fake_.emplace(*std::move(fake));
    paths_.sysfs_root = fake_->sysfs_root();
    paths_.dev_root = fake_->dev_root();
  }

  std::optional<FakeSysfs> fake_;
  VfioPaths paths_;
};

TEST_F(VfioBackendTest, MissingDevVfioIsNotFoundNamingThePath) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 5, "vfio-pci").ok());
  absl::StatusOr<std::unique_ptr<VfioBackend>> backend = VfioBackend::Open("00:03.0", paths_);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kNotFound);
  const std::string message(backend.status().message());
  EXPECT_TRUE(absl::StartsWith(message, "0000:00:03.0: ")) << message;
  EXPECT_TRUE(absl::StrContains(message, fake_->dev_root() + "/vfio/vfio")) << message;
  EXPECT_TRUE(absl::StrContains(message, "(errno 2)")) << message;
}

TEST_F(VfioBackendTest, AFileThatIsNotAContainerFailsAtTheApiVersion) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 5, "vfio-pci").ok());
  ASSERT_TRUE(fake_->AddDevVfio(5).ok());
  absl::StatusOr<std::unique_ptr<VfioBackend>> backend =
      VfioBackend::Open("/sys/bus/pci/devices/0000:00:03.0", paths_);
  ASSERT_FALSE(backend.ok());
  EXPECT_TRUE(absl::StrContains(backend.status().message(), "VFIO_GET_API_VERSION"))
      << backend.status();
}

TEST_F(VfioBackendTest, ResolutionErrorsComeFirst) {
  ASSERT_TRUE(fake_->AddDevice("0000:00:03.0", 5, "e1000e").ok());
  ASSERT_TRUE(fake_->AddDevVfio(5).ok());
  absl::StatusOr<std::unique_ptr<VfioBackend>> backend = VfioBackend::Open("00:03.0", paths_);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(backend.status().message(), "is bound to e1000e, not vfio-pci"))
      << backend.status();

  EXPECT_EQ(VfioBackend::Open("sim:edu", paths_).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(VfioBackend::Open("0000:00:09.0", paths_).status().code(), absl::StatusCode::kNotFound);
}

TEST(OpenVfioBackendTest, NoDeviceOnThisHost) {
  // Whatever this host has, 0000:00:1f.7 bound to vfio-pci with a working /dev/vfio is not
  // expected; the call must fail cleanly with a message naming the device.
  absl::StatusOr<std::unique_ptr<DeviceBackend>> backend = OpenVfioBackend("ffff:ff:1f.7");
  ASSERT_FALSE(backend.ok());
  EXPECT_TRUE(absl::StrContains(backend.status().message(), "ffff:ff:1f.7")) << backend.status();
}

}  // namespace
}  // namespace vfiod
