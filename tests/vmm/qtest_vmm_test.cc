// QEMU 11 under the qtest accelerator on this machine, with no vfiod: the driver's protocol
// calls against the bare q35 machine, and a clean, prompt failure (QEMU exits, its stderr is
// reported, nothing hangs) when the vfio-user server is absent, hangs up, or never answers.
// Skips, printing why, when $VFIOD_QEMU11 does not name a QEMU 11.
#include "tests/vmm/qtest_vmm.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace vfiod::vmm {
namespace {

constexpr PciBdf kHostBridge = {0, 0, 0};  // q35's MCH, 8086:29c0

class QtestVmmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Qemu11> qemu = FindQemu11();
    if (!qemu.ok()) {
      fprintf(stderr, "SKIP: %s\n", std::string(qemu.status().message()).c_str());
      GTEST_SKIP() << qemu.status().message();
    }
    qemu_ = *qemu;
    fprintf(stderr, "using %s: %s\n", qemu_.path.c_str(), qemu_.version.c_str());
  }

  QtestVmmOptions Options() {
    QtestVmmOptions options;
    options.qemu_path = qemu_.path;
    return options;
  }

  Qemu11 qemu_;
};

// A UNIX socket server on a fresh path that does `behavior` with each connection.
class FakeServer {
 public:
  enum Behavior { kHangUp, kSilent };
  explicit FakeServer(Behavior behavior) : behavior_(behavior) {
    char dir[] = "/tmp/vfiodfXXXXXX";
    dir_ = mkdtemp(dir);
    path_ = dir_ + "/vu.sock";
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(fd_, 4), 0);
    thread_ = std::thread([this] {
      while (true) {
        int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;  // shutdown() in the destructor
        accepted_++;
        if (behavior_ == kHangUp) {
          close(c);
        } else {
          held_ = c;  // never answered; closed in the destructor
        }
      }
    });
  }
  ~FakeServer() {
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
    if (held_ >= 0) close(held_);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }
  int accepted() const { return accepted_; }

 private:
  Behavior behavior_;
  std::string dir_, path_;
  int fd_ = -1;
  std::atomic<int> held_{-1};
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

