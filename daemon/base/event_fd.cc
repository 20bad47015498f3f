#include "daemon/base/event_fd.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "daemon/base/errno_status.h"

namespace vfiod {

absl::StatusOr<EventFd> EventFd::Create() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, "eventfd");
  return EventFd(UniqueFd(fd));
}

absl::StatusOr<EventFd> EventFd::Adopt(UniqueFd fd) {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "fstat(eventfd)");
  // Anonymous inodes carry no file type bits.
  if ((st.st_mode & S_IFMT) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an eventfd: file type 0", absl::Hex(st.st_mode & S_IFMT)));
  }
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) return ErrnoError(errno, "fcntl(F_GETFL)");
  if ((flags & O_ACCMODE) != O_RDWR) {
    return absl::InvalidArgumentError("not an eventfd: not open for reading and writing");
  }
  if ((flags & O_NONBLOCK) == 0 && ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoError(errno, "fcntl(F_SETFL, O_NONBLOCK)");
  }
  const uint64_t zero = 0;
  if (::write(fd.get(), &zero, sizeof(zero)) != sizeof(zero)) {
    return absl::InvalidArgumentError("not an eventfd: it refuses an 8-byte counter write");
  }
  return EventFd(std::move(fd));
}

absl::Status EventFd::Signal() const {
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
  while (true) {
    ssize_t n = ::read(fd_.get(), &value, sizeof(value));
    if (n == sizeof(value)) return value;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    return ErrnoError(errno, "read(eventfd)");
  }
}

absl::StatusOr<EventFd> EventFd::Duplicate() const {
  absl::StatusOr<UniqueFd> fd = fd_.Duplicate();
  if (!fd.ok()) return fd.status();
  return EventFd(*std::move(fd));
}

}  // namespace vfiod
