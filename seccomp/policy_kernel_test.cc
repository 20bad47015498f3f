// In the kernel: forked children install the real policy (Load(kKill), with TSYNC and
// no_new_privs) and make one call each. Every allowed call must live (exit 0), every forbidden
// call or perturbed argument must die by SIGSYS, also from a thread other than the main one
// (the whole process dies). Sanitizer runtimes make calls of their own that the policy kills,
// so these tests are skipped in sanitized builds (--config=asan); the default build runs them.
//
// A forbidden call through a kernel entry that not every kernel has (i386's `int 0x80`) is
// probed first, in a child without a filter. Where the kernel lacks the entry, the call never
// reaches the filter, so its case is reported not applicable (tests/host_report.h) and not
// counted; where the entry exists, the case must die by SIGSYS like any other. With
// VFIOD_EXPECT_I386_ENTRY=1 (the VM lab, whose kernel has it) a missing entry is a failure, so
// that the i386 case is checked on every full run. x32 needs no probe: the filter sees an x32
// number before the kernel looks for an x32 entry, and without one a call the policy let
// through would return ENOSYS and live, which fails the case.
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/base/sanitizers.h"
#include "gtest/gtest.h"
#include "seccomp/fd_layout.h"
#include "seccomp/policy.h"
#include "tests/host_report.h"

