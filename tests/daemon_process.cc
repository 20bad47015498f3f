#include "tests/daemon_process.h"

#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace vfiod::testing {
namespace {

bool CanConnect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  bool ok = ::connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof(address)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

std::string DaemonProcess::RunfilePath(const std::string& workspace_relative) {
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* workspace = getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return workspace_relative;
  return absl::StrCat(srcdir, "/", workspace != nullptr ? workspace : "vfiod", "/",
                      workspace_relative);
}

std::string DaemonProcess::BinaryPath() {
  const char* binary = getenv("VFIOD_BINARY");
  if (binary != nullptr && *binary != '\0') return binary;
  return RunfilePath("daemon/vfiod");
}

std::string DaemonProcess::DeviceName() {
  const char* device = getenv("VFIOD_DEVICE");
  if (device != nullptr && *device != '\0') return device;
  return "sim:edu";
}

absl::StatusOr<pid_t> SpawnProcess(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int error = posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ);
  if (error != 0) {
    return absl::InternalError(absl::StrCat("posix_spawn ", argv[0], ": ", strerror(error)));
  }
  return pid;
}

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::vector<std::string>& extra_args) {
  std::unique_ptr<DaemonProcess> daemon(new DaemonProcess());
  char dir_template[] = "/tmp/vfiodtXXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  daemon->dir_ = dir_template;
  daemon->socket_path_ = daemon->dir_ + "/d.sock";
  std::vector<std::string> argv = {BinaryPath(), "--device=" + DeviceName(),
                                   "--listen=" + daemon->socket_path_};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  absl::StatusOr<pid_t> pid = SpawnProcess(argv);
  if (!pid.ok()) return pid.status();
  daemon->pid_ = *pid;
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!CanConnect(daemon->socket_path_)) {
    if (!daemon->Running()) {
      return absl::InternalError(
          absl::StrCat("vfiod exited during start-up, status ", daemon->exit_status_));
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("vfiod did not start");
    absl::SleepFor(absl::Milliseconds(10));
  }
  return daemon;
}

bool DaemonProcess::Running() {
  if (exited_) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    exit_status_ = status;
    return false;
  }
  return true;
}

absl::StatusOr<int> DaemonProcess::Terminate(absl::Duration timeout) {
  if (Running()) {
    ::kill(pid_, SIGTERM);
    absl::Time deadline = absl::Now() + timeout;
    while (Running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
    if (Running()) {
      ::kill(pid_, SIGKILL);
      int status;
      ::waitpid(pid_, &status, 0);
      exited_ = true;
      exit_status_ = status;
      return absl::DeadlineExceededError("vfiod ignored SIGTERM and was killed");
    }
  }
  return exit_status_;
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) (void)Terminate();
  if (!dir_.empty()) {
    ::unlink(socket_path_.c_str());
    ::unlink((socket_path_ + ".fds").c_str());
    ::rmdir(dir_.c_str());
  }
}

}  // namespace vfiod::testing
