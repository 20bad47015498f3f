// The seccomp policy of the serving daemon: an allowlist of what the serving phase needs
// (gRPC, glibc, abseil, the transport, the device model and the two backends) and nothing more.
//
// The rules are a readable table in policy.cc, one line per rule with the reason; README.md
// explains the conventions. In short:
//   - default action kill-process (kKill) or log-and-allow (kLog, for development only); a
//     foreign architecture (i386, x32) always kills the process;
//   - the filter is applied to every thread (TSYNC) and needs no_new_privs;
//   - ioctl only for the VFIO requests serving uses, each on the fd number that owns it
//     (seccomp/fd_layout.h), comparing the low 32 bits of fd and request as the kernel does;
//   - pread64/pwrite64 only on the VFIO device fd; mmap/mprotect never with PROT_EXEC; clone
//     only with CLONE_THREAD; clone3 fails with ENOSYS (glibc then uses clone); open/openat fail
//     with ENOENT (lazy opens by glibc, abseil and gRPC); no dup*, no exec, no socket creation.
//
// Nothing here touches the calling process except Load().
#ifndef VFIOD_SECCOMP_POLICY_H_
#define VFIOD_SECCOMP_POLICY_H_

#include <linux/filter.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vfiod::seccomp {

enum class PolicyMode {
  kKill,  // forbidden calls kill the whole process (SIGSYS): the default and only production mode
  kLog,   // forbidden calls are logged by the kernel (audit, dmesg) and allowed: development
};

// What the policy allows, counted from the table.
struct PolicyFigures {
  int allowed_syscalls = 0;  // distinct syscalls with at least one allow rule
  int allow_rules = 0;       // allow rules (a syscall with argument cases counts once per case)
  int errno_syscalls = 0;    // syscalls that fail with a fixed errno instead of killing
  int ioctl_requests = 0;    // (fd, request) pairs allowed for ioctl
};

// Owns a libseccomp filter context.
struct FilterDeleter {
  void operator()(void* ctx) const;
};
using Filter = std::unique_ptr<void, FilterDeleter>;

// Builds the filter (x86_64 only; INTERNAL names the rule libseccomp refused).
absl::StatusOr<Filter> BuildFilter(PolicyMode mode);

// libseccomp's pseudo filter code (PFC) for the filter, exactly as `vfiod --print-policy`
// prints it; the golden copy is seccomp/vfiod.pfc.
absl::StatusOr<std::string> PolicyText(PolicyMode mode);

// The classic BPF program the kernel would get (seccomp_export_bpf), for offline evaluation.
absl::StatusOr<std::vector<sock_filter>> PolicyBpf(PolicyMode mode);

PolicyFigures Figures();

// Installs the filter on every thread of the calling process (TSYNC), after running and joining
// one empty thread so that glibc's lazy threading set-up (rt_sigaction of its SIGSETXID
// handler at the first pthread_create) is done before the filter. The process must already
// have no_new_privs set or CAP_SYS_ADMIN; the jail sets no_new_privs. Irreversible.
absl::Status Load(PolicyMode mode);

}  // namespace vfiod::seccomp

#endif  // VFIOD_SECCOMP_POLICY_H_