namespace vfiod::seccomp {
namespace {

// Runs `body` in a forked child under the policy; returns the child's wait status. The child
// holds eventfds on the VFIO numbers 3..5 (any fd will do: the policy looks at numbers) and
// exits 0 when `body` returns true, 1 when it returns false.
int RunConfined(const std::function<bool()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (int fd : {kVfioContainerFd, kVfioGroupFd, kVfioDeviceFd}) {
      int e = ::eventfd(0, EFD_CLOEXEC);
      if (e < 0 || (e != fd && ::dup2(e, fd) < 0)) ::_exit(2);
    }
    if (!Load(PolicyMode::kKill).ok()) ::_exit(3);
    ::_exit(body() ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

bool Lives(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
bool DiesBySigsys(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; }

// A RunConfined() wait status in words.
std::string Outcome(int status) {
  if (WIFSIGNALED(status)) return absl::StrCat("killed by ", testing::SignalText(WTERMSIG(status)));
  if (!WIFEXITED(status)) return absl::StrCat("wait status ", status);
  switch (WEXITSTATUS(status)) {
    case 0:
      return "lived, and the call succeeded";
    case 1:
      return "lived, and the call failed";
    case 2:
      return "exited 2: the child could not place eventfds on the VFIO fd numbers";
    case 3:
      return "exited 3: the policy did not load";
    default:
      return absl::StrCat("exited ", WEXITSTATUS(status));
  }
}

struct Case {
  std::string name;
  std::function<bool()> body;
  // For a call through a kernel entry that not every kernel has: why this kernel cannot run the
  // case, or nullopt when it can. Unset for calls every x86_64 kernel accepts.
  std::function<std::optional<std::string>()> not_applicable;
};

// i386 getpid (20) through `int 0x80`, the i386 system-call entry; returns what the call
// returned. Kernels before 4.17 zero r8-r11 on this entry from 64-bit code.
long I386Getpid() {
  long ret;
  asm volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory", "r8", "r9", "r10", "r11");
  return ret;
}

// Why this kernel cannot run an i386 case, or nullopt when it has the i386 entry. Probed once,
// in a child without a filter: with the entry (IA32 emulation), `int 0x80` is a system call and
// the child exits; without it (a kernel built without CONFIG_IA32_EMULATION, or booted with
// ia32_emulation=0) the instruction faults before any system call is made, and the child dies
// by a signal (SIGSEGV), filter or not.
std::optional<std::string> NoI386Entry() {
  static const std::optional<std::string> answer = []() -> std::optional<std::string> {
    const pid_t pid = ::fork();
    if (pid == 0) {
      (void)I386Getpid();
      ::_exit(0);
    }
    int status = 0;
    if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFSIGNALED(status)) {
      return std::nullopt;
    }
    return absl::StrCat("this kernel has no i386 system-call entry (int 0x80 raised ",
                        testing::SignalText(WTERMSIG(status)), " without a filter)");
  }();
  const char* expected = std::getenv("VFIOD_EXPECT_I386_ENTRY");
  if (answer.has_value() && expected != nullptr && std::string(expected) == "1") {
    ADD_FAILURE() << "VFIOD_EXPECT_I386_ENTRY=1, but " << *answer;
  }
  return answer;
}

long Raw(long nr, uint64_t a = 0, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0) {
  return ::syscall(nr, a, b, c, d);
}

class PolicyKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kSanitizerBuild) GTEST_SKIP() << "sanitizer runtimes cannot live under the policy";
  }
};

TEST_F(PolicyKernelTest, AllowedCallsLive) {
  const std::vector<Case> cases = {
      {"getpid", [] { return ::getpid() > 0; }},
      {"mmap rw, mprotect, munmap",
       [] {
         void* p = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
         return p != MAP_FAILED && ::mprotect(p, 4096, PROT_READ) == 0 && ::munmap(p, 8192) == 0;
       }},
      {"malloc and free of a large block",
       [] {
         std::vector<char> big(64 << 20, 1);
         return big[12345] == 1;
       }},
      {"thread start and join (clone with CLONE_THREAD, clone3 ENOSYS)",
       [] {
         int x = 0;
         std::thread([&x] { x = 1; }).join();
         return x == 1;
       }},
      {"clone3 fails with ENOSYS", [] { return Raw(SYS_clone3, 0, 0) == -1 && errno == ENOSYS; }},
      {"openat fails with ENOENT",
       [] { return ::open("/etc/passwd", O_RDONLY) == -1 && errno == ENOENT; }},
      {"unlink fails with EPERM", [] { return ::unlink("/tmp/x") == -1 && errno == EPERM; }},
      {"eventfd, write, read, close",
       [] {
         int fd = ::eventfd(0, EFD_CLOEXEC);
         uint64_t v = 1;
         return fd >= 0 && ::write(fd, &v, 8) == 8 && ::read(fd, &v, 8) == 8 && ::close(fd) == 0;
       }},
      {"preadv2 RWF_NOWAIT on an empty blocking eventfd",
       [] {
         int fd = ::eventfd(0, EFD_CLOEXEC);
         uint64_t v;
         struct iovec iov = {&v, sizeof(v)};
         return ::preadv2(fd, &iov, 1, -1, RWF_NOWAIT) == -1 && errno == EAGAIN;
       }},
      {"fcntl F_DUPFD_CLOEXEC above the fixed fds",
       [] { return ::fcntl(kVfioDeviceFd, F_DUPFD_CLOEXEC, kFixedFdLimit) >= kFixedFdLimit; }},
      {"fcntl F_DUPFD_CLOEXEC minimum with high garbage",
       [] { return Raw(SYS_fcntl, 0, F_DUPFD_CLOEXEC, (uint64_t{7} << 32) | kFixedFdLimit) >= 16; }},
      {"fcntl F_GETFL/F_SETFL",
       [] { return ::fcntl(0, F_SETFL, ::fcntl(0, F_GETFL) | O_NONBLOCK) == 0; }},
      {"MAP_DMA on the container fd",
       [] { return ::ioctl(kVfioContainerFd, VFIO_IOMMU_MAP_DMA, nullptr) == -1; }},
      {"UNMAP_DMA on the container fd",
       [] { return ::ioctl(kVfioContainerFd, VFIO_IOMMU_UNMAP_DMA, nullptr) == -1; }},
      {"SET_IRQS on the device fd",
       [] { return ::ioctl(kVfioDeviceFd, VFIO_DEVICE_SET_IRQS, nullptr) == -1; }},
      {"RESET on the device fd", [] { return ::ioctl(kVfioDeviceFd, VFIO_DEVICE_RESET) == -1; }},
      {"MAP_DMA with garbage high bits in fd and request",
       [] {
         return Raw(SYS_ioctl, (uint64_t{0xdead} << 32) | kVfioContainerFd,
                    (uint64_t{0xbeef} << 32) | VFIO_IOMMU_MAP_DMA, 0) == -1;
       }},
      {"pread on the device fd",
       [] {
         uint64_t v;
         return ::pread(kVfioDeviceFd, &v, 8, 0) == -1;  // an eventfd: ESPIPE, but alive
       }},
      {"close(16)",
       [] {
         const int fd = ::fcntl(0, F_DUPFD_CLOEXEC, kFixedFdLimit);  // 16 unless the test has it
         return fd >= kFixedFdLimit && ::close(fd) == 0;
       }},
      {"close(16) with garbage in the upper 32 bits",
       [] {
         const int fd = ::fcntl(0, F_DUPFD_CLOEXEC, kFixedFdLimit);
         return fd >= kFixedFdLimit &&
                Raw(SYS_close, (uint64_t{0xdeadbeef} << 32) | static_cast<uint32_t>(fd)) == 0 &&
                ::fcntl(fd, F_GETFD) == -1 && errno == EBADF;
       }},
      {"close(6), the first number above the fixed fds",
       [] {
         // The child's fds 0..5 are open, so the eventfd takes 6 unless the test holds it.
         const int fd = ::eventfd(0, EFD_CLOEXEC);
         return fd >= kFirstOtherKeptFd && ::close(fd) == 0;
       }},
      {"close of a number never opened (EBADF)",
       [] { return ::close(1000) == -1 && errno == EBADF; }},
      {"prctl PR_SET_NAME", [] { return ::prctl(PR_SET_NAME, "worker", 0, 0, 0) == 0; }},
      {"clock_gettime, nanosleep",
       [] {
         struct timespec now, nap = {0, 1000};
         return ::clock_gettime(CLOCK_MONOTONIC, &now) == 0 && ::nanosleep(&nap, nullptr) == 0;
       }},
  };
  for (const Case& c : cases) {
    const int status = RunConfined(c.body);
    EXPECT_TRUE(Lives(status)) << c.name << ": " << Outcome(status);
  }
}

std::vector<Case> ForbiddenCases() {
  return {
      {"socket", [] { return ::socket(AF_UNIX, SOCK_STREAM, 0) >= 0; }},
      {"socketpair",
       [] {
         int sv[2];
         return ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0;
       }},
      {"dup", [] { return ::dup(0) >= 0; }},
      {"dup2 onto the device fd", [] { return ::dup2(0, kVfioDeviceFd) >= 0; }},
      {"dup3", [] { return ::dup3(0, 20, O_CLOEXEC) >= 0; }},
      {"close(3), the container's number", [] { return ::close(kVfioContainerFd) == 0; }},
      {"close(5), the device's number", [] { return ::close(kVfioDeviceFd) == 0; }},
      {"close(0)", [] { return ::close(0) == 0; }},
      {"close(2), the log", [] { return ::close(2) == 0; }},
      {"close(3) with garbage in the upper 32 bits",
       [] { return Raw(SYS_close, (uint64_t{0xdeadbeef} << 32) | kVfioContainerFd) == 0; }},
      {"close_range above the fixed fds", [] { return Raw(SYS_close_range, 16, ~0u, 0) == 0; }},
      {"dup2 onto the container fd", [] { return ::dup2(kVfioDeviceFd, kVfioContainerFd) >= 0; }},
      {"fcntl F_DUPFD", [] { return ::fcntl(0, F_DUPFD, kFixedFdLimit) >= 0; }},
      {"fcntl F_DUPFD_CLOEXEC onto the fixed range", [] { return ::fcntl(0, F_DUPFD_CLOEXEC, 3) >= 0; }},
      {"fcntl F_DUPFD_CLOEXEC low minimum hidden under high bits",
       [] { return Raw(SYS_fcntl, 0, F_DUPFD_CLOEXEC, (uint64_t{1} << 32) | 3) >= 0; }},
      {"MAP_DMA on the device fd (= PCI_HOT_RESET)",
       [] { return ::ioctl(kVfioDeviceFd, VFIO_IOMMU_MAP_DMA, nullptr) >= 0; }},
      {"UNMAP_DMA on the group fd",
       [] { return ::ioctl(kVfioGroupFd, VFIO_IOMMU_UNMAP_DMA, nullptr) >= 0; }},
      {"SET_IRQS on the container fd",
       [] { return ::ioctl(kVfioContainerFd, VFIO_DEVICE_SET_IRQS, nullptr) >= 0; }},
      {"RESET on the container fd", [] { return ::ioctl(kVfioContainerFd, VFIO_DEVICE_RESET) >= 0; }},
      {"GET_DEVICE_FD on the group fd",
       [] { return ::ioctl(kVfioGroupFd, VFIO_GROUP_GET_DEVICE_FD, "x") >= 0; }},
      {"TCGETS on stdin", [] { return ::ioctl(0, TCGETS, nullptr) >= 0; }},
      {"mmap PROT_EXEC",
       [] {
         return ::mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) !=
                MAP_FAILED;
       }},
      {"mprotect PROT_EXEC",
       [] {
         void* p = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
         return ::mprotect(p, 4096, PROT_READ | PROT_EXEC) == 0;
       }},
      {"clone without CLONE_THREAD (fork)", [] { return Raw(SYS_clone, SIGCHLD, 0) >= 0; }},
      {"fork", [] { return ::fork() >= 0; }},
      {"execve", [] { return ::execl("/bin/true", "true", nullptr) == 0; }},
      {"pread on the container fd",
       [] {
         uint64_t v;
         return ::pread(kVfioContainerFd, &v, 8, 0) >= 0;
       }},
      {"pwrite on stdout", [] { return ::pwrite(1, "x", 1, 0) >= 0; }},
      {"prlimit reads RLIMIT_MEMLOCK",
       [] {
         struct rlimit limit;
         return ::prlimit(0, RLIMIT_MEMLOCK, nullptr, &limit) == 0;
       }},
      {"prlimit sets RLIMIT_MEMLOCK",
       [] {
         struct rlimit limit = {4096, 4096};
         return ::prlimit(0, RLIMIT_MEMLOCK, &limit, nullptr) == 0;
       }},
      {"prlimit reads RLIMIT_NOFILE",
       [] {
         struct rlimit limit;
         return ::prlimit(0, RLIMIT_NOFILE, nullptr, &limit) == 0;
       }},
      {"preadv2 without RWF_NOWAIT",
       [] {
         uint64_t v;
         struct iovec iov = {&v, sizeof(v)};
         return ::preadv2(0, &iov, 1, -1, 0) >= 0;
       }},
      {"prctl PR_SET_DUMPABLE", [] { return ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0; }},
      {"tgkill with SIGTERM", [] { return Raw(SYS_tgkill, ::getpid(), ::gettid(), SIGTERM) == 0; }},
      {"kill", [] { return ::kill(::getpid(), 0) == 0; }},
      {"rt_sigaction", [] { return ::signal(SIGUSR1, SIG_IGN) != SIG_ERR; }},
      {"unshare", [] { return ::unshare(CLONE_NEWNS) == 0; }},
      {"ptrace", [] { return Raw(SYS_ptrace, 0, 0) == 0; }},
      {"memfd_create", [] { return ::memfd_create("x", 0) >= 0; }},
      {"pipe2",
       [] {
         int p[2];
         return ::pipe2(p, O_CLOEXEC) == 0;
       }},
      {"i386 getpid through int 0x80", [] { return I386Getpid() > 0; }, NoI386Entry},
      {"x32 getpid", [] { return Raw(0x40000000 | SYS_getpid) > 0; }},
  };
}

