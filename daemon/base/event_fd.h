// EventFd: an owned Linux eventfd, the currency of VFIO interrupts.
#ifndef VFIOD_DAEMON_BASE_EVENT_FD_H_
#define VFIOD_DAEMON_BASE_EVENT_FD_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "daemon/base/unique_fd.h"

namespace vfiod {

// Move-only. Signal() and Read() are safe from any thread (the kernel serialises them).
class EventFd {
 public:
  // A new non-blocking, close-on-exec eventfd with counter 0.
  static absl::StatusOr<EventFd> Create();
  // Adopts `fd` (e.g. received from a client) after checking that it is an eventfd: fstat must
  // show an anonymous inode and adding 0 to the counter must succeed, which every other
  // anonymous-inode fd (timerfd, signalfd, epoll, ...) refuses. Sets O_NONBLOCK on the open
  // file description, so a client that parks the counter at its maximum cannot block a daemon
  // thread in Signal(). Returns INVALID_ARGUMENT for anything else; `fd` is closed on error.
  static absl::StatusOr<EventFd> Adopt(UniqueFd fd);

  EventFd(EventFd&&) = default;
  EventFd& operator=(EventFd&&) = default;

  // Adds 1 to the counter.
  absl::Status Signal() const;
  // Reads and clears the counter; 0 when it was already 0 (never blocks).
  absl::StatusOr<uint64_t> Read() const;
  absl::StatusOr<EventFd> Duplicate() const;

  const UniqueFd& fd() const { return fd_; }

 private:
  explicit EventFd(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_EVENT_FD_H_
