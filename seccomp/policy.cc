#include "seccomp/policy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/unique_fd.h"
#include "seccomp/fd_layout.h"

namespace vfiod::seccomp {
namespace {

// Argument conditions. The kernel reads int arguments (fds, ioctl requests, fcntl commands,
// signal numbers, prctl options) from the low 32 bits of the register and ignores the rest;
// libseccomp's plain 64-bit equality would kill a call whose upper half holds garbage, and a
// 64-bit ordering (GE) would let garbage pass. So int arguments are compared on their low 32
// bits only, with SCMP_CMP_MASKED_EQ 0xffffffff.
scmp_arg_cmp Low32Is(unsigned arg, uint64_t value) {
  return scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, 0xffffffffu, value};
}
// Exactly `value`, all 64 bits (pointers: 0 is NULL).
scmp_arg_cmp ArgIs(unsigned arg, uint64_t value) {
  return scmp_arg_cmp{arg, SCMP_CMP_EQ, value, 0};
}
// None of `bits` set (the whole 64-bit value is checked: flag words are unsigned long).
scmp_arg_cmp NoneOf(unsigned arg, uint64_t bits) {
  return scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, bits, 0};
}
// All of `bits` set.
scmp_arg_cmp AllOf(unsigned arg, uint64_t bits) {
  return scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, bits, bits};
}

enum class Kind { kAllow, kErrno };

struct Rule {
  int nr;            // from libseccomp's SCMP_SYS (the kernel's __NR_* for x86_64)
  const char* name;  // for messages
  Kind kind;
  int error;         // kErrno only
  std::vector<scmp_arg_cmp> args;  // all must hold; several rules for one syscall are OR-ed
  const char* why;
};

Rule Allow(int nr, const char* name, const char* why, std::vector<scmp_arg_cmp> args = {}) {
  return Rule{nr, name, Kind::kAllow, 0, std::move(args), why};
}
Rule Fail(int nr, const char* name, int error, const char* why) {
  return Rule{nr, name, Kind::kErrno, error, {}, why};
}
#define VFIOD_SYS(name) SCMP_SYS(name), #name

// close: connections, received fds, eventfds, duplicates; never a fixed fd below
// kFirstOtherKeptFd (/dev/null on 0 and 1, the log on 2, the VFIO container, group and device on
// 3, 4 and 5, or /dev/null placeholders there with a simulated device). The ioctl and
// pread/pwrite rules name those numbers, so freeing one would let a later fd land on it (a
// received fd, an accepted connection, an eventfd: the kernel picks the lowest free number):
// e.g. the device fd sent out and received back onto 3, where the container's MAP_DMA rule lets
// VFIO_DEVICE_PCI_HOT_RESET through. Nothing else frees or renumbers an fd: close_range, dup2,
// dup3 and F_DUPFD are not allowed, F_DUPFD_CLOEXEC only with minimum kFixedFdLimit.
//
// The fd is an int: the kernel ignores the upper 32 bits, so only the low 32 are compared.
// libseccomp 2.5.4 has no masked ordering (a 64-bit GE lets garbage in the upper half through),
// and it refuses a conditional kill rule next to the default kill action (EACCES) and drops any
// conditional rule for a syscall that also has an unconditional one, so "allow close, kill
// close(3)" cannot be written. Instead close is allowed only when the low 32 bits are at least
// kFirstOtherKeptFd, written as masked equalities: one of bits 3..31 set (one rule per bit), or
// exactly 6 or 7. Everything else (0..5, whatever the upper half) takes the default action.
// policy_bpf_test checks every fd from 0 to 1023 with and without garbage in the upper half.
std::vector<Rule>* WithCloseRules(std::vector<Rule>* rules) {
  static_assert(kFirstOtherKeptFd == 6, "the masks below spell 'at least 6'");
  for (int bit = 3; bit < 32; ++bit) {
    const uint64_t mask = uint64_t{1} << bit;
    rules->push_back(Allow(SCMP_SYS(close), "close",
                          "connections, received fds, eventfds; never the fixed fds 0..5",
                          {scmp_arg_cmp{0, SCMP_CMP_MASKED_EQ, mask, mask}}));
  }
  rules->push_back(Allow(SCMP_SYS(close), "close",
                         "connections, received fds, eventfds; never the fixed fds 0..5",
                         {scmp_arg_cmp{0, SCMP_CMP_MASKED_EQ, 0xfffffffeu, 6}}));
  return rules;
}