// Runs each forbidden case through `run` (a confined child's wait status) and expects SIGSYS;
// a case this kernel cannot run is reported not applicable instead. Prints the tally.
void ExpectEachKilled(const std::string& where, const std::function<int(const Case&)>& run) {
  int killed = 0, total = 0, not_applicable = 0;
  for (const Case& c : ForbiddenCases()) {
    if (c.not_applicable) {
      if (std::optional<std::string> why = c.not_applicable()) {
        testing::ReportNotApplicable(absl::StrCat(c.name, " (", where, ")"), *why);
        ++not_applicable;
        continue;
      }
    }
    ++total;
    const int status = run(c);
    if (DiesBySigsys(status)) ++killed;
    EXPECT_TRUE(DiesBySigsys(status)) << c.name << " (" << where << "): " << Outcome(status);
  }
  std::cout << "in the kernel, " << where << ": " << killed << "/" << total
            << " forbidden calls killed the whole process by SIGSYS";
  if (not_applicable > 0) std::cout << "; " << not_applicable << " not applicable on this kernel";
  std::cout << std::endl;
}

TEST_F(PolicyKernelTest, ForbiddenCallsKillTheProcess) {
  ExpectEachKilled("main thread", [](const Case& c) { return RunConfined(c.body); });
}

TEST_F(PolicyKernelTest, ForbiddenCallsFromAnotherThreadKillTheWholeProcess) {
  ExpectEachKilled("another thread", [](const Case& c) {
    return RunConfined([&c] {
      std::thread([&c] { (void)c.body(); }).join();
      // Reached only if the thread's call was allowed.
      return true;
    });
  });
}

}  // namespace
}  // namespace vfiod::seccomp
