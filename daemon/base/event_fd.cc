#include "daemon/base/event_fd.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

#include "absl/base/const_init.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "daemon/base/errno_status.h"

namespace vfiod {
namespace {

struct InodeId {
  dev_t dev;
  ino_t ino;
};

// The kernel's one anonymous inode, which every eventfd shares (with timerfd, signalfd, epoll,
// ...), taken from an eventfd of the daemon's own the first time it succeeds, then remembered
// (a failure, e.g. EMFILE, is not: the next call tries again).
absl::StatusOr<InodeId> AnonymousInode() {
  ABSL_CONST_INIT static absl::Mutex mu(absl::kConstInit);
  static std::optional<InodeId> known ABSL_GUARDED_BY(mu);
  absl::MutexLock lock(&mu);
  if (known.has_value()) return *known;
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, "eventfd");
  UniqueFd own(fd);
  struct stat st;
  if (::fstat(own.get(), &st) != 0) return ErrnoError(errno, "fstat(own eventfd)");
  known = InodeId{st.st_dev, st.st_ino};
  return *known;
}

}  // namespace

absl::StatusOr<EventFd> EventFd::Create() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, "eventfd");
  return EventFd(UniqueFd(fd), /*adopted=*/false);
}

absl::StatusOr<EventFd> EventFd::Adopt(UniqueFd fd) {
  absl::StatusOr<InodeId> anonymous = AnonymousInode();
  if (!anonymous.ok()) return anonymous.status();
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "fstat(eventfd)");
  if (st.st_dev != anonymous->dev || st.st_ino != anonymous->ino) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an eventfd: not on the anonymous inode (file type 0",
                     absl::Hex(st.st_mode & S_IFMT), ")"));
  }
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) return ErrnoError(errno, "fcntl(F_GETFL)");
  if ((flags & O_ACCMODE) != O_RDWR) {
    return absl::InvalidArgumentError("not an eventfd: not open for reading and writing");
  }
  // Never blocks on an eventfd, whatever its flags: adding 0 always fits.
  const uint64_t zero = 0;
  if (::write(fd.get(), &zero, sizeof(zero)) != sizeof(zero)) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an eventfd: it refuses an 8-byte counter write (",
                     ErrnoError(errno, "write").message(), ")"));
  }
  return EventFd(std::move(fd), /*adopted=*/true);
}

absl::Status EventFd::Signal() const {
  if (adopted_) {
    struct pollfd room = {fd_.get(), POLLOUT, 0};
    int ready;
    do {
      ready = ::poll(&room, 1, 0);
    } while (ready < 0 && errno == EINTR);
    if (ready < 0) return ErrnoError(errno, "poll(eventfd)");
    // No POLLOUT: the counter is at its maximum and the interrupt is coalesced.
    if ((room.revents & POLLOUT) == 0) return absl::OkStatus();
  }
  const uint64_t one = 1;
  while (true) {
    ssize_t n = ::write(fd_.get(), &one, sizeof(one));
    if (n == sizeof(one)) return absl::OkStatus();
    if (n < 0 && errno == EINTR) continue;
    // EAGAIN: the counter is at its maximum; the interrupt is coalesced into the pending ones.
    if (n < 0 && errno == EAGAIN) return absl::OkStatus();
    return ErrnoError(errno, "write(eventfd)");
  }
}

absl::StatusOr<uint64_t> EventFd::Read() const {
  uint64_t value = 0;
  struct iovec buffer = {&value, sizeof(value)};
  while (true) {
    // Offset -1: the file position, as read() (an eventfd has none to speak of).
    ssize_t n = adopted_ ? ::preadv2(fd_.get(), &buffer, 1, -1, RWF_NOWAIT)
                         : ::read(fd_.get(), &value, sizeof(value));
    if (n == sizeof(value)) return value;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    return ErrnoError(errno, adopted_ ? "preadv2(eventfd, RWF_NOWAIT)" : "read(eventfd)");
  }
}

absl::StatusOr<EventFd> EventFd::Duplicate() const {
  absl::StatusOr<UniqueFd> fd = fd_.Duplicate();
  if (!fd.ok()) return fd.status();
  return EventFd(*std::move(fd), adopted_);
}

}  // namespace vfiod