// The policy. One rule per line (or per argument case); the reason says who needs it while
// serving. Anything not here kills the process. Keep in sync with seccomp/vfiod.pfc (the test
// //seccomp:policy_golden_test fails otherwise) and README.md.
const std::vector<Rule>& Rules() {
  static const std::vector<Rule>* const rules = WithCloseRules(new std::vector<Rule>{
      // ---- memory
      Allow(VFIOD_SYS(brk), "malloc's main arena"),
      Allow(VFIOD_SYS(mmap), "malloc arenas, thread stacks, registered guest memory; never exec",
            {NoneOf(2, PROT_EXEC)}),
      Allow(VFIOD_SYS(mprotect), "malloc arena growth, thread stack guards; never exec",
            {NoneOf(2, PROT_EXEC)}),
      Allow(VFIOD_SYS(munmap), "free, thread exit, unregistering guest memory"),
      Allow(VFIOD_SYS(mremap), "realloc of large (mmapped) blocks"),
      Allow(VFIOD_SYS(madvise), "free and thread exit return memory (MADV_DONTNEED)"),
      // ---- threads and synchronisation
      Allow(VFIOD_SYS(clone), "threads only (gRPC, transport, IRQ watcher, simulated device)",
            {AllOf(0, CLONE_THREAD)}),
      Fail(VFIOD_SYS(clone3), ENOSYS,
           "flags are in memory, uninspectable: glibc falls back to clone on ENOSYS"),
      Allow(VFIOD_SYS(futex), "mutexes, condition variables, thread joins"),
      Allow(VFIOD_SYS(set_robust_list), "glibc, at each thread start"),
      Allow(VFIOD_SYS(rseq), "glibc, at each thread start"),
      Allow(VFIOD_SYS(exit), "thread exit"),
      Allow(VFIOD_SYS(exit_group), "process exit"),
      Allow(VFIOD_SYS(sched_yield), "gRPC spin loops"),
      Allow(VFIOD_SYS(sched_getaffinity), "glibc's CPU count once /sys is gone (gRPC pools)"),
      Allow(VFIOD_SYS(sched_getparam), "pthread_getschedparam (gRPC thread start and join)"),
      Allow(VFIOD_SYS(sched_getscheduler), "pthread_getschedparam (gRPC thread start and join)"),
      Allow(VFIOD_SYS(getpid), "gRPC and abseil (fork detection, ids)"),
      Allow(VFIOD_SYS(gettid), "gRPC and abseil (thread ids in logs)"),
      Allow(VFIOD_SYS(tgkill), "abort() only: a crash stays a SIGABRT, not a policy kill",
            {Low32Is(2, SIGABRT)}),
      Allow(VFIOD_SYS(rt_sigprocmask), "glibc thread creation and exit"),
      Allow(VFIOD_SYS(rt_sigreturn), "return from a signal handler"),
      Allow(VFIOD_SYS(restart_syscall), "restarted sleeps after a stop/continue"),
      Allow(VFIOD_SYS(prctl), "gRPC names its threads (PR_SET_NAME)", {Low32Is(0, PR_SET_NAME)}),
      // ---- time
      Allow(VFIOD_SYS(clock_gettime), "clocks when the vDSO is not used"),
      Allow(VFIOD_SYS(gettimeofday), "clocks when the vDSO is not used"),
      Allow(VFIOD_SYS(clock_nanosleep), "gRPC backoff and timers, simulated device delays"),
      Allow(VFIOD_SYS(nanosleep), "sleeps"),
      // ---- waiting
      Allow(VFIOD_SYS(epoll_create1), "the transport and IRQ watcher loops start after the jail"),
      Allow(VFIOD_SYS(epoll_ctl), "transport, IRQ watcher, gRPC's poller"),
      Allow(VFIOD_SYS(epoll_wait), "transport, IRQ watcher, gRPC's poller"),
      Allow(VFIOD_SYS(epoll_pwait), "glibc may implement epoll_wait with it"),
      Allow(VFIOD_SYS(poll), "the main thread's stop wait; a vfio-user connection's VERSION wait"),
      Allow(VFIOD_SYS(ppoll), "the simulated device's worker"),
      Allow(VFIOD_SYS(eventfd2), "IRQ watch/mask eventfds, gRPC wakeups, transport wake"),
      // ---- fds and I/O
      Allow(VFIOD_SYS(read), "sockets, eventfds, the signalfd"),
      Allow(VFIOD_SYS(preadv2),
            "a client's eventfd (simulated INTx resample), never blocking whatever its flags",
            {Low32Is(5, RWF_NOWAIT)}),
      Allow(VFIOD_SYS(write), "the log, eventfds, sockets"),
      Allow(VFIOD_SYS(pread64), "config space and BARs: the VFIO device fd only",
            {Low32Is(0, kVfioDeviceFd)}),
      Allow(VFIOD_SYS(pwrite64), "config space and BARs: the VFIO device fd only",
            {Low32Is(0, kVfioDeviceFd)}),
      Allow(VFIOD_SYS(fstat), "checks of received fds (memfd size, eventfd kind)"),
      Allow(VFIOD_SYS(newfstatat), "fstat in glibc 2.36; path lookups find nothing in the jail"),
      Allow(VFIOD_SYS(fcntl), "accepted connections' file status flags are read before a change",
            {Low32Is(1, F_GETFL)}),
      Allow(VFIOD_SYS(fcntl),
            "gRPC's connections are set non-blocking, vfio-user's blocking (own thread each)",
            {Low32Is(1, F_SETFL)}),
      Allow(VFIOD_SYS(fcntl), "close-on-exec checks of received fds", {Low32Is(1, F_GETFD)}),
      Allow(VFIOD_SYS(fcntl), "close-on-exec on received fds", {Low32Is(1, F_SETFD)}),
      Allow(VFIOD_SYS(fcntl), "registered memory must be sealed against shrinking",
            {Low32Is(1, F_GET_SEALS)}),
      Allow(VFIOD_SYS(fcntl),
            "duplicates (connection watch, simulated eventfds) only above the fixed fds",
            {Low32Is(1, F_DUPFD_CLOEXEC), Low32Is(2, kFixedFdLimit)}),
      Allow(VFIOD_SYS(getrandom), "fd-channel keys and tokens; abseil and gRPC seeds"),
      Allow(VFIOD_SYS(uname), "gRPC's kernel version check, once (KernelSupportsErrqueue)"),
      // ---- VFIO: the serving-phase requests only, each on its own fd (numbers alias across fd
      // types: VFIO_IOMMU_MAP_DMA on a container is VFIO_DEVICE_PCI_HOT_RESET on a device).
      Allow(VFIOD_SYS(ioctl), "VFIO_IOMMU_MAP_DMA on the container",
            {Low32Is(0, kVfioContainerFd), Low32Is(1, VFIO_IOMMU_MAP_DMA)}),
      Allow(VFIOD_SYS(ioctl), "VFIO_IOMMU_UNMAP_DMA on the container",
            {Low32Is(0, kVfioContainerFd), Low32Is(1, VFIO_IOMMU_UNMAP_DMA)}),
      Allow(VFIOD_SYS(ioctl), "VFIO_DEVICE_SET_IRQS on the device",
            {Low32Is(0, kVfioDeviceFd), Low32Is(1, VFIO_DEVICE_SET_IRQS)}),
      Allow(VFIOD_SYS(ioctl), "VFIO_DEVICE_RESET on the device",
            {Low32Is(0, kVfioDeviceFd), Low32Is(1, VFIO_DEVICE_RESET)}),
      // ---- sockets that already exist (none can be created: no socket, socketpair, connect,
      // bind, listen)
      Allow(VFIOD_SYS(accept4), "listen mode: new gRPC, fd-channel and vfio-user connections"),
      Allow(VFIOD_SYS(recvmsg), "gRPC, fd-channel and vfio-user traffic (SCM_RIGHTS)"),
      Allow(VFIOD_SYS(sendmsg), "gRPC, fd-channel and vfio-user traffic"),
      Allow(VFIOD_SYS(shutdown), "gRPC closes connections; stopping ends vfio-user connections"),
      Allow(VFIOD_SYS(getsockopt), "SO_PEERCRED of each connection, SO_TYPE checks",
            {Low32Is(1, SOL_SOCKET)}),
      Allow(VFIOD_SYS(setsockopt), "gRPC tunes each connection it is handed"),
      Allow(VFIOD_SYS(getsockname), "gRPC names each connection"),
      Allow(VFIOD_SYS(getpeername), "gRPC names each connection"),
      // ---- lazy file access by glibc, abseil and gRPC (/sys/devices/system/cpu/online,
      // /proc/..., /etc/localtime): nothing to find in the empty root anyway.
      Fail(VFIOD_SYS(open), ENOENT, "lazy opens fail as if the file did not exist"),
      Fail(VFIOD_SYS(openat), ENOENT, "lazy opens fail as if the file did not exist"),
      // The transport removes its socket files at shutdown: under the jail the launcher does it
      // (the daemon's root is empty); with --jail=off they stay, and the next daemon replaces
      // them as stale.
      Fail(VFIOD_SYS(unlink), EPERM, "socket files are the launcher's to remove"),
  });
  return *rules;
}

