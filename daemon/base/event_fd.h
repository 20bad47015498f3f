// EventFd: an owned Linux eventfd, the currency of VFIO interrupts.
#ifndef VFIOD_DAEMON_BASE_EVENT_FD_H_
#define VFIOD_DAEMON_BASE_EVENT_FD_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "daemon/base/unique_fd.h"

namespace vfiod {

// Move-only. Signal() and Read() are safe from any thread (the kernel serialises them) and do not
// rely on O_NONBLOCK: the file status flags of an adopted eventfd belong to the open file
// description its sender shares with the daemon (a VMM's blocking reads would fail with EAGAIN
// if the daemon set it), so the daemon never changes them.
class EventFd {
 public:
  // A new non-blocking, close-on-exec eventfd with counter 0.
  static absl::StatusOr<EventFd> Create();
  // Adopts `fd` (e.g. received from a client) after checking that it is an eventfd:
  //   - fstat must show the kernel's one anonymous inode (the st_dev and st_ino of an eventfd
  //     the daemon creates): anything else, including a pidfd or an io_uring fd (inodes of
  //     their own), is refused;
  //   - it must be open for reading and writing;
  //   - an 8-byte write of 0 must succeed. Of the files on the anonymous inode only an eventfd
  //     takes it (timerfd, signalfd, epoll, inotify, userfaultfd, ... refuse writes). Adding 0
  //     never blocks and leaves the counter as it was, but the kernel still wakes the eventfd's
  //     waiters: poll, epoll and read re-check the counter and see nothing, while a waiter that
  //     acts on the wake-up alone (a KVM irqfd) sees one spurious interrupt.
  // The file status flags are left as they are (a client's blocking eventfd stays blocking).
  // INVALID_ARGUMENT for anything that is not an eventfd, naming what failed; the errno status
  // when a check itself cannot run (fstat fails, or the daemon's reference eventfd cannot be
  // created: its inode is remembered from the first success). `fd` is closed on error.
  static absl::StatusOr<EventFd> Adopt(UniqueFd fd);

  EventFd(EventFd&&) = default;
  EventFd& operator=(EventFd&&) = default;

  // Adds 1 to the counter. When the counter is at its maximum (a write would block), the signal
  // is coalesced into the pending ones, as the kernel's eventfd_signal() does, and OK returned.
  // An adopted eventfd is first polled for room (the kernel has no per-call non-blocking write
  // for eventfds: pwritev2(RWF_NOWAIT) is EOPNOTSUPP), so the call blocks only if another writer
  // fills the counter between the poll and the write, which only the eventfd's sender can do,
  // and only until someone reads it. The kernel backend never needs this: the kernel signals
  // client eventfds itself (see IrqManager); the simulated device does.
  absl::Status Signal() const;
  // Reads and clears the counter; 0 when it was already 0. Never blocks: an adopted eventfd is
  // read with RWF_NOWAIT (preadv2), which the kernel honours per call.
  absl::StatusOr<uint64_t> Read() const;
  absl::StatusOr<EventFd> Duplicate() const;

  const UniqueFd& fd() const { return fd_; }

 private:
  EventFd(UniqueFd fd, bool adopted) : fd_(std::move(fd)), adopted_(adopted) {}
  UniqueFd fd_;
  // Adopted: its O_NONBLOCK flag is not ours to rely on (see the class comment).
  bool adopted_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_EVENT_FD_H_
