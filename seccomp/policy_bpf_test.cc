// Offline: the exported BPF program (seccomp_export_bpf) evaluated by a small interpreter of the
// classic-BPF subset seccomp uses, against synthetic seccomp_data: every x86_64 syscall number,
// and the edge cases of each argument rule. The expected sets are restated here on purpose, so a
// policy change shows in this test as well as in seccomp/vfiod.pfc.
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/vfio.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cstdint>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "seccomp/fd_layout.h"
#include "seccomp/policy.h"

namespace vfiod::seccomp {
namespace {

constexpr uint32_t kAllow = SECCOMP_RET_ALLOW;
constexpr uint32_t kKill = SECCOMP_RET_KILL_PROCESS;
uint32_t Errno(int e) { return SECCOMP_RET_ERRNO | static_cast<uint32_t>(e); }

struct Call {
  int nr = 0;
  uint32_t arch = AUDIT_ARCH_X86_64;
  uint64_t args[6] = {};
};

// Classic BPF as the kernel's seccomp runs it (net/core/filter.c, seccomp_check_filter): 32-bit
// accumulator A and index X, 16 scratch words, loads from seccomp_data only. Unknown opcodes
// fail the test.
std::optional<uint32_t> RunBpf(const std::vector<sock_filter>& program, const Call& call) {
  struct seccomp_data data = {};
  data.nr = call.nr;
  data.arch = call.arch;
  for (int i = 0; i < 6; ++i) data.args[i] = call.args[i];
  uint8_t bytes[sizeof(data)];
  std::memcpy(bytes, &data, sizeof(data));
  uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {};
  for (size_t pc = 0; pc < program.size(); ++pc) {
    const sock_filter& in = program[pc];
    auto load = [&](uint32_t offset) -> std::optional<uint32_t> {
      if (offset % 4 != 0 || offset + 4 > sizeof(bytes)) return std::nullopt;
      uint32_t v;
      std::memcpy(&v, bytes + offset, 4);
      return v;
    };
    switch (BPF_CLASS(in.code)) {
      case BPF_LD:
        if (in.code == (BPF_LD | BPF_W | BPF_ABS)) {
          std::optional<uint32_t> v = load(in.k);
          if (!v) return std::nullopt;
          a = *v;
        } else if (in.code == (BPF_LD | BPF_W | BPF_LEN)) {
          a = sizeof(bytes);
        } else if (in.code == (BPF_LD | BPF_IMM)) {
          a = in.k;
        } else if (in.code == (BPF_LD | BPF_MEM)) {
          a = mem[in.k % BPF_MEMWORDS];
        } else {
          return std::nullopt;
        }
        break;
      case BPF_LDX:
        if (in.code == (BPF_LDX | BPF_IMM)) {
          x = in.k;
        } else if (in.code == (BPF_LDX | BPF_MEM)) {
          x = mem[in.k % BPF_MEMWORDS];
        } else if (in.code == (BPF_LDX | BPF_W | BPF_LEN)) {
          x = sizeof(bytes);
        } else {
          return std::nullopt;
        }
        break;
      case BPF_ST:
        mem[in.k % BPF_MEMWORDS] = a;
        break;
      case BPF_STX:
        mem[in.k % BPF_MEMWORDS] = x;
        break;
      case BPF_ALU: {
        const uint32_t operand = BPF_SRC(in.code) == BPF_X ? x : in.k;
        switch (BPF_OP(in.code)) {
          case BPF_ADD: a += operand; break;
          case BPF_SUB: a -= operand; break;
          case BPF_MUL: a *= operand; break;
          case BPF_DIV: if (operand == 0) return 0u; a /= operand; break;
          case BPF_AND: a &= operand; break;
          case BPF_OR: a |= operand; break;
          case BPF_XOR: a ^= operand; break;
          case BPF_LSH: a <<= (operand & 31); break;
          case BPF_RSH: a >>= (operand & 31); break;
          case BPF_NEG: a = 0u - a; break;
          default: return std::nullopt;
        }
        break;
      }
      case BPF_JMP: {
        if (BPF_OP(in.code) == BPF_JA) {
          pc += in.k;
          break;
        }
        const uint32_t operand = BPF_SRC(in.code) == BPF_X ? x : in.k;
        bool taken;
        switch (BPF_OP(in.code)) {
          case BPF_JEQ: taken = a == operand; break;
          case BPF_JGT: taken = a > operand; break;
          case BPF_JGE: taken = a >= operand; break;
          case BPF_JSET: taken = (a & operand) != 0; break;
          default: return std::nullopt;
        }
        pc += taken ? in.jt : in.jf;
        break;
      }
      case BPF_RET:
        if (BPF_RVAL(in.code) == BPF_K) return in.k;
        if (BPF_RVAL(in.code) == BPF_A) return a;
        return std::nullopt;
      case BPF_MISC:
        if (BPF_MISCOP(in.code) == BPF_TAX) {
          x = a;
        } else {
          a = x;
        }
        break;
      default:
        return std::nullopt;
    }
  }
  return std::nullopt;  // fell off the end: the kernel refuses such a program
}

class PolicyBpfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::vector<sock_filter>> program = PolicyBpf(PolicyMode::kKill);
    ASSERT_TRUE(program.ok()) << program.status();
    program_ = *std::move(program);
    ASSERT_LE(program_.size(), size_t{BPF_MAXINSNS});
  }

