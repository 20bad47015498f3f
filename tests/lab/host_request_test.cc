// The host asks for the device back while vfiod serves it (issue 9, 13(d)), on the lab's real
// edu device bound to vfio-pci: `echo $BDF > /sys/bus/pci/drivers/vfio-pci/unbind`. The kernel
// (vfio_unregister_group_dev -> vfio_pci_core_request) signals the REQ trigger at once and
// about every 10 s until the device fd is closed; without a trigger the unbind blocks for as
// long as the fd is open.
//   - No owner: vfiod's own REQ trigger (visible in GetState as TRIGGER_DAEMON_REQUEST) fires,
//     vfiod logs that the host requested the device, exits 0, and the unbind returns within a
//     few seconds; the socket files are gone.
//   - An owner with its own REQ eventfd: that eventfd is signalled and vfiod keeps serving (the
//     VMM decides); when the owner disconnects, vfiod's trigger is armed again and the kernel's
//     next request (within ~10 s) stops it.
// Every unbind is bounded: when it has not returned in time, the test fails, stops vfiod with
// SIGTERM (which releases the device, so the unbind returns) and goes on. The device is bound to
// vfio-pci again after each case, so this part may run before others.
//
// Environment: LAB_EDU (the edu device's address, set by the lab), VFIOD_BINARY.
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/vfio_client.h"
#include "gtest/gtest.h"
#include "tests/eventfd_wait.h"
#include "tests/host_report.h"
#include "tests/lab/lab_device.h"

namespace vfiod {
namespace {

using ::vfiod::lab::Env;
using ::vfiod::lab::ReadFile;
using ::vfiod::testing::ReadEventfdWithin;

constexpr char kVfioPciDriver[] = "/sys/bus/pci/drivers/vfio-pci";
constexpr char kSocket[] = "/tmp/host_request.sock";
constexpr char kLog[] = "/tmp/host_request-vfiod.log";
// The log line of a daemon stopped by the host's request (daemon/vfiod_main.cc).
constexpr char kRequestedLine[] = "the host requested the device";

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// The driver the device is bound to ("" when none).
std::string DriverOf(const std::string& address) {
  char target[256] = {};
  const std::string link = absl::StrCat("/sys/bus/pci/devices/", address, "/driver");
  ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
  if (n <= 0) return "";
  std::string path(target, n);
  return path.substr(path.rfind('/') + 1);
}

// Writes `value` to a sysfs file in a child process (a write to `unbind` may block in the
// kernel, uninterruptibly once signalled); returns the child's pid.
pid_t WriteInChild(const std::string& path, const std::string& value) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) ::_exit(10);
  ssize_t n = ::write(fd, value.data(), value.size());
  ::_exit(n == static_cast<ssize_t>(value.size()) && ::close(fd) == 0 ? 0 : 11);
}