#undef VFIOD_SYS

absl::Status Refused(int rc, absl::string_view what) {
  return ErrnoError(-rc, absl::StrCat("libseccomp: ", what));
}

// Runs `write` (a libseccomp exporter writing to an fd) into a memfd and returns the bytes.
template <typename Writer>
absl::StatusOr<std::string> Export(Writer write, absl::string_view what) {
  int raw = ::memfd_create("vfiod-policy", MFD_CLOEXEC);
  if (raw < 0) return ErrnoError(errno, "memfd_create");
  UniqueFd fd(raw);
  if (int rc = write(fd.get()); rc != 0) return Refused(rc, what);
  std::string out;
  char buffer[4096];
  for (off_t offset = 0;;) {
    ssize_t n = ::pread(fd.get(), buffer, sizeof(buffer), offset);
    if (n < 0) return ErrnoError(errno, "pread(policy export)");
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
    offset += n;
  }
  return out;
}

}  // namespace

void FilterDeleter::operator()(void* ctx) const { seccomp_release(ctx); }

absl::StatusOr<Filter> BuildFilter(PolicyMode mode) {
  const uint32_t default_action =
      mode == PolicyMode::kKill ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG;
  Filter filter(seccomp_init(default_action));
  if (filter == nullptr) return absl::InternalError("libseccomp: seccomp_init failed");
  void* ctx = filter.get();
  // libseccomp's default for a foreign architecture kills only the thread.
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); rc != 0) {
    return Refused(rc, "bad-arch action");
  }
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) {
    return Refused(rc, "TSYNC");
  }
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1); rc != 0) {
    return Refused(rc, "no_new_privs");
  }
  for (const Rule& rule : Rules()) {
    const uint32_t action = rule.kind == Kind::kAllow ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(rule.error);
    int rc = seccomp_rule_add_exact_array(ctx, action, rule.nr, rule.args.size(),
                                          rule.args.empty() ? nullptr : rule.args.data());
    if (rc != 0) return Refused(rc, absl::StrCat("rule for ", rule.name, " (", rule.why, ")"));
  }
  return filter;
}

