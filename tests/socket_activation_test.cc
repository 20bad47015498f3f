// vfiod started the way a service manager starts it (tools/systemd/vfiod@.socket): its listening
// sockets passed at fd 3 on with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES, readiness sent to
// NOTIFY_SOCKET once it serves. Jailed and filtered, as by default.
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/vfio_client.h"
#include "daemon/version.h"
#include "gtest/gtest.h"
#include "tests/daemon_process.h"
#include "tests/vfio_user/vfio_user_client.h"

namespace vfiod::testing {
namespace {

int Bound(const std::string& path, int type, bool listen) {
  int fd = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ::unlink(path.c_str());
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      (listen && ::listen(fd, 16) != 0)) {
    ADD_FAILURE() << "socket " << path << ": " << std::strerror(errno);
  }
  return fd;
}

class SocketActivationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/vfiodsaXXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr) << std::strerror(errno);
    dir_ = dir;
    grpc_path_ = dir_ + "/g.sock";
    vfio_user_path_ = dir_ + "/v.sock";
    notify_ = Bound(dir_ + "/notify", SOCK_DGRAM, false);
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(notify_);
    std::system(absl::StrCat("rm -rf ", dir_).c_str());
  }

  // Starts vfiod with `listeners` passed as the service manager passes them.
  void Start(const std::vector<int>& listeners, const std::string& names) {
    std::vector<std::string> args = {DaemonProcess::BinaryPath(),
                                     "--device=" + DaemonProcess::DeviceName()};
    for (const std::string& arg : DaemonProcess::BaseArgs()) args.push_back(arg);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const std::string notify_env = "NOTIFY_SOCKET=" + dir_ + "/notify";
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      // Above the target numbers first, then onto 3, 4, 5... (no CLOEXEC on the targets).
      std::vector<int> high;
      for (int fd : listeners) high.push_back(::fcntl(fd, F_DUPFD, 100));
      for (size_t i = 0; i < high.size(); ++i) ::dup2(high[i], 3 + static_cast<int>(i));
      char pid_env[64], count_env[64];
      std::snprintf(pid_env, sizeof(pid_env), "LISTEN_PID=%d", ::getpid());
      std::snprintf(count_env, sizeof(count_env), "LISTEN_FDS=%zu", listeners.size());
      std::string names_env = "LISTEN_FDNAMES=" + names;
      ::putenv(pid_env);
      ::putenv(count_env);
      ::putenv(names_env.data());
      ::putenv(const_cast<char*>(notify_env.c_str()));
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }

  // The next notification, or "" within `wait`.
  std::string Notification(absl::Duration wait = absl::Seconds(20)) {
    struct timeval tv = {static_cast<time_t>(absl::ToInt64Seconds(wait)), 0};
    ::setsockopt(notify_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buffer[512];
    ssize_t n = ::recv(notify_, buffer, sizeof(buffer), 0);
    return n > 0 ? std::string(buffer, n) : "";
  }

  std::string dir_, grpc_path_, vfio_user_path_;
  int notify_ = -1;
  pid_t pid_ = -1;
};

TEST_F(SocketActivationTest, ServesTheSocketsItIsGivenAndSaysWhenItIsReady) {
  const int grpc = Bound(grpc_path_, SOCK_STREAM, true);
  const int channel = Bound(grpc_path_ + ".fds", SOCK_SEQPACKET, true);
  const int vfio_user = Bound(vfio_user_path_, SOCK_STREAM, true);
  Start({grpc, channel, vfio_user}, "grpc:fds:vfio-user");
  const std::string ready = Notification();
  EXPECT_NE(ready.find("READY=1"), std::string::npos) << "no readiness: \"" << ready << "\"";

  absl::StatusOr<std::unique_ptr<VfioClient>> client = VfioClient::Connect(grpc_path_);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<v1::DeviceInfo> info = (*client)->GetDeviceInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->daemon_version(), kVfiodVersion);
  const int eventfd = ::eventfd(0, EFD_CLOEXEC);
  absl::StatusOr<std::vector<std::string>> tokens = (*client)->SendFds({eventfd});
  ::close(eventfd);
  ASSERT_TRUE(tokens.ok()) << "the activated fd-channel socket: " << tokens.status();
  absl::StatusOr<VfioUserClient> vfu = VfioUserClient::Connect(vfio_user_path_);
  ASSERT_TRUE(vfu.ok()) << vfu.status();
  absl::StatusOr<VfioUserClient::Reply> version = vfu->Version();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(ErrorOf(*version), 0u);

  // SIGHUP changes nothing; SIGTERM stops it, and the socket files stay the manager's.
  ASSERT_EQ(::kill(pid_, SIGHUP), 0);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_TRUE((*client)->GetDeviceInfo().ok()) << "SIGHUP stopped the daemon";
  ASSERT_EQ(::kill(pid_, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid_, &status, 0), pid_);
  pid_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_EQ(::access(grpc_path_.c_str(), F_OK), 0) << "vfiod removed the manager's socket file";
  for (int fd : {grpc, channel, vfio_user}) ::close(fd);
}

TEST_F(SocketActivationTest, MisnamedOrWrongKindSocketsAreRefusedAtStart) {
  const struct {
    const char* what;
    int type;
    bool listen;
    const char* names;
  } cases[] = {
      {"unknown name", SOCK_STREAM, true, "grpcx"},
      {"seqpacket named grpc", SOCK_SEQPACKET, true, "grpc"},
      {"not listening", SOCK_STREAM, false, "grpc"},
  };
  for (const auto& c : cases) {
    const int fd = Bound(grpc_path_, c.type, c.listen);
    Start({fd}, c.names);
    int status = 0;
    ASSERT_EQ(::waitpid(pid_, &status, 0), pid_) << c.what;
    pid_ = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << c.what << ": status " << status;
    ::close(fd);
  }
}

}  // namespace
}  // namespace vfiod::testing