// The exit status of `pid` if it ends within `timeout`, nullopt otherwise.
std::optional<int> WaitWithin(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

std::string ReadLog() {
  absl::StatusOr<std::string> text = ReadFile(kLog);
  return text.ok() ? *text : "";
}

class HostRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    address_ = Env("LAB_EDU", "");
    if (address_.empty() || !Exists(kVfioPciDriver)) {
      testing::ReportNotApplicable(
          "host unbind of a device vfiod serves",
          address_.empty() ? "LAB_EDU is not set (not in the VM lab)" : "no vfio-pci driver");
      GTEST_SKIP() << "needs the lab's edu device bound to vfio-pci";
    }
    ASSERT_EQ(DriverOf(address_), "vfio-pci") << address_;
    ASSERT_NO_FATAL_FAILURE(StartDaemon());
  }

  void TearDown() override {
    client_.reset();
    if (daemon_ > 0) {
      ::kill(daemon_, SIGTERM);
      if (!WaitWithin(daemon_, absl::Seconds(5)).has_value()) {
        ::kill(daemon_, SIGKILL);
        ::waitpid(daemon_, nullptr, 0);
      }
      daemon_ = -1;
    }
    if (unbind_ > 0) {
      // vfiod is gone, so the device is released and the unbind returns.
      EXPECT_TRUE(WaitWithin(unbind_, absl::Seconds(30)).has_value()) << "unbind still blocked";
      unbind_ = -1;
    }
    if (!address_.empty()) Rebind();
  }

  // vfiod --device=$LAB_EDU --listen=kSocket, its log in kLog; waits until it serves.
  void StartDaemon() {
    ::unlink(kLog);
    const std::string binary = Env("VFIOD_BINARY", "vfiod");
    const std::string device = absl::StrCat("--device=", address_);
    const std::string listen = absl::StrCat("--listen=", kSocket);
    daemon_ = ::fork();
    ASSERT_GE(daemon_, 0) << std::strerror(errno);
    if (daemon_ == 0) {
      int log = ::open(kLog, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (log < 0 || ::dup2(log, 2) != 2) ::_exit(12);
      ::execl(binary.c_str(), binary.c_str(), device.c_str(), listen.c_str(), "--log-level=debug",
              static_cast<char*>(nullptr));
      ::_exit(13);
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (!absl::StrContains(ReadLog(), "msg=serving ")) {
      ASSERT_LT(absl::Now(), deadline) << "vfiod did not serve; its log:\n" << ReadLog();
      ASSERT_FALSE(WaitWithin(daemon_, absl::ZeroDuration()).has_value())
          << "vfiod exited; its log:\n"
          << ReadLog();
      absl::SleepFor(absl::Milliseconds(20));
    }
    absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect(kSocket);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  // The REQ trigger GetState reports.
  v1::IrqVectorState::Trigger ReqTrigger() {
    absl::StatusOr<v1::DeviceState> state = client_->GetState();
    EXPECT_TRUE(state.ok()) << state.status();
    if (!state.ok()) return v1::IrqVectorState::TRIGGER_NONE;
    for (const v1::IrqIndexState& index : state->irqs()) {
      if (index.index() == v1::IRQ_INDEX_REQ && index.vectors_size() == 1) {
        return index.vectors(0).trigger();
      }
    }
    ADD_FAILURE() << "GetState lists no REQ index";
    return v1::IrqVectorState::TRIGGER_NONE;
  }

  void StartUnbind() {
    unbind_ = WriteInChild(absl::StrCat(kVfioPciDriver, "/unbind"), address_);
    ASSERT_GT(unbind_, 0);
    unbind_started_ = absl::Now();
  }

  // Waits up to `timeout` for vfiod's exit, then for the unbind; on time, checks that vfiod
  // exited 0 with the log line and removed its sockets. When vfiod has not exited, fails and
  // stops it (TearDown), which lets the unbind return.
  void ExpectReleasedWithin(absl::Duration timeout) {
    std::optional<int> status = WaitWithin(daemon_, timeout);
    ASSERT_TRUE(status.has_value())
        << "vfiod still serves " << absl::FormatDuration(absl::Now() - unbind_started_)
        << " after the unbind began, which stays blocked; its log:\n"
        << ReadLog();
    daemon_ = -1;
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "status " << *status;
    std::optional<int> unbind = WaitWithin(unbind_, absl::Seconds(5));
    ASSERT_TRUE(unbind.has_value()) << "vfiod exited but the unbind did not return";
    unbind_ = -1;
    EXPECT_TRUE(WIFEXITED(*unbind) && WEXITSTATUS(*unbind) == 0) << "unbind status " << *unbind;
    std::printf("host_request: unbind returned %s after it began\n",
                absl::FormatDuration(absl::Now() - unbind_started_).c_str());
    EXPECT_EQ(DriverOf(address_), "");
    EXPECT_TRUE(absl::StrContains(ReadLog(), kRequestedLine)) << ReadLog();
    EXPECT_FALSE(Exists(kSocket)) << "the socket file is left";
    EXPECT_FALSE(Exists(absl::StrCat(kSocket, ".fds"))) << "the fd channel's socket file is left";
  }

  // Binds the device to vfio-pci again (driver_override stays vfio-pci, as the lab set it).
  void Rebind() {
    if (DriverOf(address_) == "vfio-pci") return;
    const std::string override_path =
        absl::StrCat("/sys/bus/pci/devices/", address_, "/driver_override");
    std::optional<int> set = WaitWithin(WriteInChild(override_path, "vfio-pci"), absl::Seconds(5));
    EXPECT_TRUE(set.has_value() && WIFEXITED(*set) && WEXITSTATUS(*set) == 0);
    std::optional<int> probe =
        WaitWithin(WriteInChild("/sys/bus/pci/drivers_probe", address_), absl::Seconds(5));
    EXPECT_TRUE(probe.has_value() && WIFEXITED(*probe) && WEXITSTATUS(*probe) == 0);
    EXPECT_EQ(DriverOf(address_), "vfio-pci") << "the rest of the lab suite needs it";
  }

  std::string address_;
  pid_t daemon_ = -1;
  pid_t unbind_ = -1;
  absl::Time unbind_started_;
  std::unique_ptr<VfioClient> client_;
};

TEST_F(HostRequestTest, UnbindWithoutOwnerStopsVfiod) {
  EXPECT_EQ(ReqTrigger(), v1::IrqVectorState::TRIGGER_DAEMON_REQUEST);
  client_.reset();
  ASSERT_NO_FATAL_FAILURE(StartUnbind());
  ASSERT_NO_FATAL_FAILURE(ExpectReleasedWithin(absl::Seconds(5)));
}

TEST_F(HostRequestTest, OwnerTriggerGetsTheRequestThenVfiodStopsAfterOwnerLoss) {
  ASSERT_TRUE(client_->ClaimOwnership().ok());
  int eventfd = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(eventfd, 0);
  absl::Status set = client_->SetIrqEventfds(v1::IRQ_INDEX_REQ, 0, {eventfd});
  ASSERT_TRUE(set.ok()) << set;
  EXPECT_EQ(ReqTrigger(), v1::IrqVectorState::TRIGGER_CLIENT_EVENTFD);

  ASSERT_NO_FATAL_FAILURE(StartUnbind());
  EXPECT_GE(ReadEventfdWithin(eventfd, absl::Seconds(5)), 1u) << "the owner's eventfd";
  ::close(eventfd);
  // The VMM decides: vfiod keeps serving, and the unbind waits.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_FALSE(WaitWithin(daemon_, absl::ZeroDuration()).has_value()) << ReadLog();
  EXPECT_FALSE(WaitWithin(unbind_, absl::ZeroDuration()).has_value());
  absl::StatusOr<v1::DeviceState> state = client_->GetState();
  EXPECT_TRUE(state.ok()) << state.status();

  // Owner loss: vfiod's trigger is armed again; the kernel's next request (every ~10 s) stops it.
  client_.reset();
  const absl::Time lost = absl::Now();
  ASSERT_NO_FATAL_FAILURE(ExpectReleasedWithin(absl::Seconds(15)));
  std::printf("host_request: vfiod released the device %s after the owner disconnected\n",
              absl::FormatDuration(absl::Now() - lost).c_str());
}

}  // namespace
}  // namespace vfiod
