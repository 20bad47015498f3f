#include "daemon/jail/jail.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cerrno>
#include <cstdio>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"
#include "daemon/jail/launcher_credentials.h"
#include "seccomp/fd_layout.h"

namespace vfiod::jail {
namespace {

using seccomp::kFixedFdLimit;

// A failed step: "jail: <step>: <strerror> (errno <n>)", the code following the errno.
absl::Status StepError(absl::string_view step, int error_number = errno) {
  return ErrnoError(error_number, absl::StrCat("jail: ", step));
}

// Closes [first, last] (inclusive), ignoring empty ranges.
void CloseRange(unsigned first, unsigned last) {
  if (first > last) return;
  if (::close_range(first, last, 0) != 0) {
    // Before Linux 5.9: one by one up to the fd limit.
    const long limit = ::sysconf(_SC_OPEN_MAX);
    for (unsigned fd = first; fd <= last && static_cast<long>(fd) < limit; ++fd) ::close(fd);
  }
}

struct SocketFile {
  std::string path;
  dev_t dev;
  ino_t ino;
};

void EmptyHandler(int) {}

// ---- the launcher (the parent, in every namespace of the host)

[[noreturn]] void ExitLike(int status) {
  if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
  const int sig = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
  // Die of the same signal, without a core file of our own.
  struct rlimit no_core = {0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  ::signal(sig, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
  ::kill(::getpid(), sig);
  ::_exit(128 + sig);
}

// The launcher's copy of the daemon's log on its way to stderr. The launcher never blocks in
// a write: it writes only when poll says stderr takes data, at most PIPE_BUF bytes at a time
// (a pipe that polls writable takes that much at once), so a VMM that does not drain the
// launcher's stderr delays neither signal forwarding nor the daemon (whose own log queue then
// drops lines and counts them; daemon/base/logging.h).
class LogRelay {
 public:
  bool has_room() const { return pending_.size() < kCapacity; }
  bool has_data() const { return !pending_.empty(); }

  // Reads what `fd` offers, up to the capacity; false at end of file or on error.
  bool Fill(int fd) {
    char buffer[16384];
    while (has_room()) {
      ssize_t n = ::read(fd, buffer, std::min(sizeof(buffer), kCapacity - pending_.size()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return true;
      if (n <= 0) return false;
      pending_.append(buffer, static_cast<size_t>(n));
    }
    return true;
  }

  // One write of what stderr said it takes; a stderr that is gone drops the log.
  void Flush() {
    const size_t chunk = std::min<size_t>(pending_.size(), PIPE_BUF);
    ssize_t n = ::write(STDERR_FILENO, pending_.data(), chunk);
    if (n > 0) {
      pending_.erase(0, static_cast<size_t>(n));
    } else if (n < 0 && errno != EINTR && errno != EAGAIN) {
      pending_.clear();
    }
  }

 private:
  static constexpr size_t kCapacity = 64 * 1024;
  std::string pending_;
};

// Closes every fd from 3 up, except `keep`.
void CloseAllExcept(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned next = 3;
  for (int fd : keep) {
    if (fd < static_cast<int>(next)) continue;
    CloseRange(next, static_cast<unsigned>(fd) - 1);
    next = static_cast<unsigned>(fd) + 1;
  }
  CloseRange(next, ~0U);
}

// `ready_write` stays open for the launcher's lifetime: the daemon sees it hang up when the
// launcher is gone. `channel`: the launcher's end of the credential channel.
[[noreturn]] void RunLauncher(pid_t child, UniqueFd log_read, UniqueFd ready_write,
                              UniqueFd channel, const std::vector<SocketFile>& files) {
  // The daemon's sockets and device fds belong to the daemon alone.
  CloseAllExcept({log_read.get(), ready_write.get(), channel.get()});
  ::fcntl(log_read.get(), F_SETFL, O_NONBLOCK);
  LogInfo("jail: launcher started", {{"daemon_pid", absl::StrCat(child)},
                                     {"launcher_pid", absl::StrCat(::getpid())}});

  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&signals, sig);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  const int signal_fd = ::signalfd(-1, &signals, SFD_CLOEXEC);
  if (signal_fd < 0) {
    LogError("jail: launcher: signalfd failed; killing the daemon",
             {{"errno", absl::StrCat(errno)}});
    ::kill(child, SIGKILL);
  }
  bool log_open = true;
  bool channel_open = true;
  LogRelay relay;
  std::optional<int> status;
  while (!status.has_value() || log_open || relay.has_data()) {
    struct pollfd waits[4] = {{signal_fd, POLLIN, 0},
                              {log_open && relay.has_room() ? log_read.get() : -1, POLLIN, 0},
                              {relay.has_data() ? STDERR_FILENO : -1, POLLOUT, 0},
                              {channel_open ? channel.get() : -1, POLLIN, 0}};
    if (status.has_value()) waits[0].fd = -1;
    int ready = ::poll(waits, 4, status.has_value() ? 1000 : -1);
    if (ready < 0 && errno != EINTR) break;
    if (waits[1].revents != 0) log_open = relay.Fill(log_read.get());
    if (waits[2].revents != 0) relay.Flush();
    // The daemon asks who is at the other end of a connection (launcher_credentials.h).
    if (waits[3].revents != 0) channel_open = AnswerCredentialQuery(channel);
    if (status.has_value() && ready == 0) break;  // daemon gone, stderr idle for a second
    if (waits[0].revents & POLLIN) {
      struct signalfd_siginfo info;
      if (::read(signal_fd, &info, sizeof(info)) != sizeof(info)) continue;
      if (info.ssi_signo == SIGCHLD) {
        int wstatus;
        if (::waitpid(child, &wstatus, WNOHANG) == child) status = wstatus;
      } else {
        ::kill(child, static_cast<int>(info.ssi_signo));
      }
    }
    if (signal_fd < 0 && !status.has_value()) {
      int wstatus;
      if (::waitpid(child, &wstatus, 0) == child) status = wstatus;
    }
  }
  if (!status.has_value()) {
    int wstatus;
    ::kill(child, SIGKILL);
    while (::waitpid(child, &wstatus, 0) < 0 && errno == EINTR) {
    }
    status = wstatus;
  }
  for (const SocketFile& file : files) {
    struct stat st;
    if (::lstat(file.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == file.dev &&
        st.st_ino == file.ino) {
      ::unlink(file.path.c_str());
    }
  }
  ExitLike(*status);
}

// ---- the namespace parent

// What the namespace parent tells the launcher: the daemon's pid, or the step that failed.
struct NamespaceReport {
  pid_t daemon_pid = 0;  // > 0 on success
  int error = 0;
  char step[96] = {};
};

// 0, or the errno of writing `text` to `path`.
int WriteProcFile(const char* path, absl::string_view text) {
  UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return errno != 0 ? errno : EIO;
  }
  return 0;
}

// In the namespace parent: a user namespace when not root (the uid and gid mapped to
// themselves), then a pid namespace for the children. Fills `report` on failure.
bool MakeNamespaces(bool root, NamespaceReport& report) {
  auto failed = [&report](const char* step, int error) {
    report.error = error != 0 ? error : EIO;
    std::snprintf(report.step, sizeof(report.step), "%s", step);
    return false;
  };
  if (!root) {
    const std::string uid_map = absl::StrCat(::geteuid(), " ", ::geteuid(), " 1");
    const std::string gid_map = absl::StrCat(::getegid(), " ", ::getegid(), " 1");
    if (::unshare(CLONE_NEWUSER) != 0) return failed("unshare(CLONE_NEWUSER)", errno);
    if (int error = WriteProcFile("/proc/self/setgroups", "deny"); error != 0) {
      return failed("write /proc/self/setgroups \"deny\"", error);
    }
    if (int error = WriteProcFile("/proc/self/uid_map", uid_map); error != 0) {
      return failed("write /proc/self/uid_map", error);
    }
    if (int error = WriteProcFile("/proc/self/gid_map", gid_map); error != 0) {
      return failed("write /proc/self/gid_map", error);
    }
  }
  if (::unshare(CLONE_NEWPID) != 0) return failed("unshare(CLONE_NEWPID)", errno);
  return true;
}

// Forks the daemon into new namespaces while the calling process (the launcher) stays in the
// host's: the user namespace must exist before the pid namespace (without root), and unshare
// moves its caller into a new user namespace, so a short-lived namespace parent makes both and
// forks the daemon, then exits; the launcher, a child subreaper, inherits the daemon and reaps
// the namespace parent before this returns. Returns the daemon's pid in the launcher and 0 in
// the daemon (pid 1 of the new pid namespace).
absl::StatusOr<pid_t> ForkIntoPidNamespace(bool root) {
  int report_pipe[2];
  if (::pipe2(report_pipe, O_CLOEXEC) != 0) return StepError("pipe2(namespace report)");
  UniqueFd report_read(report_pipe[0]), report_write(report_pipe[1]);
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) return StepError("PR_SET_CHILD_SUBREAPER");
  const pid_t parent = ::fork();
  if (parent < 0) return StepError("fork(namespace parent)");
  if (parent == 0) {
    report_read.Reset();
    NamespaceReport report;
    if (MakeNamespaces(root, report)) {
      const pid_t daemon = ::fork();
      if (daemon == 0) return 0;  // the daemon; report_write closes on return
      if (daemon > 0) {
        report.daemon_pid = daemon;
      } else {
        report.error = errno;
        std::snprintf(report.step, sizeof(report.step), "fork(daemon)");
      }
    }
    const bool sent = ::write(report_write.get(), &report, sizeof(report)) == sizeof(report);
    ::_exit(sent && report.daemon_pid > 0 ? 0 : 1);
  }
  report_write.Reset();
  NamespaceReport report;
  ssize_t n;
  do {
    n = ::read(report_read.get(), &report, sizeof(report));
  } while (n < 0 && errno == EINTR);
  int status = 0;
  while (::waitpid(parent, &status, 0) < 0 && errno == EINTR) {
  }
  if (n == static_cast<ssize_t>(sizeof(report)) && report.daemon_pid > 0) return report.daemon_pid;
  ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
  if (n != static_cast<ssize_t>(sizeof(report))) {
    return absl::InternalError(absl::StrCat(
        "jail: the namespace parent exited without a report (wait status ", status, ")"));
  }
  report.step[sizeof(report.step) - 1] = '\0';
  return StepError(report.step, report.error);
}

// ---- the jailed child

absl::Status SetLimit(int resource, const char* name, rlim_t value, bool clamp) {
  struct rlimit wanted = {value, value};
  if (::setrlimit(resource, &wanted) == 0) return absl::OkStatus();
  const int error = errno;
  struct rlimit current;
  if (clamp && error == EPERM && ::getrlimit(resource, &current) == 0 &&
      value > current.rlim_max) {
    struct rlimit clamped = {current.rlim_max, current.rlim_max};
    if (::setrlimit(resource, &clamped) == 0) {
      LogWarning("jail: rlimit clamped to the hard limit (raising it needs CAP_SYS_RESOURCE)",
                 {{"limit", name},
                  {"wanted", absl::StrCat(value)},
                  {"set", absl::StrCat(current.rlim_max)}});
      return absl::OkStatus();
    }
  }
  return StepError(absl::StrCat("setrlimit(", name, ", ", value, ")"), error);
}

absl::Status SetLimits(const JailOptions& options) {
  VFIOD_RETURN_IF_ERROR(SetLimit(RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK", options.memlock_bytes, true));
  VFIOD_RETURN_IF_ERROR(SetLimit(RLIMIT_NOFILE, "RLIMIT_NOFILE", options.max_open_files, true));
  VFIOD_RETURN_IF_ERROR(SetLimit(RLIMIT_CORE, "RLIMIT_CORE", 0, false));
  // No file grows; a write to a regular file fails with EFBIG rather than killing by SIGXFSZ.
  ::signal(SIGXFSZ, SIG_IGN);
  return SetLimit(RLIMIT_FSIZE, "RLIMIT_FSIZE", 0, false);
}

// A directory to mount the new root on (any will do: the mount is private to the namespace).
const char* MountPoint() {
  for (const char* dir : {"/tmp", "/mnt", "/proc", "/dev"}) {
    struct stat st;
    if (::stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return dir;
  }
  return nullptr;
}

absl::Status EmptyRoot() {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return StepError("mount(\"/\", MS_REC | MS_PRIVATE)");
  }
  const char* dir = MountPoint();
  if (dir == nullptr) return absl::FailedPreconditionError("jail: no directory to mount on");
  if (::mount("vfiod-root", dir, "tmpfs", MS_RDONLY | MS_NODEV | MS_NOSUID | MS_NOEXEC,
              "size=4k,nr_inodes=2,mode=0555") != 0) {
    return StepError(absl::StrCat("mount(tmpfs, ", dir, ", read-only)"));
  }
  int old_root = ::open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (old_root < 0) return StepError("open(\"/\")");
  UniqueFd old_root_fd(old_root);
  if (::chdir(dir) != 0) return StepError(absl::StrCat("chdir(", dir, ")"));
  if (::syscall(SYS_pivot_root, ".", ".") == 0) {
    // The old root is now stacked on the new one: detach it.
    if (::fchdir(old_root_fd.get()) != 0) return StepError("fchdir(old root)");
    if (::umount2(".", MNT_DETACH) != 0) return StepError("umount2(old root, MNT_DETACH)");
  } else if (errno == EINVAL) {
    // The root is the initramfs (rootfs), which cannot be pivoted away from: move the new root
    // over it and chroot (the rootfs stays underneath, unreachable without CAP_SYS_CHROOT).
    if (::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0) return StepError("mount(MS_MOVE)");
    if (::chroot(".") != 0) return StepError("chroot(\".\")");
  } else {
    return StepError("pivot_root(\".\", \".\")");
  }
  old_root_fd.Reset();
  if (::chdir("/") != 0) return StepError("chdir(\"/\")");
  return absl::OkStatus();
}

absl::Status DropPrivileges(const JailOptions& options) {
  // Locked secure bits: uid 0 grants nothing, uid changes keep nothing, no ambient raise.
  const unsigned long bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                             SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                             SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  if (::prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) != 0) return StepError("PR_SET_SECUREBITS");
  for (int cap = 0;; ++cap) {
    int present = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (present < 0 && errno == EINVAL) break;  // beyond the last capability
    if (present < 0) return StepError(absl::StrCat("PR_CAPBSET_READ ", cap));
    if (present == 1 && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      return StepError(absl::StrCat("PR_CAPBSET_DROP ", cap));
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return StepError("PR_CAP_AMBIENT_CLEAR_ALL");
  }
  if (options.uid.has_value() || options.gid.has_value()) {
    if (::setgroups(0, nullptr) != 0) {
      // EPERM as root: a user namespace whose /proc/self/setgroups is "deny" (a sandbox such
      // as Bazel's), where no uid or gid switch can be made safely.
      return StepError(errno == EPERM ? "setgroups(0) (denied in this user namespace?)"
                                      : "setgroups(0)");
    }
  }
  if (options.gid.has_value() &&
      ::setresgid(*options.gid, *options.gid, *options.gid) != 0) {
    return StepError(absl::StrCat("setresgid(", *options.gid, ")"));
  }
  if (options.uid.has_value() &&
      ::setresuid(*options.uid, *options.uid, *options.uid) != 0) {
    return StepError(absl::StrCat("setresuid(", *options.uid, ")"));
  }
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capset, &header, data) != 0) return StepError("capset(none)");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> ThreadCount() {
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return StepError("opendir(/proc/self/task)");
  int threads = 0;
  while (struct dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++threads;
  }
  ::closedir(dir);
  return threads;
}

absl::Status PinFds(const std::vector<KeptFd>& kept) {
  std::set<int> numbers;
  for (const KeptFd& k : kept) {
    if (k.fd == nullptr || !k.fd->valid()) {
      return absl::InvalidArgumentError(absl::StrCat("jail: pin fds: ", k.what, " is not open"));
    }
    // Below kLauncherChannelFd: Enter() puts the credential channel there.
    if (k.number <= STDERR_FILENO || k.number >= seccomp::kLauncherChannelFd ||
        !numbers.insert(k.number).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("jail: pin fds: bad or repeated number ", k.number, " for ", k.what));
    }
  }
  // Above the fixed range first, so that no kept fd sits on another's number...
  for (const KeptFd& k : kept) {
    int high = ::fcntl(k.fd->get(), F_DUPFD_CLOEXEC, static_cast<long>(kFixedFdLimit));
    if (high < 0) return StepError(absl::StrCat("pin fds: fcntl(F_DUPFD_CLOEXEC, ", k.what, ")"));
    k.fd->Reset(high);
  }
  // ...then onto the numbers.
  for (const KeptFd& k : kept) {
    if (::dup3(k.fd->get(), k.number, O_CLOEXEC) < 0) {
      return StepError(absl::StrCat("pin fds: dup3(", k.what, ", ", k.number, ")"));
    }
    k.fd->Reset(k.number);
  }
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) return StepError("pin fds: open(/dev/null)");
  for (int fd : {seccomp::kStdinFd, seccomp::kStdoutFd}) {
    if (null != fd && ::dup2(null, fd) < 0) return StepError("pin fds: dup2(/dev/null)");
  }
  if (::fcntl(seccomp::kLogFd, F_GETFD) < 0 && ::dup2(null, seccomp::kLogFd) < 0) {
    return StepError("pin fds: dup2(/dev/null, 2)");
  }
  // The policy never lets the serving daemon close 0..kFirstOtherKeptFd-1, and trusts those
  // numbers: the VFIO numbers a backend does not use (a simulated device) hold /dev/null, so no
  // later fd (connection, eventfd, received fd) lands on them either.
  for (int fd = seccomp::kLogFd + 1; fd < seccomp::kFirstOtherKeptFd; ++fd) {
    if (numbers.count(fd) == 0 && null != fd && ::dup2(null, fd) < 0) {
      return StepError(absl::StrCat("pin fds: dup2(/dev/null, ", fd, ")"));
    }
  }
  for (int fd = seccomp::kFirstOtherKeptFd; fd < kFixedFdLimit; ++fd) {
    if (numbers.count(fd) == 0) ::close(fd);  // `null` itself, if it landed here
  }
  CloseRange(kFixedFdLimit, ~0U);
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> Enter(const JailOptions& options) {
  // 1. Single-threaded.
  VFIOD_ASSIGN_OR_RETURN(int threads, ThreadCount());
  if (threads != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "jail: the process has ", threads, " threads; the jail must come before any thread"));
  }
  if (options.max_open_files <= static_cast<uint64_t>(kFixedFdLimit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("jail: RLIMIT_NOFILE ", options.max_open_files, " is too small"));
  }
  const bool root = ::geteuid() == 0;
  if (!root && (options.uid.has_value() || options.gid.has_value())) {
    return absl::InvalidArgumentError("jail: --uid and --gid need the daemon to start as root");
  }
  std::vector<SocketFile> files;
  for (const std::string& path : options.socket_files) {
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      files.push_back({path, st.st_dev, st.st_ino});
    }
  }

