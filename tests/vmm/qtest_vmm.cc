#include "tests/vmm/qtest_vmm.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

extern char** environ;

namespace vfiod::vmm {
namespace {

std::string Errno(absl::string_view what) { return absl::StrCat(what, ": ", strerror(errno)); }

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return absl::StrCat("status ", status);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// JSON string literal of `s` (the socket path goes into -device's JSON form).
std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

absl::StatusOr<std::string> RunForOutput(const std::vector<std::string>& argv,
                                         absl::Duration timeout, bool any_status) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::InternalError(Errno("pipe2"));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int error = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  if (error != 0) {
    close(pipe_fds[0]);
    return absl::FailedPreconditionError(absl::StrCat("cannot run ", argv[0], ": ",
                                                      strerror(error)));
  }
  std::string out;
  absl::Time deadline = absl::Now() + timeout;
  bool timed_out = false;
  while (true) {
    pollfd p = {pipe_fds[0], POLLIN, 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0) {
      timed_out = true;
      break;
    }
    int r = poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      timed_out = true;
      break;
    }
    char buf[4096];
    ssize_t n = read(pipe_fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, n);
  }
  close(pipe_fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not finish in ",
                                                    absl::FormatDuration(timeout)));
  }
  if (!any_status && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
    return absl::FailedPreconditionError(absl::StrCat(argv[0], " failed (",
                                                      DescribeWaitStatus(status), "): ", out));
  }
  return out;
}

absl::StatusOr<Qemu11> FindQemu11() {
  const char* env = getenv("VFIOD_QEMU11");
  if (env == nullptr || *env == '\0') {
    return absl::NotFoundError(
        "QEMU 11 is absent: VFIOD_QEMU11 is not set (tools/test.sh sets it after "
        "tools/lab/qemu11.sh fetch; by hand: bazel test "
        "--test_env=VFIOD_QEMU11=$PWD/tools/lab/qemu11 ...)");
  }
  Qemu11 qemu{env, ""};
  if (access(env, X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("QEMU 11 is absent: VFIOD_QEMU11=", env, " is not executable (",
                     strerror(errno), ")"));
  }
  absl::StatusOr<std::string> out = RunForOutput({env, "--version"}, absl::Seconds(10));
  if (!out.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "QEMU 11 is absent: VFIOD_QEMU11=", env, " --version: ", out.status().message(),
        " (prepare it with tools/lab/qemu11.sh fetch)"));
  }
  qemu.version = std::string(absl::StripAsciiWhitespace(out->substr(0, out->find('\n'))));
  // "QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-2~bpo13+1)"
  int major = 0;
  absl::string_view rest = qemu.version;
  if (!absl::ConsumePrefix(&rest, "QEMU emulator version ") ||
      !absl::SimpleAtoi(rest.substr(0, rest.find('.')), &major) || major < 11) {
    return absl::FailedPreconditionError(absl::StrCat(
        "QEMU 11 is absent: VFIOD_QEMU11=", env, " reports '", qemu.version,
        "' (QEMU 11 or later needed for its vfio-user-pci client)"));
  }
  return qemu;
}

uint32_t ConfigAddress(PciBdf bdf, uint32_t offset) {
  return 0x80000000u | (uint32_t{bdf.bus} << 16) | (uint32_t{bdf.device & 0x1fu} << 11) |
         (uint32_t{bdf.function & 0x7u} << 8) | (offset & 0xfcu);
}

