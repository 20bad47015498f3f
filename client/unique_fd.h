// UniqueFd: sole ownership of a file descriptor, for the client library.
//
// Move-only; closes the fd on destruction. Not thread-safe: one owner at a time, like the fd
// itself. (The client keeps its own type so it depends on nothing under //daemon.)
#ifndef VFIOD_CLIENT_UNIQUE_FD_H_
#define VFIOD_CLIENT_UNIQUE_FD_H_

#include <unistd.h>

namespace vfiod::client {

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
  // The descriptor, still owned by this object.
  int get() const { return fd_; }

  // Gives up ownership without closing.
  [[nodiscard]] int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes the current fd (if any) and owns `fd`.
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace vfiod::client

#endif  // VFIOD_CLIENT_UNIQUE_FD_H_
