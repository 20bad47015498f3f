// The jail: what the daemon does, once its setup is complete and before any thread exists, so
// that the serving process can reach nothing but the fds it kept. Steps, in order (each failure
// is a status naming the step and keeping the errno):
//
//   PinFds     every kept fd moved to its fixed number (seccomp/fd_layout.h) in place; 0 and 1
//              on /dev/null, 2 kept for the log, the unused VFIO numbers among 3..5 on /dev/null
//              (the policy never lets 0..5 be closed, so no later fd can take those numbers);
//              every other fd closed (close_range).
//   Enter:
//     1. single-threaded check: unshare and fork below need it (FAILED_PRECONDITION).
//     2. the credential channel (a SOCK_SEQPACKET socketpair, launcher_credentials.h) and the
//        log pipe; then the daemon is forked into new namespaces while the calling process
//        stays in all of the host's and becomes the *launcher*: a short-lived namespace
//        parent makes a user namespace when not root (uid and gid mapped to themselves) and a
//        pid namespace, forks the daemon and exits; the launcher (a child subreaper) inherits
//        the daemon and reaps the namespace parent. The launcher never returns: it forwards
//        SIGTERM/SIGINT/SIGHUP to the daemon, relays its log (the daemon's fd 2 is a pipe to
//        it; the real stderr never enters the jail), answers the daemon's credential queries
//        (SO_PEERCRED read in the host's namespaces: real pids and uids), removes the
//        listening socket files after the daemon exits, and exits with the daemon's status
//        (re-raising the daemon's fatal signal, so a SIGSYS death shows as SIGSYS). The
//        daemon is pid 1 of the new pid namespace and dies with the launcher
//        (PR_SET_PDEATHSIG SIGKILL, armed once the launcher has said the daemon is its
//        child, and checked against a pipe for the race).
//     3. rlimits: MEMLOCK (the type1 IOMMU charges pinned DMA pages to it), NOFILE, CORE 0,
//        FSIZE 0 (no file writes; SIGXFSZ ignored so a write fails with EFBIG instead).
//        A limit above the hard limit that cannot be raised (no CAP_SYS_RESOURCE) is clamped
//        to the hard limit with a warning.
//     4. mount, ipc, uts and net namespaces; every mount made private.
//     5. an empty root: a tiny read-only tmpfs (mode 0555, nodev, nosuid, noexec) entered with
//        pivot_root(".", ".") and the old root detached (umount2 MNT_DETACH); when the current
//        root is the initramfs (rootfs: pivot_root says EINVAL), MS_MOVE over "/" and chroot.
//     6. privileges: secure bits locked (no setuid fixup, no root magic), capability bounding
//        set emptied, groups/gid/uid switched if asked (root only), every capability set
//        cleared (effective, permitted, inheritable, ambient).
//     7. no_new_privs; then the parent-death signal is armed and the launcher checked alive;
//        the credential channel is moved to seccomp::kLauncherChannelFd.
//   Then the caller loads the seccomp policy (seccomp/policy.h) and starts serving.
//
// Signals: the daemon blocks SIGTERM/SIGINT/SIGHUP and reads them from a signalfd. As pid 1 it
// would be sent no signal it has no handler for, so Enter() installs an empty handler for the
// three (they stay blocked: the signalfd still reports them).
#ifndef VFIOD_DAEMON_JAIL_JAIL_H_
#define VFIOD_DAEMON_JAIL_JAIL_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/base/unique_fd.h"

namespace vfiod::jail {

// One fd that survives the jail.
struct KeptFd {
  UniqueFd* fd = nullptr;  // valid; updated in place to `number`
  int number = -1;         // in [3, seccomp::kLauncherChannelFd), distinct
  std::string what;        // for errors and the log
};

// Moves every kept fd to its number, points 0 and 1 at /dev/null, keeps 2 and closes every other
// fd. INVALID_ARGUMENT for a bad or repeated number or an invalid fd. Needs no privilege; also
// used with the jail off (the seccomp policy relies on the numbers).
absl::Status PinFds(const std::vector<KeptFd>& kept);

struct JailOptions {
  uint64_t memlock_bytes = 0;   // RLIMIT_MEMLOCK
  uint64_t max_open_files = 0;  // RLIMIT_NOFILE (must exceed seccomp::kFixedFdLimit)
  std::optional<uid_t> uid;     // switch to these after the namespaces (root only)
  std::optional<gid_t> gid;
  // Socket files the launcher removes after the daemon exited, if each still names the inode
  // it named at Enter() (the daemon cannot: its root is empty).
  std::vector<std::string> socket_files;
};

// Steps 1-7 above. Returns only in the jailed daemon, ready for the seccomp policy: the
// daemon's end of the credential channel, at seccomp::kLauncherChannelFd (for a
// LauncherCredentialClient). The launcher exits inside. Call after PinFds, with no thread
// running.
absl::StatusOr<UniqueFd> Enter(const JailOptions& options);

// The number of threads of the calling process (from /proc/self/task).
absl::StatusOr<int> ThreadCount();

}  // namespace vfiod::jail

#endif  // VFIOD_DAEMON_JAIL_JAIL_H_