absl::StatusOr<std::unique_ptr<QtestVmm>> QtestVmm::Start(QtestVmmOptions options) {
  if (options.qemu_path.empty()) return absl::InvalidArgumentError("no qemu_path");
  std::unique_ptr<QtestVmm> vmm(new QtestVmm());
  vmm->options_ = options;
  char dir_template[] = "/tmp/vfiodqXXXXXX";
  if (mkdtemp(dir_template) == nullptr) return absl::InternalError(Errno("mkdtemp"));
  vmm->dir_ = dir_template;
  const std::string qtest_socket = vmm->dir_ + "/qtest.sock";

  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return absl::InternalError(Errno("socket"));
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", qtest_socket.c_str());
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 1) != 0) {
    std::string error = Errno("bind/listen " + qtest_socket);
    close(listener);
    return absl::InternalError(error);
  }

  std::vector<std::string>& argv = vmm->argv_;
  argv = {options.qemu_path, "-machine", "q35", "-accel", "qtest", "-nodefaults", "-display",
          "none", "-m", absl::StrCat(options.memory_mb), "-qtest-log", "/dev/null", "-qtest",
          "unix:" + qtest_socket};
  if (options.shared_ram) {
    argv.insert(argv.end(),
                {"-object",
                 absl::StrCat("memory-backend-memfd,id=mem,size=", options.memory_mb,
                              "M,share=on"),
                 "-machine", "memory-backend=mem"});
  }
  if (!options.vfio_user_socket.empty()) {
    std::string device = absl::StrCat(
        R"({"driver":"vfio-user-pci","socket":{"type":"unix","path":)",
        JsonString(options.vfio_user_socket), "},\"addr\":", JsonString(options.pci_slot));
    if (options.vfio_user_msg_timeout_ms != 0) {
      absl::StrAppend(&device, ",\"x-msg-timeout\":", options.vfio_user_msg_timeout_ms);
    }
    device += "}";
    argv.insert(argv.end(), {"-device", device});
  }
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());

  // QEMU's stdout and stderr go to files in the folder (stderr is quoted in errors).
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  const std::string out_path = vmm->dir_ + "/qemu.out";
  const std::string err_path = vmm->dir_ + "/qemu.err";
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  absl::Time t0 = absl::Now();
  int error = posix_spawn(&vmm->pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    close(listener);
    vmm->pid_ = -1;
    return absl::FailedPreconditionError(
        absl::StrCat("posix_spawn ", args[0], ": ", strerror(error)));
  }

  // Accept QEMU's connection, watching for QEMU exiting first.
  absl::Time deadline = t0 + options.start_timeout;
  while (vmm->fd_ < 0) {
    pollfd p = {listener, POLLIN, 0};
    int r = poll(&p, 1, 20);
    if (r > 0) {
      vmm->fd_ = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (vmm->fd_ < 0 && errno != EINTR && errno != EAGAIN) {
        std::string e = Errno("accept4");
        close(listener);
        return absl::InternalError(e);
      }
      continue;
    }
    if (!vmm->Running()) {
      close(listener);
      return vmm->Unavailable("QEMU exited before connecting to the qtest socket");
    }
    if (absl::Now() > deadline) {
      close(listener);
      return absl::DeadlineExceededError(
          absl::StrCat("QEMU did not connect to ", qtest_socket, " within ",
                       absl::FormatDuration(options.start_timeout), "; stderr: ",
                       vmm->Stderr()));
    }
  }
  close(listener);

  // QEMU connects the qtest chardev early, but answers only from its main loop, after the
  // machine and its devices (the vfio-user attach) are realized; a device that fails makes it
  // exit, which closes the socket.
  absl::StatusOr<std::string> reply = vmm->Command("endianness");
  if (!reply.ok()) {
    if (reply.status().code() == absl::StatusCode::kDeadlineExceeded) return reply.status();
    return vmm->Unavailable("QEMU exited during start-up");
  }
  if (*reply != "little") {
    return absl::InternalError(absl::StrCat("QEMU's endianness is '", *reply, "'"));
  }
  vmm->start_duration_ = absl::Now() - t0;
  return vmm;
}

absl::Status QtestVmm::Unavailable(absl::string_view what) {
  // Give an exiting QEMU a moment to finish writing its stderr and be reaped.
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (Running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  std::string state = reaped_ ? DescribeWaitStatus(wait_status_) : "still running";
  return absl::UnavailableError(absl::StrCat(what, " (", state, "); QEMU's stderr: ",
                                             absl::StripTrailingAsciiWhitespace(Stderr())));
}

QtestVmm::~QtestVmm() {
  if (fd_ >= 0) close(fd_);
  if (pid_ > 0 && !reaped_) (void)Kill(SIGKILL);
  if (!dir_.empty()) {
    unlink((dir_ + "/qtest.sock").c_str());
    unlink((dir_ + "/qemu.out").c_str());
    unlink((dir_ + "/qemu.err").c_str());
    rmdir(dir_.c_str());
  }
}

std::string QtestVmm::Stderr() const { return ReadFile(dir_ + "/qemu.err"); }

bool QtestVmm::Running() {
  if (pid_ <= 0 || reaped_) return false;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    wait_status_ = status;
    return false;
  }
  return true;
}