  uint32_t Eval(int nr, std::initializer_list<uint64_t> args = {},
                uint32_t arch = AUDIT_ARCH_X86_64) {
    Call call;
    call.nr = nr;
    call.arch = arch;
    int i = 0;
    for (uint64_t arg : args) call.args[i++] = arg;
    std::optional<uint32_t> action = RunBpf(program_, call);
    EXPECT_TRUE(action.has_value()) << "the interpreter could not run the program for " << nr;
    return action.value_or(0xdeadbeef);
  }

  std::vector<sock_filter> program_;
};

// Allowed whatever the arguments.
const std::set<int> kUnconditional = {
    SYS_brk, SYS_munmap, SYS_mremap, SYS_madvise, SYS_futex, SYS_set_robust_list, SYS_rseq,
    SYS_exit, SYS_exit_group, SYS_sched_yield, SYS_sched_getaffinity, SYS_sched_getparam,
    SYS_sched_getscheduler, SYS_getpid, SYS_gettid, SYS_rt_sigprocmask, SYS_rt_sigreturn,
    SYS_restart_syscall, SYS_clock_gettime, SYS_gettimeofday, SYS_clock_nanosleep,
    SYS_nanosleep, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_wait, SYS_epoll_pwait, SYS_poll,
    SYS_ppoll, SYS_eventfd2, SYS_read, SYS_write, SYS_fstat, SYS_newfstatat,
    SYS_getrandom, SYS_uname, SYS_accept4, SYS_recvmsg, SYS_sendmsg, SYS_shutdown,
    SYS_setsockopt, SYS_getsockname, SYS_getpeername};
// Allowed only with some arguments (edge cases below).
const std::set<int> kConditional = {SYS_mmap,    SYS_mprotect,  SYS_clone,   SYS_tgkill,
                                    SYS_prctl,   SYS_pread64,   SYS_pwrite64, SYS_preadv2,
                                    SYS_fcntl,   SYS_ioctl,     SYS_getsockopt,
                                    SYS_close};
const std::map<int, int> kErrno = {
    {SYS_clone3, ENOSYS}, {SYS_open, ENOENT}, {SYS_openat, ENOENT}, {SYS_unlink, EPERM}};

