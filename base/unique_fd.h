// UniqueFd: sole ownership of a file descriptor.
//
// Every fd in vfiod, the daemon's and the client library's, is owned by a UniqueFd (or a type
// holding one). Move-only; closes on destruction. Not thread-safe: one owner at a time, like
// the fd itself.
#ifndef VFIOD_BASE_UNIQUE_FD_H_
#define VFIOD_BASE_UNIQUE_FD_H_

#include "absl/status/statusor.h"

namespace vfiod {

// Duplicate() never returns a number below this one. The numbers below are the jail's fixed fd
// layout (seccomp/fd_layout.h): the seccomp policy allows fcntl(F_DUPFD_CLOEXEC) only with
// exactly this minimum, so no duplicate can land on the number of a kept fd (e.g. a VFIO fd,
// whose ioctls the policy allows by fd number).
inline constexpr int kMinDuplicateFd = 16;

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (-1 for none).
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  // The descriptor, still owned by this object. For the system call at hand only.
  int get() const { return fd_; }

  // Gives up ownership without closing.
  [[nodiscard]] int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes the current fd (if any) and owns `fd`.
  void Reset(int fd = -1);

  // A new fd for the same open file description (F_DUPFD_CLOEXEC), numbered at least
  // kMinDuplicateFd.
  absl::StatusOr<UniqueFd> Duplicate() const;

 private:
  int fd_ = -1;
};

}  // namespace vfiod

#endif  // VFIOD_BASE_UNIQUE_FD_H_
