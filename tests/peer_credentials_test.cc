// Peers are checked and logged with their real credentials, under the jail, with real uids.
// The test runs as root and acts as three other uids: vfiod runs as uid A, without root, so the
// jail serves from a user namespace that maps only A (where B and C would read as the overflow
// uid) and a pid namespace (where every peer's pid would read as 0). With --allow-uid=B:
//  - a client running as B is admitted (the fd channel greets it), and the daemon's log names
//    it with B's uid and its real pid; as B, vfioctl may claim ownership (--owner-uid defaults
//    to the --allow-uid set);
//  - a client running as C is refused before anything is sent to it, and logged with C's uid
//    and real pid;
//  - vfiod started as A with --allow-uid or --owner-uid set to the overflow uid is refused at
//    start-up.
// What the host lacks (root, the uids mapped, unprivileged user namespaces, a socket directory
// the other uids can reach) is probed and reported (tests/host_report.h).
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/transport/peer_credential_source.h"
#include "gtest/gtest.h"
#include "tests/daemon_process.h"
#include "tests/host_report.h"

namespace vfiod {
namespace {

constexpr uid_t kDaemonUid = 43210;   // A: runs vfiod, without root
constexpr uid_t kAllowedUid = 43211;  // B: --allow-uid
constexpr uid_t kOtherUid = 43212;    // C: not allowed

// In a forked child of a possibly threaded process: async-signal-safe calls only.
bool BecomeUid(uid_t uid) {
  return ::setgroups(0, nullptr) == 0 && ::setresgid(uid, uid, uid) == 0 &&
         ::setresuid(uid, uid, uid) == 0;
}

// Runs `probe` in a child as `uid`; its exit status (0: fine, else an errno, 255: no switch).
int ProbeAs(uid_t uid, int (*probe)(const char*), const char* arg) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!BecomeUid(uid)) ::_exit(255);
    ::_exit(probe(arg));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 254;
}

int ProbeUserNamespace(const char*) { return ::unshare(CLONE_NEWUSER) == 0 ? 0 : errno; }
int ProbeReach(const char* dir) { return ::access(dir, X_OK) == 0 ? 0 : errno; }

// Why this host cannot run the test, or "".
std::string MissingFromHost(const std::string& dir) {
  if (::getuid() != 0) return absl::StrCat("the test runs as uid ", ::getuid(), ", not root");
  for (uid_t uid : {kDaemonUid, kAllowedUid, kOtherUid}) {
    for (const char* map : {"/proc/self/uid_map", "/proc/self/gid_map"}) {
      if (!testing::IdMapped(map, uid)) return absl::StrCat(uid, " is not mapped in ", map);
    }
  }
  int error = ProbeAs(kDaemonUid, ProbeUserNamespace, nullptr);
  if (error == 255) return absl::StrCat("a child cannot switch to uid ", kDaemonUid);
  if (error != 0) {
    return absl::StrCat("unshare(CLONE_NEWUSER) as uid ", kDaemonUid, ": ", std::strerror(error),
                        " (unprivileged user namespaces are off: see the sysctls "
                        "kernel.unprivileged_userns_clone and user.max_user_namespaces)");
  }
  for (uid_t uid : {kAllowedUid, kOtherUid}) {
    error = ProbeAs(uid, ProbeReach, dir.c_str());
    if (error != 0) {
      return absl::StrCat("uid ", uid, " cannot reach ", dir, ": ", std::strerror(error));
    }
  }
  return "";
}

// A directory under /tmp that uid A owns and everyone may traverse, holding copies of the
// binaries (the runfiles may sit under a private home); removed with what it holds.
class SharedDir {
 public:
  SharedDir() {
    char pattern[] = "/tmp/vfiod-creds-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) return;
    path_ = pattern;
    ::chmod(path_.c_str(), 0755);
    ::chown(path_.c_str(), kDaemonUid, kDaemonUid);
  }
  ~SharedDir() {
    for (const std::string& file : files_) ::unlink(file.c_str());
    for (const char* name : {"/s", "/s.fds"}) ::unlink((path_ + name).c_str());
    if (!path_.empty()) ::rmdir(path_.c_str());
  }
  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string socket() const { return path_ + "/s"; }