absl::StatusOr<int> QtestVmm::Kill(int signal, absl::Duration timeout) {
  if (pid_ <= 0 || !Running()) {
    if (reaped_) return wait_status_;
    return absl::FailedPreconditionError("QEMU is not running");
  }
  ::kill(pid_, signal);
  absl::Time deadline = absl::Now() + timeout;
  while (Running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  if (Running()) {
    ::kill(pid_, SIGKILL);
    int status;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    wait_status_ = status;
  }
  return wait_status_;
}

absl::Status QtestVmm::Fill(absl::Time deadline) {
  while (true) {
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms < 0) ms = 0;
    pollfd p = {fd_, POLLIN, 0};
    int r = poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return absl::InternalError(Errno("poll"));
    if (r == 0) return absl::DeadlineExceededError("no reply from QEMU in time");
    char buf[65536];
    ssize_t n = read(fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(n == 0 ? "QEMU closed the qtest socket"
                                                     : Errno("read of the qtest socket"));
    buffer_.append(buf, n);
    return absl::OkStatus();
  }
}

bool QtestVmm::TakeLines(std::string* reply) {
  size_t eol;
  while ((eol = buffer_.find('\n')) != std::string::npos) {
    std::string line = buffer_.substr(0, eol);
    buffer_.erase(0, eol + 1);
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "IRQ ")) {
      bool raised = absl::ConsumePrefix(&rest, "raise ");
      if (!raised && !absl::ConsumePrefix(&rest, "lower ")) continue;
      int n = 0;
      if (!absl::SimpleAtoi(rest, &n)) continue;
      irq_levels_[n] = raised;
      irq_events_.push_back({n, raised, absl::Now()});
      continue;
    }
    if (reply != nullptr) {
      *reply = std::move(line);
      return true;
    }
    // A reply no command waits for: a protocol error of ours; dropped.
  }
  return false;
}

absl::StatusOr<std::string> QtestVmm::ReadReply(absl::Time deadline) {
  std::string reply;
  while (!TakeLines(&reply)) {
    absl::Status s = Fill(deadline);
    if (!s.ok()) return s;
  }
  return reply;
}

absl::StatusOr<std::string> QtestVmm::Command(absl::string_view line) {
  if (fd_ < 0) return absl::FailedPreconditionError("no qtest connection");
  std::string out = absl::StrCat(line, "\n");
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = send(fd_, out.data() + done, out.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(Errno("send to QEMU"));
    done += n;
  }
  absl::StatusOr<std::string> reply = ReadReply(absl::Now() + options_.command_timeout);
  if (!reply.ok()) {
    return absl::Status(reply.status().code(),
                        absl::StrCat(reply.status().message(), " (command '",
                                     line.substr(0, 80), "')"));
  }
  absl::string_view rest = *reply;
  if (rest == "OK") return std::string();
  if (absl::ConsumePrefix(&rest, "OK ")) return std::string(rest);
  return absl::InternalError(absl::StrCat("QEMU answered '", *reply, "' to '",
                                          line.substr(0, 80), "'"));
}

absl::StatusOr<uint64_t> QtestVmm::ReadValue(absl::string_view command) {
  absl::StatusOr<std::string> reply = Command(command);
  if (!reply.ok()) return reply.status();
  uint64_t value = 0;
  absl::string_view hex = *reply;
  if (!absl::ConsumePrefix(&hex, "0x") || !absl::SimpleHexAtoi(hex, &value)) {
    return absl::InternalError(absl::StrCat("unparsable reply '", *reply, "' to '", command,
                                            "'"));
  }
  return value;
}

#define VFIOD_QTEST_IN(Name, Type, cmd)                                       \
  absl::StatusOr<Type> QtestVmm::Name(uint16_t port) {                        \
    absl::StatusOr<uint64_t> v = ReadValue(absl::StrFormat(cmd " 0x%x", port)); \
    if (!v.ok()) return v.status();                                           \
    return static_cast<Type>(*v);                                             \
  }
#define VFIOD_QTEST_OUT(Name, Type, cmd)                                          \
  absl::Status QtestVmm::Name(uint16_t port, Type value) {                        \
    return Command(absl::StrFormat(cmd " 0x%x 0x%x", port, uint64_t{value})).status(); \
  }
#define VFIOD_QTEST_READ(Name, Type, cmd)                                       \
  absl::StatusOr<Type> QtestVmm::Name(uint64_t addr) {                          \
    absl::StatusOr<uint64_t> v = ReadValue(absl::StrFormat(cmd " 0x%x", addr)); \
    if (!v.ok()) return v.status();                                             \
    return static_cast<Type>(*v);                                               \
  }
#define VFIOD_QTEST_WRITE(Name, Type, cmd)                                          \
  absl::Status QtestVmm::Name(uint64_t addr, Type value) {                          \
    return Command(absl::StrFormat(cmd " 0x%x 0x%x", addr, uint64_t{value})).status(); \
  }

