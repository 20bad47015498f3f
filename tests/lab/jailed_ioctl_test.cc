// The seccomp policy on a real VFIO device: a process confined exactly as vfiod confines itself
// (the same daemon/jail and seccomp code, the real container, group and device fds of the lab's
// edu device at their fixed numbers) may use the serving-phase request SET_IRQS on the device
// fd, and dies by SIGSYS the moment it tries anything else on it: VFIO_DEVICE_PCI_HOT_RESET
// (the number VFIO_IOMMU_MAP_DMA has on a container), MAP_DMA aimed at the device fd, a query.
//
// Runs in the VM lab: LAB_EDU names the edu device bound to vfio-pci. Each case forks before
// touching anything, so the test process itself stays unconfined.
#include <linux/vfio.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "daemon/jail/jail.h"
#include "daemon/vfio/vfio_backend.h"
#include "gtest/gtest.h"
#include "seccomp/fd_layout.h"
#include "seccomp/policy.h"

namespace vfiod {
namespace {

// Exit codes of the confined child for the steps before the ioctl.
constexpr int kOpenFailed = 10;
constexpr int kPinFailed = 11;
constexpr int kJailFailed = 12;
constexpr int kPolicyFailed = 13;
constexpr int kLived = 0;

// Forks; the child opens the device, confines itself like vfiod and calls `request` on `fd`
// with `arg`. Returns the child's wait status.
int RunConfined(int fd, unsigned long request, void* arg) {
  pid_t pid = ::fork();
  if (pid == 0) {
    const char* device = std::getenv("LAB_EDU");
    absl::StatusOr<std::unique_ptr<VfioBackend>> backend =
        VfioBackend::Open(device != nullptr ? device : "");
    if (!backend.ok()) _exit(kOpenFailed);
    // The same fds at the same numbers as the daemon keeps them (vfiod_main.cc).
    DeviceBackend::JailFds fds = (*backend)->FdsForJail();
    if (!jail::PinFds({{fds.vfio_container, seccomp::kVfioContainerFd, "VFIO container"},
                       {fds.vfio_group, seccomp::kVfioGroupFd, "VFIO group"},
                       {fds.vfio_device, seccomp::kVfioDeviceFd, "VFIO device"}})
             .ok()) {
      _exit(kPinFailed);
    }
    jail::JailOptions options;
    options.memlock_bytes = 64 << 20;
    options.max_open_files = 64;
    if (!jail::Enter(options).ok()) _exit(kJailFailed);
    if (!seccomp::Load(seccomp::PolicyMode::kKill).ok()) _exit(kPolicyFailed);
    ::ioctl(fd, request, arg);  // its result does not matter: only whether the process lives
    _exit(kLived);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

std::string Describe(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

class JailedIoctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("LAB_EDU") == nullptr) GTEST_SKIP() << "not in the VM lab (no LAB_EDU)";
  }
};

TEST_F(JailedIoctlTest, SetIrqsOnTheDeviceFdIsAllowed) {
  vfio_irq_set disable = {};
  disable.argsz = sizeof(disable);
  disable.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  disable.index = VFIO_PCI_INTX_IRQ_INDEX;
  int status = RunConfined(seccomp::kVfioDeviceFd, VFIO_DEVICE_SET_IRQS, &disable);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == kLived) << Describe(status);
}

TEST_F(JailedIoctlTest, PciHotResetOnTheDeviceFdKills) {
  static_assert(VFIO_DEVICE_PCI_HOT_RESET == VFIO_IOMMU_MAP_DMA, "the aliasing this test is about");
  vfio_pci_hot_reset reset = {};
  reset.argsz = sizeof(reset);
  int status = RunConfined(seccomp::kVfioDeviceFd, VFIO_DEVICE_PCI_HOT_RESET, &reset);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) << Describe(status);
}

TEST_F(JailedIoctlTest, UnmapDmaOnTheDeviceFdKills) {
  vfio_iommu_type1_dma_unmap unmap = {};
  unmap.argsz = sizeof(unmap);
  int status = RunConfined(seccomp::kVfioDeviceFd, VFIO_IOMMU_UNMAP_DMA, &unmap);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) << Describe(status);
}

TEST_F(JailedIoctlTest, SetIrqsOnTheContainerFdKills) {
  vfio_irq_set disable = {};
  disable.argsz = sizeof(disable);
  disable.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  int status = RunConfined(seccomp::kVfioContainerFd, VFIO_DEVICE_SET_IRQS, &disable);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) << Describe(status);
}

TEST_F(JailedIoctlTest, DeviceQueriesAfterSetupKill) {
  vfio_device_info info = {};
  info.argsz = sizeof(info);
  int status = RunConfined(seccomp::kVfioDeviceFd, VFIO_DEVICE_GET_INFO, &info);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) << Describe(status);
}

}  // namespace
}  // namespace vfiod