  // A world-executable copy of `from`, named `name`.
  std::string Copy(const std::string& from, const std::string& name) {
    const std::string to = absl::StrCat(path_, "/", name);
    {
      std::ifstream in(from, std::ios::binary);
      std::ofstream out(to, std::ios::binary);
      out << in.rdbuf();
    }
    ::chmod(to.c_str(), 0755);
    files_.push_back(to);
    return to;
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

// vfiod started as uid A, with its stderr (the launcher's relay of the daemon's log) read here.
class DaemonAsUid {
 public:
  DaemonAsUid(const std::string& binary, const std::string& socket,
              const std::vector<std::string>& extra_args) {
    std::vector<std::string> args = {binary, "--device=sim:edu", "--listen=" + socket,
                                     "--socket-mode=0666"};
    for (const std::string& arg : testing::DaemonProcess::BaseArgs()) args.push_back(arg);
    for (const std::string& arg : extra_args) args.push_back(arg);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    int err_pipe[2];
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(err_pipe[1], STDERR_FILENO);
      if (!BecomeUid(kDaemonUid)) ::_exit(120);
      ::execv(argv[0], argv.data());
      ::_exit(121);
    }
    ::close(err_pipe[1]);
    err_ = err_pipe[0];
    ::fcntl(err_, F_SETFL, O_NONBLOCK);
  }
  ~DaemonAsUid() {
    if (!exited_) Stop();
    if (err_ >= 0) ::close(err_);
  }

  // Waits until the log says `text` (true), the daemon exits, or `timeout` passes.
  bool WaitForLog(absl::string_view text, absl::Duration timeout = absl::Seconds(20)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!absl::StrContains(log_, text)) {
      if (exited_ || absl::Now() > deadline) return false;
      struct pollfd wait = {err_, POLLIN, 0};
      ::poll(&wait, 1, 50);
      if (!Drain()) Reap();
    }
    return true;
  }
  // SIGTERM, then the rest of the log and the exit status.
  int Stop() {
    if (!exited_) ::kill(pid_, SIGTERM);
    return Wait();
  }
  // Waits for the exit, draining the log; after 20 s the daemon is killed (a failure).
  int Wait() {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (Drain() && absl::Now() < deadline) {
      struct pollfd wait = {err_, POLLIN, 0};
      ::poll(&wait, 1, 100);
    }
    while (!exited_ && absl::Now() < deadline) {
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
      } else {
        absl::SleepFor(absl::Milliseconds(10));
      }
    }
    if (!exited_) {
      ADD_FAILURE() << "vfiod as uid " << kDaemonUid << " did not exit; killed";
      ::kill(pid_, SIGKILL);
    }
    Reap();
    return status_;
  }
  bool exited() const { return exited_; }
  const std::string& log() const { return log_; }

 private:
  // Reads what the pipe holds; false at end of file.
  bool Drain() {
    char buffer[4096];
    while (true) {
      const ssize_t n = ::read(err_, buffer, sizeof(buffer));
      if (n > 0) {
        log_.append(buffer, static_cast<size_t>(n));
        continue;
      }
      return n < 0 && (errno == EAGAIN || errno == EINTR);
    }
  }
  void Reap() {
    if (exited_ || pid_ <= 0) return;
    if (::waitpid(pid_, &status_, 0) == pid_) exited_ = true;
  }

  pid_t pid_ = -1;
  int err_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string log_;
};

// A client as `uid` that connects to the fd channel socket `path` and waits up to 5 s for the
// daemon's hello. Its pid and how it ended: 0 greeted, 1 closed without a hello, 2 no answer,
// 3 could not connect, 4 could not switch uid.
struct ClientRun {
  pid_t pid = -1;
  int outcome = -1;
};
ClientRun ConnectFdChannelAs(uid_t uid, const std::string& path) {
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ClientRun run;
  run.pid = ::fork();
  if (run.pid == 0) {
    if (!BecomeUid(uid)) ::_exit(4);
    const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      ::_exit(3);
    }
    struct pollfd wait = {fd, POLLIN, 0};
    if (::poll(&wait, 1, 5000) != 1) ::_exit(2);
    char hello[64];
    ::_exit(::recv(fd, hello, sizeof(hello), 0) > 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(run.pid, &status, 0);
  run.outcome = WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
  return run;
}

// Runs `args` as `uid`; the exit status.
int RunAs(uid_t uid, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!BecomeUid(uid)) ::_exit(120);
    ::execv(argv[0], argv.data());
    ::_exit(121);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// The log line (logfmt) whose message is `msg` and that names `uid` and `pid` (any pid when
// `pid` is 0), or "".
std::string LogLine(const std::string& log, absl::string_view msg, uid_t uid, pid_t pid) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, msg) && absl::StrContains(line, absl::StrCat(" uid=", uid)) &&
        (pid == 0 || absl::StrContains(line, absl::StrCat(" pid=", pid, " ")) ||
         absl::EndsWith(line, absl::StrCat(" pid=", pid)))) {
      return std::string(line);
    }
  }
  return "";
}