TEST_F(PolicyBpfTest, EverySyscallNumber) {
  int forbidden = 0, killed = 0;
  for (int nr = 0; nr < 1024; ++nr) {
    if (kConditional.count(nr) != 0) continue;
    const uint32_t action = Eval(nr);
    if (kUnconditional.count(nr) != 0) {
      EXPECT_EQ(action, kAllow) << "syscall " << nr;
    } else if (auto it = kErrno.find(nr); it != kErrno.end()) {
      EXPECT_EQ(action, Errno(it->second)) << "syscall " << nr;
    } else {
      ++forbidden;
      if (action == kKill) ++killed;
      EXPECT_EQ(action, kKill) << "syscall " << nr;
    }
  }
  std::cout << "offline: " << killed << "/" << forbidden
            << " forbidden syscall numbers kill the process" << std::endl;
  PolicyFigures figures = Figures();
  EXPECT_EQ(figures.allowed_syscalls,
            static_cast<int>(kUnconditional.size() + kConditional.size()));
  EXPECT_EQ(figures.ioctl_requests, 4);
  std::cout << "policy: " << figures.allowed_syscalls << " syscalls allowed ("
            << figures.allow_rules << " allow rules), " << figures.ioctl_requests
            << " VFIO ioctl requests pinned to fds, " << figures.errno_syscalls
            << " syscalls failing with an errno" << std::endl;
}

TEST_F(PolicyBpfTest, NamedDangerousCallsKill) {
  for (int nr : {SYS_dup, SYS_dup2, SYS_dup3, SYS_socket, SYS_socketpair, SYS_connect, SYS_bind,
                 SYS_listen, SYS_execve, SYS_execveat, SYS_fork, SYS_vfork, SYS_ptrace,
                 SYS_process_vm_readv, SYS_process_vm_writev, SYS_mount, SYS_umount2,
                 SYS_pivot_root, SYS_chroot, SYS_unshare, SYS_setns, SYS_kill, SYS_tkill,
                 SYS_rt_sigaction, SYS_memfd_create, SYS_open_by_handle_at, SYS_openat2,
                 SYS_unlinkat, SYS_rename, SYS_seccomp, SYS_bpf, SYS_perf_event_open,
                 SYS_setuid, SYS_capset, SYS_signalfd4, SYS_pipe2, SYS_mknod, SYS_keyctl,
                 SYS_userfaultfd, SYS_io_uring_setup, SYS_sendto, SYS_recvfrom, SYS_close_range}) {
    EXPECT_EQ(Eval(nr), kKill) << "syscall " << nr;
  }
}

TEST_F(PolicyBpfTest, ForeignArchitecturesKill) {
  // i386 numbers (getpid is 20 there), and x32 numbers on the x86_64 arch value.
  EXPECT_EQ(Eval(20, {}, AUDIT_ARCH_I386), kKill);
  EXPECT_EQ(Eval(SYS_read, {}, AUDIT_ARCH_I386), kKill);
  EXPECT_EQ(Eval(SYS_getpid, {}, AUDIT_ARCH_AARCH64), kKill);
  EXPECT_EQ(Eval(0x40000000 | SYS_read), kKill);
  EXPECT_EQ(Eval(0x40000000 | SYS_getpid), kKill);
}

