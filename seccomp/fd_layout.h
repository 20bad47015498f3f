// The fixed fd numbers of the jailed daemon. The jail (daemon/jail) moves every kept fd to its
// number here before the seccomp policy (seccomp/policy.h) is loaded, and the policy allows
// fd-specific calls (VFIO ioctls, pread/pwrite) by these numbers. Every fd the daemon opens
// later (connections, eventfds, received fds) gets a number the kernel picks: below
// kFixedFdLimit only where a kept fd is absent (e.g. 3..5 with a simulated device), never on a
// kept fd, because the policy forbids dup/dup2/dup3 and allows F_DUPFD_CLOEXEC only with
// minimum kFixedFdLimit.
#ifndef VFIOD_SECCOMP_FD_LAYOUT_H_
#define VFIOD_SECCOMP_FD_LAYOUT_H_

#include "daemon/base/unique_fd.h"

namespace vfiod::seccomp {

// 0 and 1 are /dev/null; 2 is the log (a pipe to the launcher under the jail, else inherited).
inline constexpr int kStdinFd = 0;
inline constexpr int kStdoutFd = 1;
inline constexpr int kLogFd = 2;
// The kernel backend's fds (absent with a simulated device).
inline constexpr int kVfioContainerFd = 3;
inline constexpr int kVfioGroupFd = 4;
inline constexpr int kVfioDeviceFd = 5;
// Other kept fds (listening and spawn-mode sockets, the signalfd, the stop eventfd) are numbered
// from here, in the order the daemon lists them.
inline constexpr int kFirstOtherKeptFd = 6;
// Kept fds are all below this number.
inline constexpr int kFixedFdLimit = 16;
// Under the jail, the daemon's end of the credential channel to the launcher
// (daemon/jail/launcher_credentials.h); the jail puts it here itself, so the fds the daemon
// lists for pinning are numbered below it.
inline constexpr int kLauncherChannelFd = kFixedFdLimit - 1;

static_assert(kFixedFdLimit == kMinDuplicateFd,
              "UniqueFd::Duplicate's minimum must be the end of the fixed layout");

}  // namespace vfiod::seccomp

#endif  // VFIOD_SECCOMP_FD_LAYOUT_H_