VFIOD_QTEST_IN(Inb, uint8_t, "inb")
VFIOD_QTEST_IN(Inw, uint16_t, "inw")
VFIOD_QTEST_IN(Inl, uint32_t, "inl")
VFIOD_QTEST_OUT(Outb, uint8_t, "outb")
VFIOD_QTEST_OUT(Outw, uint16_t, "outw")
VFIOD_QTEST_OUT(Outl, uint32_t, "outl")
VFIOD_QTEST_READ(Readb, uint8_t, "readb")
VFIOD_QTEST_READ(Readw, uint16_t, "readw")
VFIOD_QTEST_READ(Readl, uint32_t, "readl")
VFIOD_QTEST_READ(Readq, uint64_t, "readq")
VFIOD_QTEST_WRITE(Writeb, uint8_t, "writeb")
VFIOD_QTEST_WRITE(Writew, uint16_t, "writew")
VFIOD_QTEST_WRITE(Writel, uint32_t, "writel")
VFIOD_QTEST_WRITE(Writeq, uint64_t, "writeq")

absl::StatusOr<std::string> QtestVmm::MemRead(uint64_t addr, uint64_t size) {
  if (size == 0) return std::string();
  absl::StatusOr<std::string> reply = Command(absl::StrFormat("read 0x%x 0x%x", addr, size));
  if (!reply.ok()) return reply.status();
  absl::string_view hex = *reply;
  if (!absl::ConsumePrefix(&hex, "0x") || hex.size() != 2 * size) {
    return absl::InternalError(absl::StrCat("unexpected reply to read of ", size, " bytes: '",
                                            reply->substr(0, 40), "...'"));
  }
  return absl::HexStringToBytes(hex);
}

absl::Status QtestVmm::MemWrite(uint64_t addr, absl::string_view bytes) {
  if (bytes.empty()) return absl::OkStatus();
  return Command(absl::StrFormat("write 0x%x 0x%x 0x%s", addr, bytes.size(),
                                 absl::BytesToHexString(bytes)))
      .status();
}

absl::StatusOr<uint32_t> QtestVmm::ConfigRead(PciBdf bdf, uint32_t offset, uint32_t size) {
  if ((size != 1 && size != 2 && size != 4) || offset % size != 0 || offset + size > 256) {
    return absl::InvalidArgumentError(absl::StrCat("config read ", offset, "/", size));
  }
  absl::Status s = Outl(0xcf8, ConfigAddress(bdf, offset));
  if (!s.ok()) return s;
  uint16_t port = 0xcfc + (offset & 3);
  switch (size) {
    case 1: {
      absl::StatusOr<uint8_t> v = Inb(port);
      if (!v.ok()) return v.status();
      return *v;
    }
    case 2: {
      absl::StatusOr<uint16_t> v = Inw(port);
      if (!v.ok()) return v.status();
      return *v;
    }
    default:
      return Inl(port);
  }
}

absl::Status QtestVmm::ConfigWrite(PciBdf bdf, uint32_t offset, uint32_t size, uint32_t value) {
  if ((size != 1 && size != 2 && size != 4) || offset % size != 0 || offset + size > 256) {
    return absl::InvalidArgumentError(absl::StrCat("config write ", offset, "/", size));
  }
  absl::Status s = Outl(0xcf8, ConfigAddress(bdf, offset));
  if (!s.ok()) return s;
  uint16_t port = 0xcfc + (offset & 3);
  switch (size) {
    case 1:
      return Outb(port, static_cast<uint8_t>(value));
    case 2:
      return Outw(port, static_cast<uint16_t>(value));
    default:
      return Outl(port, value);
  }
}

absl::Status QtestVmm::InterceptIrqIn(absl::string_view qom_path) {
  return Command(absl::StrCat("irq_intercept_in ", qom_path)).status();
}

bool QtestVmm::IrqLevel(int line) {
  // Take whatever QEMU has already sent, without waiting.
  while (Fill(absl::Now()).ok()) {
  }
  TakeLines(nullptr);
  auto it = irq_levels_.find(line);
  return it != irq_levels_.end() && it->second;
}

absl::Status QtestVmm::WaitIrq(int line, bool level, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    TakeLines(nullptr);
    auto it = irq_levels_.find(line);
    if ((it != irq_levels_.end() && it->second) == level) return absl::OkStatus();
    absl::Status s = Fill(deadline);
    if (s.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(absl::StrCat("interrupt line ", line, " not ",
                                                      level ? "raised" : "lowered", " within ",
                                                      absl::FormatDuration(timeout)));
    }
    if (!s.ok()) return s;
  }
}


absl::StatusOr<int> QtestVmm::WaitAnyIrq(int first, int last, bool level,
                                         absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    TakeLines(nullptr);
    for (int line = first; line <= last; ++line) {
      auto it = irq_levels_.find(line);
      if ((it != irq_levels_.end() && it->second) == level) return line;
    }
    absl::Status s = Fill(deadline);
    if (s.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(absl::StrCat("no interrupt line in ", first, "..", last,
                                                      level ? " raised" : " lowered", " within ",
                                                      absl::FormatDuration(timeout)));
    }
    if (!s.ok()) return s;
  }
}

}  // namespace vfiod::vmm