TEST_F(QtestVmmTest, StartsUnderQtestAndDrivesTheMachine) {
  absl::StatusOr<std::unique_ptr<QtestVmm>> vmm = QtestVmm::Start(Options());
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  QtestVmm& q = **vmm;
  fprintf(stderr, "QEMU 11 (qtest, no device) answered %s after it was started\n",
          absl::FormatDuration((*vmm)->start_duration()).c_str());

  // Config space of the host bridge through 0xcf8/0xcfc, in every width.
  EXPECT_EQ(*q.ConfigRead(kHostBridge, 0x00, 4), 0x29c08086u);
  EXPECT_EQ(*q.ConfigRead(kHostBridge, 0x00, 2), 0x8086u);
  EXPECT_EQ(*q.ConfigRead(kHostBridge, 0x02, 2), 0x29c0u);
  EXPECT_EQ(*q.ConfigRead(kHostBridge, 0x0b, 1), 0x06u);  // class: bridge
  // Nothing in slot 4 without a device: all ones.
  EXPECT_EQ(*q.ConfigRead({0, 4, 0}, 0x00, 4), 0xffffffffu);

  // Guest RAM: bytes in, values out (little endian), and back.
  ASSERT_TRUE(q.MemWrite(0x10000, std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8)).ok());
  EXPECT_EQ(*q.Readl(0x10000), 0x04030201u);
  EXPECT_EQ(*q.Readq(0x10000), 0x0807060504030201u);
  EXPECT_EQ(*q.Readw(0x10006), 0x0807u);
  EXPECT_EQ(*q.Readb(0x10003), 0x04u);
  ASSERT_TRUE(q.Writel(0x10004, 0xcafef00d).ok());
  ASSERT_TRUE(q.Writeb(0x10000, 0xaa).ok());
  ASSERT_TRUE(q.Writew(0x10002, 0xbbcc).ok());
  EXPECT_EQ(*q.MemRead(0x10000, 8), std::string("\xaa\x02\xcc\xbb\x0d\xf0\xfe\xca", 8));
  std::string page(4096, '\0');
  for (size_t i = 0; i < page.size(); ++i) page[i] = static_cast<char>(i * 7 + 3);
  ASSERT_TRUE(q.MemWrite(0x200000, page).ok());
  EXPECT_EQ(*q.MemRead(0x200000, page.size()), page);

  // I/O ports: the CMOS index/data pair answers.
  ASSERT_TRUE(q.Outb(0x70, 0x0f).ok());
  EXPECT_TRUE(q.Inb(0x71).ok());

  // The interrupt controller's inputs can be intercepted; nothing is raised without a device.
  ASSERT_TRUE(q.InterceptIrqIn("ioapic").ok());
  EXPECT_FALSE(q.IrqLevel(16));
  EXPECT_EQ(q.WaitIrq(16, true, absl::Milliseconds(50)).code(),
            absl::StatusCode::kDeadlineExceeded);

  // A failing command is an error, not a hang.
  absl::StatusOr<std::string> bad = q.Command("no_such_command");
  EXPECT_FALSE(bad.ok());

  // The protocol's own cost: one readl of guest RAM.
  constexpr int kRounds = 500;
  absl::Time t0 = absl::Now();
  for (int i = 0; i < kRounds; ++i) ASSERT_TRUE(q.Readl(0x10000).ok());
  fprintf(stderr, "qtest readl of guest RAM: %.1f us per access (%d accesses)\n",
          absl::ToDoubleMicroseconds((absl::Now() - t0) / kRounds), kRounds);

  absl::StatusOr<int> status = q.Kill(SIGKILL);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFSIGNALED(*status));
  EXPECT_FALSE(q.Running());
  EXPECT_EQ(q.Command("endianness").status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(QtestVmmTest, FailsCleanlyWithoutServer) {
  QtestVmmOptions options = Options();
  options.vfio_user_socket = "/tmp/vfiod-no-such-dir/vu.sock";
  absl::Time t0 = absl::Now();
  absl::StatusOr<std::unique_ptr<QtestVmm>> vmm = QtestVmm::Start(options);
  absl::Duration took = absl::Now() - t0;
  ASSERT_FALSE(vmm.ok());
  fprintf(stderr, "no server: failed after %s: %s\n", absl::FormatDuration(took).c_str(),
          std::string(vmm.status().message()).c_str());
  EXPECT_EQ(vmm.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(vmm.status().message(), "Failed to connect"))
      << vmm.status();
  EXPECT_TRUE(absl::StrContains(vmm.status().message(), "exit 1")) << vmm.status();
  EXPECT_LT(took, absl::Seconds(5));
}

TEST_F(QtestVmmTest, FailsCleanlyWhenServerHangsUp) {
  FakeServer server(FakeServer::kHangUp);
  QtestVmmOptions options = Options();
  options.vfio_user_socket = server.path();
  absl::Time t0 = absl::Now();
  absl::StatusOr<std::unique_ptr<QtestVmm>> vmm = QtestVmm::Start(options);
  absl::Duration took = absl::Now() - t0;
  ASSERT_FALSE(vmm.ok());
  fprintf(stderr, "server hangs up: failed after %s: %s\n", absl::FormatDuration(took).c_str(),
          std::string(vmm.status().message()).c_str());
  EXPECT_EQ(vmm.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_GE(server.accepted(), 1);
  EXPECT_LT(took, absl::Seconds(5));
}

TEST_F(QtestVmmTest, FailsCleanlyWhenServerNeverAnswers) {
  FakeServer server(FakeServer::kSilent);
  QtestVmmOptions options = Options();
  options.vfio_user_socket = server.path();
  options.vfio_user_msg_timeout_ms = 300;
  absl::Time t0 = absl::Now();
  absl::StatusOr<std::unique_ptr<QtestVmm>> vmm = QtestVmm::Start(options);
  absl::Duration took = absl::Now() - t0;
  ASSERT_FALSE(vmm.ok());
  fprintf(stderr, "server silent (x-msg-timeout 300 ms): failed after %s: %s\n",
          absl::FormatDuration(took).c_str(), std::string(vmm.status().message()).c_str());
  EXPECT_EQ(vmm.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.accepted(), 1);
  EXPECT_LT(took, absl::Seconds(5));
}

}  // namespace
}  // namespace vfiod::vmm
