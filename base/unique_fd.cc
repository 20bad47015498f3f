#include "base/unique_fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "base/errno_status.h"

namespace vfiod {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0 && fd_ != fd) {
    // close() always releases the descriptor on Linux, even when it reports EINTR.
    ::close(fd_);
  }
  fd_ = fd;
}

absl::StatusOr<UniqueFd> UniqueFd::Duplicate() const {
  int fd = ::fcntl(fd_, F_DUPFD_CLOEXEC, static_cast<long>(kMinDuplicateFd));
  if (fd < 0) return ErrnoError(errno, "fcntl(F_DUPFD_CLOEXEC)");
  return UniqueFd(fd);
}

}  // namespace vfiod
