#include "tests/daemon_process.h"

#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon/base/sanitizers.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

extern char** environ;

namespace vfiod::testing {
namespace {

// True once the daemon answers a grpc.health.v1 Check: the socket alone accepts connections
// before the daemon serves (it is bound before the jail forks the serving process).
bool Serves(const std::string& path) {
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel("unix:" + path, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  grpc::Slice empty_request("");  // an empty HealthCheckRequest: the server's overall health
  grpc::ByteBuffer request(&empty_request, 1);
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status result) {
                   std::lock_guard<std::mutex> lock(mu);
                   status = result;
                   done = true;
                   done_cv.notify_one();
                 });
  std::unique_lock<std::mutex> lock(mu);
  done_cv.wait(lock, [&] { return done; });
  return status.ok();
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

std::vector<std::string> DaemonProcess::BaseArgs() {
  // A sanitizer runtime cannot live under the policy (see seccomp/README.md).
  if (kSanitizerBuild) return {"--seccomp=off"};
  return {};
}

std::string DaemonProcess::ExpectedSeccompMode() { return kSanitizerBuild ? "0" : "2"; }

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::vector<std::string>& extra_args) {
  std::unique_ptr<DaemonProcess> daemon(new DaemonProcess());
  char dir_template[] = "/tmp/vfiodtXXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  daemon->dir_ = dir_template;
  daemon->socket_path_ = daemon->dir_ + "/d.sock";
  daemon->vfio_user_path_ = daemon->dir_ + "/v.sock";
  std::vector<std::string> argv = {BinaryPath(), "--device=" + DeviceName(),
                                   "--listen=" + daemon->socket_path_,
                                   "--vfio-user=" + daemon->vfio_user_path_};
  // The jail and the enforcing seccomp policy are the default and stay on.
  const std::vector<std::string> base = BaseArgs();
  argv.insert(argv.end(), base.begin(), base.end());
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  absl::StatusOr<pid_t> pid = SpawnProcess(argv);
  if (!pid.ok()) return pid.status();
  daemon->pid_ = *pid;
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!Serves(daemon->socket_path_)) {
    if (!daemon->Running()) {
      return absl::InternalError(
          absl::StrCat("vfiod exited during start-up, status ", daemon->exit_status_));
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("vfiod did not start");
    absl::SleepFor(absl::Milliseconds(10));
  }
  return daemon;
}

void DaemonProcess::Exited(int status) {
  exited_ = true;
  exit_status_ = status;
  // The launcher dies of the daemon's fatal signal: SIGSYS is the seccomp policy killing it.
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) {
    ADD_FAILURE() << "vfiod (launcher pid " << pid_
                  << ") was KILLED BY SIGSYS: a system call outside the seccomp policy "
                     "(seccomp/policy.cc); dmesg shows it as an audit type=1326 line";
  }
}

bool DaemonProcess::Running() {
  if (exited_) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    Exited(status);
    return false;
  }
  return true;
}

absl::StatusOr<pid_t> DaemonProcess::ServingPid() const {
  // With the jail the serving daemon is the launcher's only child; without it, the launcher.
  std::ifstream children(absl::StrCat("/proc/", pid_, "/task/", pid_, "/children"));
  pid_t child = 0;
  if (children >> child && child > 0) return child;
  return pid_;
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
      Exited(status);
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
    ::unlink(vfio_user_path_.c_str());
    ::rmdir(dir_.c_str());
  }
}

}  // namespace vfiod::testing