TEST_F(PolicyBpfTest, VfioIoctlsOnlyOnTheirFd) {
  const uint64_t map = VFIO_IOMMU_MAP_DMA, unmap = VFIO_IOMMU_UNMAP_DMA;
  const uint64_t set_irqs = VFIO_DEVICE_SET_IRQS, reset = VFIO_DEVICE_RESET;
  EXPECT_EQ(Eval(SYS_ioctl, {kVfioContainerFd, map}), kAllow);
  EXPECT_EQ(Eval(SYS_ioctl, {kVfioContainerFd, unmap}), kAllow);
  EXPECT_EQ(Eval(SYS_ioctl, {kVfioDeviceFd, set_irqs}), kAllow);
  EXPECT_EQ(Eval(SYS_ioctl, {kVfioDeviceFd, reset}), kAllow);
  // Garbage in the upper 32 bits of fd and request: the kernel ignores it, so does the policy.
  const uint64_t garbage = 0xdeadbeefull << 32;
  EXPECT_EQ(Eval(SYS_ioctl, {garbage | kVfioContainerFd, garbage | map}), kAllow);
  EXPECT_EQ(Eval(SYS_ioctl, {kVfioDeviceFd, garbage | set_irqs}), kAllow);
  EXPECT_EQ(Eval(SYS_ioctl, {kVfioDeviceFd, garbage | reset}), kAllow);
  // Each request on every other fd: the numbers alias (MAP_DMA on a container is
  // PCI_HOT_RESET on a device).
  static_assert(VFIO_IOMMU_MAP_DMA == VFIO_DEVICE_PCI_HOT_RESET);
  for (uint64_t request : {map, unmap}) {
    for (uint64_t fd : {0, 1, 2, kVfioGroupFd, kVfioDeviceFd, 6, 16, 1000}) {
      EXPECT_EQ(Eval(SYS_ioctl, {fd, request}), kKill) << fd << " " << request;
    }
  }
  for (uint64_t request : {set_irqs, reset}) {
    for (uint64_t fd : {0, 1, 2, kVfioContainerFd, kVfioGroupFd, 6, 16, 1000}) {
      EXPECT_EQ(Eval(SYS_ioctl, {fd, request}), kKill) << fd << " " << request;
    }
  }
  // Setup-only VFIO requests and everything else, on every fd.
  for (uint64_t request :
       {uint64_t{VFIO_GET_API_VERSION}, uint64_t{VFIO_CHECK_EXTENSION}, uint64_t{VFIO_SET_IOMMU},
        uint64_t{VFIO_GROUP_GET_STATUS}, uint64_t{VFIO_GROUP_SET_CONTAINER},
        uint64_t{VFIO_GROUP_UNSET_CONTAINER}, uint64_t{VFIO_GROUP_GET_DEVICE_FD},
        uint64_t{VFIO_DEVICE_GET_INFO}, uint64_t{VFIO_DEVICE_GET_REGION_INFO},
        uint64_t{VFIO_DEVICE_GET_IRQ_INFO}, uint64_t{VFIO_DEVICE_GET_PCI_HOT_RESET_INFO},
        uint64_t{VFIO_IOMMU_GET_INFO}, uint64_t{VFIO_DEVICE_FEATURE}, uint64_t{TCGETS},
        uint64_t{FIONBIO}, uint64_t{FIOCLEX}, uint64_t{FIONREAD}}) {
    for (uint64_t fd : {0, 1, 2, 3, 4, 5, 6, 16}) {
      EXPECT_EQ(Eval(SYS_ioctl, {fd, request}), kKill) << fd << " " << request;
    }
  }
}

// The fixed fds (0..5: /dev/null, the log, the VFIO container, group and device) can never be
// freed, so no other fd (a received one, say the device fd sent out and back) can take their
// numbers, which the ioctl and pread/pwrite rules trust. The kernel reads the fd as an int:
// the upper 32 bits can neither hide a fixed fd nor kill a legitimate close.
TEST_F(PolicyBpfTest, CloseNeverFreesAFixedFd) {
  const uint64_t garbage = 0xdeadbeefull << 32;
  for (uint64_t fd = 0; fd < 1024; ++fd) {
    const uint32_t expected = fd < static_cast<uint64_t>(kFirstOtherKeptFd) ? kKill : kAllow;
    EXPECT_EQ(Eval(SYS_close, {fd}), expected) << "close(" << fd << ")";
    EXPECT_EQ(Eval(SYS_close, {garbage | fd}), expected) << "close(garbage | " << fd << ")";
    EXPECT_EQ(Eval(SYS_close, {(uint64_t{1} << 32) | fd}), expected) << "close(2^32 | " << fd << ")";
  }
  EXPECT_EQ(Eval(SYS_close, {kVfioContainerFd}), kKill);
  EXPECT_EQ(Eval(SYS_close, {kVfioDeviceFd}), kKill);
  EXPECT_EQ(Eval(SYS_close, {0xffffffff00000003ull}), kKill);
  EXPECT_EQ(Eval(SYS_close, {16}), kAllow);
  EXPECT_EQ(Eval(SYS_close, {0xffffffff00000010ull}), kAllow);
  // Large and negative ints (EBADF in the kernel) are harmless and allowed.
  for (uint64_t fd : {uint64_t{0x7fffffff}, uint64_t{0x80000000}, uint64_t{0xffffffff},
                      ~uint64_t{0}, uint64_t{1} << 20}) {
    EXPECT_EQ(Eval(SYS_close, {fd}), kAllow) << fd;
  }
  // Nothing else frees or renumbers a fixed fd.
  EXPECT_EQ(Eval(SYS_close_range, {0, ~0u, 0}), kKill);
  EXPECT_EQ(Eval(SYS_close_range, {16, ~0u, 0}), kKill);
  for (uint64_t fd : {0, 3, 4, 5, 16}) {
    EXPECT_EQ(Eval(SYS_dup2, {16, fd}), kKill) << fd;
    EXPECT_EQ(Eval(SYS_dup3, {16, fd, O_CLOEXEC}), kKill) << fd;
    EXPECT_EQ(Eval(SYS_fcntl, {16, F_DUPFD, fd}), kKill) << fd;
  }
}

