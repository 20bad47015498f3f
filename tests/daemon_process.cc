#include "tests/daemon_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/fd_channel_client.h"
#include "daemon/base/sanitizers.h"
#include "daemon/transport/unix_socket.h"
#include "gtest/gtest.h"

extern char** environ;

namespace vfiod::testing {
namespace {

// True once the daemon serves: its fd channel greets a new connection, which the transport's
// event thread starts doing only after the gRPC server has started. The socket alone accepts
// connections before that (it is bound before the jail forks the serving process). The probe
// is closed at once, unbound, and leaves no session: a gRPC probe stayed a session for as long
// as gRPC's client library kept its connection, which tests that count sessions saw.
bool Serves(const std::string& path) {
  absl::StatusOr<UniqueFd> socket = ConnectUnixSocket(path + ".fds", UnixSocketKind::kSeqPacket);
  if (!socket.ok()) return false;
  return client::FdChannelClient::Open(*std::move(socket), absl::Milliseconds(500)).ok();
}

// Why this host cannot give vfiod's jail its namespaces, or "" when it can: the namespaces the
// jail unshares, tried in that order in a forked child (a user namespace first, when not root,
// as the jail does).
std::string JailNamespacesMissing() {
  struct Step {
    int flag;
    const char* name;
  };
  static constexpr Step kSteps[] = {
      {CLONE_NEWUSER, "CLONE_NEWUSER"}, {CLONE_NEWPID, "CLONE_NEWPID"},
      {CLONE_NEWNS, "CLONE_NEWNS"},     {CLONE_NEWIPC, "CLONE_NEWIPC"},
      {CLONE_NEWUTS, "CLONE_NEWUTS"},   {CLONE_NEWNET, "CLONE_NEWNET"}};
  const bool root = ::geteuid() == 0;
  int report_pipe[2];
  if (::pipe2(report_pipe, O_CLOEXEC) != 0) return "";
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls: the test process may have threads.
    for (int step = 0; step < static_cast<int>(std::size(kSteps)); ++step) {
      if (kSteps[step].flag == CLONE_NEWUSER && root) continue;
      if (::unshare(kSteps[step].flag) != 0) {
        const int report[2] = {step, errno};
        (void)!::write(report_pipe[1], report, sizeof(report));
        ::_exit(1);
      }
    }
    ::_exit(0);
  }
  ::close(report_pipe[1]);
  int report[2];
  const ssize_t n = pid < 0 ? 0 : ::read(report_pipe[0], report, sizeof(report));
  ::close(report_pipe[0]);
  if (pid > 0) ::waitpid(pid, nullptr, 0);
  if (n != static_cast<ssize_t>(sizeof(report))) return "";
  std::string missing = absl::StrCat("unshare(", kSteps[report[0]].name, ") as uid ", ::geteuid(),
                                     ": ", std::strerror(report[1]));
  if (kSteps[report[0]].flag == CLONE_NEWUSER) {
    absl::StrAppend(&missing,
                    " (the jail needs root, or unprivileged user namespaces: see the sysctls "
                    "kernel.unprivileged_userns_clone and user.max_user_namespaces)");
  }
  return missing;
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

namespace {

// posix_spawn of argv[0], with the child's stderr on `stderr_fd` when not null.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const UniqueFd* stderr_fd) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stderr_fd != nullptr) posix_spawn_file_actions_adddup2(&actions, stderr_fd->get(), 2);
  pid_t pid;
  int error = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    return absl::InternalError(absl::StrCat("posix_spawn ", argv[0], ": ", strerror(error)));
  }
  return pid;
}

}  // namespace

absl::StatusOr<pid_t> SpawnProcess(const std::vector<std::string>& argv) {
  return Spawn(argv, nullptr);
}

std::vector<std::string> DaemonProcess::BaseArgs() {
  // A sanitizer runtime cannot live under the policy (see seccomp/README.md).
  if (kSanitizerBuild) return {"--seccomp=off"};
  return {};
}

std::string DaemonProcess::ExpectedSeccompMode() { return kSanitizerBuild ? "0" : "2"; }

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::vector<std::string>& extra_args) {
  return StartWithLog(extra_args, nullptr);
}

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::vector<std::string>& extra_args, const UniqueFd& log) {
  return StartWithLog(extra_args, &log);
}

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::StartWithLog(
    const std::vector<std::string>& extra_args, const UniqueFd* log) {
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
  absl::StatusOr<pid_t> pid = Spawn(argv, log);
  if (!pid.ok()) return pid.status();
  daemon->pid_ = *pid;
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!Serves(daemon->socket_path_)) {
    if (!daemon->Running()) {
      std::string message = absl::StrCat("vfiod exited during start-up, status ",
                                         daemon->exit_status_, " (its log names the step)");
      if (const std::string missing = JailNamespacesMissing(); !missing.empty()) {
        absl::StrAppend(&message, "; this host cannot give the jail its namespaces: ", missing);
      }
      return absl::InternalError(message);
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
  // The child is found by the parent pid in /proc/<pid>/stat, which every procfs shows
  // (/proc/<pid>/task/<tid>/children needs CONFIG_PROC_CHILDREN).
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot find vfiod's serving process: opendir(/proc): ", std::strerror(errno)));
  }
  pid_t child = 0;
  while (const dirent* entry = ::readdir(proc)) {
    pid_t pid;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
    std::string line;
    if (!std::getline(stat, line)) continue;  // gone meanwhile
    // "pid (comm) state ppid ...", where comm may hold spaces and parentheses.
    const size_t comm_end = line.rfind(')');
    if (comm_end == std::string::npos) continue;
    std::istringstream fields(line.substr(comm_end + 1));
    char state;
    pid_t ppid;
    if (fields >> state >> ppid && ppid == pid_) {
      child = pid;
      break;
    }
  }
  ::closedir(proc);
  return child > 0 ? child : pid_;
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