  // 2. The pipes and the credential channel, made before the forks; then the namespace parent
  // and the daemon.
  int log_pipe[2];
  if (::pipe2(log_pipe, O_CLOEXEC) != 0) return StepError("pipe2(log)");
  UniqueFd log_read(log_pipe[0]), log_write(log_pipe[1]);
  int ready_pipe[2];
  if (::pipe2(ready_pipe, O_CLOEXEC) != 0) return StepError("pipe2(launcher ready)");
  UniqueFd ready_read(ready_pipe[0]), ready_write(ready_pipe[1]);
  int channel_pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel_pair) != 0) {
    return StepError("socketpair(credential channel)");
  }
  UniqueFd launcher_channel(channel_pair[0]), daemon_channel(channel_pair[1]);
  sigset_t chld, old_mask;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, &old_mask);  // no SIGCHLD lost before the launcher waits
  absl::StatusOr<pid_t> forked = ForkIntoPidNamespace(root);
  if (!forked.ok()) {
    ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    return forked.status();
  }
  const pid_t child = *forked;
  if (child > 0) {
    // The launcher: the daemon is its child now.
    if (::write(ready_write.get(), "r", 1) != 1) {
      const int error = errno;
      ::kill(child, SIGKILL);
      return StepError("write(launcher ready)", error);
    }
    log_write.Reset();
    ready_read.Reset();
    daemon_channel.Reset();
    RunLauncher(child, std::move(log_read), std::move(ready_write), std::move(launcher_channel),
                files);
  }
  ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  log_read.Reset();
  ready_write.Reset();
  launcher_channel.Reset();
  if (::dup2(log_write.get(), seccomp::kLogFd) < 0) return StepError("dup2(log pipe, 2)");
  log_write.Reset();
  // pid 1 is sent only the signals it handles: handle them (they stay blocked; the daemon's
  // signalfd reads them).
  struct sigaction action = {};
  action.sa_handler = EmptyHandler;
  sigemptyset(&action.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    if (::sigaction(sig, &action, nullptr) != 0) return StepError("sigaction");
  }

  // 3. Resource limits, while still privileged.
  VFIOD_RETURN_IF_ERROR(SetLimits(options));
  // 4. The other namespaces.
  if (::unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET) != 0) {
    return StepError("unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET)");
  }
  static constexpr char kHostname[] = "vfiod";
  if (::sethostname(kHostname, sizeof(kHostname) - 1) != 0) return StepError("sethostname");
  // 5. The empty root.
  VFIOD_RETURN_IF_ERROR(EmptyRoot());
  // 6. Privileges.
  VFIOD_RETURN_IF_ERROR(DropPrivileges(options));
  // 7. no_new_privs, and the launcher's death kills the daemon: the parent-death signal is
  // armed after the credential changes (which clear it), and once the launcher has said the
  // daemon is its child (so the signal is tied to the launcher, not to the namespace parent);
  // the pipe then tells whether the launcher died before it was armed.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return StepError("PR_SET_NO_NEW_PRIVS");
  char ready;
  ssize_t n;
  do {
    n = ::read(ready_read.get(), &ready, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) ::_exit(1);  // the launcher is gone: nobody would forward signals or relay logs
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return StepError("PR_SET_PDEATHSIG");
  struct pollfd alive = {ready_read.get(), POLLIN, 0};
  if (::poll(&alive, 1, 0) != 0) ::_exit(1);
  ready_read.Reset();
  // The credential channel at its fixed number (every kept fd is below it).
  if (daemon_channel.get() != seccomp::kLauncherChannelFd) {
    if (::dup3(daemon_channel.get(), seccomp::kLauncherChannelFd, O_CLOEXEC) < 0) {
      return StepError("dup3(credential channel)");
    }
    daemon_channel.Reset(seccomp::kLauncherChannelFd);
  }
  return daemon_channel;
}

}  // namespace vfiod::jail