TEST_F(PolicyBpfTest, PreadPwriteOnlyOnTheDevice) {
  for (int nr : {SYS_pread64, SYS_pwrite64}) {
    EXPECT_EQ(Eval(nr, {kVfioDeviceFd, 0x1000, 4, 0}), kAllow);
    EXPECT_EQ(Eval(nr, {(uint64_t{1} << 32) | kVfioDeviceFd, 0x1000, 4, 0}), kAllow);
    for (uint64_t fd : {0, 1, 2, kVfioContainerFd, kVfioGroupFd, 6, 16}) {
      EXPECT_EQ(Eval(nr, {fd, 0x1000, 4, 0}), kKill) << fd;
    }
  }
}

TEST_F(PolicyBpfTest, Preadv2OnlyWithoutWaiting) {
  const uint64_t garbage = uint64_t{0xdead} << 32;
  EXPECT_EQ(Eval(SYS_preadv2, {16, 0x1000, 1, ~uint64_t{0}, ~uint64_t{0}, RWF_NOWAIT}), kAllow);
  EXPECT_EQ(Eval(SYS_preadv2, {16, 0x1000, 1, 0, 0, garbage | RWF_NOWAIT}), kAllow);
  for (uint64_t flags : {uint64_t{0}, uint64_t{RWF_HIPRI}, uint64_t{RWF_NOWAIT | RWF_HIPRI},
                         uint64_t{RWF_SYNC}, garbage}) {
    EXPECT_EQ(Eval(SYS_preadv2, {16, 0x1000, 1, 0, 0, flags}), kKill) << flags;
  }
  EXPECT_EQ(Eval(SYS_pwritev2, {16, 0x1000, 1, 0, 0, RWF_NOWAIT}), kKill);
}

TEST_F(PolicyBpfTest, PrlimitIsNeverAllowed) {
  // The simulated IOMMU charges against the budget the daemon passes it (--max-dma-bytes); no
  // limit is read or set while serving.
  const uint64_t old_limit = 0x7ffd2000;
  EXPECT_EQ(Eval(SYS_prlimit64, {0, RLIMIT_MEMLOCK, 0, old_limit}), kKill);
  EXPECT_EQ(Eval(SYS_prlimit64, {0, RLIMIT_MEMLOCK, 0x7ffd1000, old_limit}), kKill);
  EXPECT_EQ(Eval(SYS_prlimit64, {0, RLIMIT_NOFILE, 0, old_limit}), kKill);
}

TEST_F(PolicyBpfTest, NeverExecutableMemory) {
  for (int nr : {SYS_mmap, SYS_mprotect}) {
    EXPECT_EQ(Eval(nr, {0, 4096, PROT_NONE}), kAllow);
    EXPECT_EQ(Eval(nr, {0, 4096, PROT_READ | PROT_WRITE}), kAllow);
    EXPECT_EQ(Eval(nr, {0, 4096, PROT_EXEC}), kKill);
    EXPECT_EQ(Eval(nr, {0, 4096, PROT_READ | PROT_EXEC}), kKill);
    EXPECT_EQ(Eval(nr, {0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC}), kKill);
  }
}