absl::StatusOr<std::string> PolicyText(PolicyMode mode) {
  absl::StatusOr<Filter> filter = BuildFilter(mode);
  if (!filter.ok()) return filter.status();
  void* ctx = filter->get();
  return Export([ctx](int fd) { return seccomp_export_pfc(ctx, fd); }, "seccomp_export_pfc");
}

absl::StatusOr<std::vector<sock_filter>> PolicyBpf(PolicyMode mode) {
  absl::StatusOr<Filter> filter = BuildFilter(mode);
  if (!filter.ok()) return filter.status();
  void* ctx = filter->get();
  absl::StatusOr<std::string> bytes =
      Export([ctx](int fd) { return seccomp_export_bpf(ctx, fd); }, "seccomp_export_bpf");
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() % sizeof(sock_filter) != 0) {
    return absl::InternalError("seccomp_export_bpf: not a whole number of instructions");
  }
  std::vector<sock_filter> program(bytes->size() / sizeof(sock_filter));
  std::memcpy(program.data(), bytes->data(), bytes->size());
  return program;
}

PolicyFigures Figures() {
  PolicyFigures figures;
  std::set<int> allowed, failing;
  for (const Rule& rule : Rules()) {
    if (rule.kind == Kind::kAllow) {
      allowed.insert(rule.nr);
      ++figures.allow_rules;
      if (rule.nr == SCMP_SYS(ioctl)) ++figures.ioctl_requests;
    } else {
      failing.insert(rule.nr);
    }
  }
  figures.allowed_syscalls = static_cast<int>(allowed.size());
  figures.errno_syscalls = static_cast<int>(failing.size());
  return figures;
}

absl::Status Load(PolicyMode mode) {
  // glibc sets up threading lazily, at the first pthread_create of the process: it installs its
  // SIGSETXID handler then (rt_sigaction), which the policy does not allow. Do it now.
  std::thread([] {}).join();
  absl::StatusOr<Filter> filter = BuildFilter(mode);
  if (!filter.ok()) return filter.status();
  if (int rc = seccomp_load(filter->get()); rc != 0) return Refused(rc, "seccomp_load");
  return absl::OkStatus();
}

}  // namespace vfiod::seccomp