TEST(PeerCredentialsTest, NonRootJailedDaemonSeesRealUidsAndPids) {
  SharedDir dir;
  ASSERT_TRUE(dir.ok()) << "mkdtemp under /tmp: " << std::strerror(errno);
  if (const std::string missing = MissingFromHost(dir.path()); !missing.empty()) {
    testing::ReportNotApplicable("peers of a non-root jailed vfiod named by real uid and pid",
                                 missing);
    return;
  }
  const std::string vfiod = dir.Copy(testing::DaemonProcess::BinaryPath(), "vfiod");
  const std::string vfioctl =
      dir.Copy(testing::DaemonProcess::RunfilePath("client/vfioctl"), "vfioctl");
  DaemonAsUid daemon(vfiod, dir.socket(), {absl::StrCat("--allow-uid=", kAllowedUid)});
  ASSERT_TRUE(daemon.WaitForLog("msg=serving")) << daemon.log();

  const ClientRun allowed = ConnectFdChannelAs(kAllowedUid, dir.socket() + ".fds");
  EXPECT_EQ(allowed.outcome, 0) << "uid " << kAllowedUid << " was not greeted";
  const ClientRun other = ConnectFdChannelAs(kOtherUid, dir.socket() + ".fds");
  EXPECT_EQ(other.outcome, 1) << "uid " << kOtherUid << " was not refused";
  // The owner check sees the real uid too.
  const int claim = RunAs(kAllowedUid, {vfioctl, "--socket", dir.socket(), "claim"});
  EXPECT_TRUE(WIFEXITED(claim) && WEXITSTATUS(claim) == 0) << "vfioctl claim: status " << claim;
  const int refused = RunAs(kOtherUid, {vfioctl, "--socket", dir.socket(), "claim"});
  EXPECT_TRUE(WIFEXITED(refused) && WEXITSTATUS(refused) == 1) << "status " << refused;

  const int status = daemon.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << daemon.log();
  EXPECT_NE(LogLine(daemon.log(), "msg=\"fd channel opened\"", kAllowedUid, allowed.pid), "")
      << daemon.log();
  EXPECT_NE(
      LogLine(daemon.log(), "msg=\"connection refused: uid not allowed\"", kOtherUid, other.pid),
      "")
      << daemon.log();
  EXPECT_NE(LogLine(daemon.log(), "msg=\"owner attached\"", kAllowedUid, 0).size(), 0u)
      << daemon.log();
}

TEST(PeerCredentialsTest, OverflowUidIsRefusedAtStartUp) {
  SharedDir dir;
  ASSERT_TRUE(dir.ok()) << "mkdtemp under /tmp: " << std::strerror(errno);
  if (const std::string missing = MissingFromHost(dir.path()); !missing.empty()) {
    testing::ReportNotApplicable("vfiod as a non-root uid refuses the overflow uid", missing);
    return;
  }
  const std::string vfiod = dir.Copy(testing::DaemonProcess::BinaryPath(), "vfiod");
  for (const char* flag : {"--allow-uid", "--owner-uid"}) {
    DaemonAsUid daemon(vfiod, dir.socket(), {absl::StrCat(flag, "=", KernelOverflowUid())});
    const int status = daemon.Wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << flag << ": " << status;
    EXPECT_TRUE(absl::StrContains(daemon.log(), "overflow uid")) << flag << ": " << daemon.log();
  }
}

}  // namespace
}  // namespace vfiod