TEST_F(PolicyBpfTest, CloneOnlyForThreads) {
  const uint64_t glibc_thread = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SYSVSEM | CLONE_SIGHAND |
                                CLONE_THREAD | CLONE_SETTLS | CLONE_PARENT_SETTID |
                                CLONE_CHILD_CLEARTID;
  EXPECT_EQ(Eval(SYS_clone, {glibc_thread}), kAllow);
  EXPECT_EQ(Eval(SYS_clone, {SIGCHLD}), kKill);  // fork
  EXPECT_EQ(Eval(SYS_clone, {CLONE_VM | CLONE_VFORK | SIGCHLD}), kKill);  // vfork/posix_spawn
  EXPECT_EQ(Eval(SYS_clone, {glibc_thread & ~uint64_t{CLONE_THREAD}}), kKill);
  EXPECT_EQ(Eval(SYS_clone, {CLONE_NEWUSER | CLONE_NEWPID}), kKill);
  EXPECT_EQ(Eval(SYS_clone3, {0, 88}), Errno(ENOSYS));
}

TEST_F(PolicyBpfTest, FcntlCommands) {
  for (uint64_t cmd : {F_GETFL, F_SETFL, F_GETFD, F_SETFD, F_GET_SEALS}) {
    EXPECT_EQ(Eval(SYS_fcntl, {7, cmd, 0}), kAllow) << cmd;
  }
  EXPECT_EQ(Eval(SYS_fcntl, {7, F_DUPFD_CLOEXEC, kFixedFdLimit}), kAllow);
  // The minimum is an int: garbage above it is ignored by the kernel and by the policy...
  EXPECT_EQ(Eval(SYS_fcntl, {7, F_DUPFD_CLOEXEC, (uint64_t{5} << 32) | kFixedFdLimit}), kAllow);
  // ...and cannot smuggle a low minimum past it.
  EXPECT_EQ(Eval(SYS_fcntl, {7, F_DUPFD_CLOEXEC, (uint64_t{1} << 32) | kVfioDeviceFd}), kKill);
  for (uint64_t minimum : {0, 3, 4, 5, 15, 17, 1000}) {
    EXPECT_EQ(Eval(SYS_fcntl, {7, F_DUPFD_CLOEXEC, minimum}), kKill) << minimum;
  }
  for (uint64_t cmd : {F_DUPFD, F_SETOWN, F_SETSIG, F_SETLEASE, F_NOTIFY, F_SETPIPE_SZ,
                       F_ADD_SEALS, F_SETLK}) {
    EXPECT_EQ(Eval(SYS_fcntl, {7, cmd, kFixedFdLimit}), kKill) << cmd;
  }
}

TEST_F(PolicyBpfTest, SignalsPrctlAndSockopts) {
  EXPECT_EQ(Eval(SYS_tgkill, {1, 1, SIGABRT}), kAllow);
  for (uint64_t sig : {SIGKILL, SIGSYS, SIGTERM, SIGSEGV, 0}) {
    EXPECT_EQ(Eval(SYS_tgkill, {1, 1, sig}), kKill) << sig;
  }
  EXPECT_EQ(Eval(SYS_prctl, {PR_SET_NAME, 0}), kAllow);
  for (uint64_t option : {PR_SET_SECCOMP, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS,
                          PR_CAPBSET_DROP, PR_SET_PDEATHSIG, PR_SET_MM, PR_SET_PTRACER}) {
    EXPECT_EQ(Eval(SYS_prctl, {option, 0}), kKill) << option;
  }
  EXPECT_EQ(Eval(SYS_getsockopt, {7, SOL_SOCKET, SO_PEERCRED}), kAllow);
  EXPECT_EQ(Eval(SYS_getsockopt, {7, IPPROTO_TCP, TCP_INFO}), kKill);
}

TEST(PolicyLogModeTest, LogsInsteadOfKilling) {
  absl::StatusOr<std::vector<sock_filter>> program = PolicyBpf(PolicyMode::kLog);
  ASSERT_TRUE(program.ok());
  Call call;
  call.nr = SYS_socket;
  EXPECT_EQ(RunBpf(*program, call), std::optional<uint32_t>(SECCOMP_RET_LOG));
  call.arch = AUDIT_ARCH_I386;
  EXPECT_EQ(RunBpf(*program, call), std::optional<uint32_t>(kKill));
}

}  // namespace
}  // namespace vfiod::seccomp
