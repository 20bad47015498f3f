// Helpers shared by the transport tests: short socket paths, fd counting
// (daemon/base/fd_count_for_test.h), bounded waits.
#ifndef VFIOD_DAEMON_TRANSPORT_TEST_UTIL_H_
#define VFIOD_DAEMON_TRANSPORT_TEST_UTIL_H_

#include <dirent.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "daemon/base/fd_count_for_test.h"
#include "daemon/base/unique_fd.h"

namespace vfiod::testing {

// A fresh directory under /tmp (TEST_TMPDIR paths are too long for sun_path), removed with
// everything in it on destruction. Where it cannot be made, ok() is false and error() says why.
class ShortTempDir {
 public:
  ShortTempDir() {
    char pattern[] = "/tmp/vfiodt.XXXXXX";
    const char* made = ::mkdtemp(pattern);
    if (made != nullptr) {
      path_ = made;
    } else {
      error_ = absl::StrCat("mkdtemp(/tmp/vfiodt.XXXXXX): ", ::strerror(errno),
                            " (UNIX sockets need a short path: /tmp must be writable)");
    }
  }
  ~ShortTempDir() {
    if (path_.empty()) return;
    if (DIR* dir = ::opendir(path_.c_str())) {
      while (dirent* entry = ::readdir(dir)) {
        std::string name = entry->d_name;
        if (name == "." || name == "..") continue;
        ::unlink(absl::StrCat(path_, "/", name).c_str());
      }
      ::closedir(dir);
    }
    ::rmdir(path_.c_str());
  }
  bool ok() const { return !path_.empty(); }
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
  std::string error_;
};

// True when `fd` becomes readable (or hung up) within `timeout`.
inline bool WaitReadable(const UniqueFd& fd, absl::Duration timeout) {
  pollfd p{fd.get(), POLLIN, 0};
  int n = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  return n == 1;
}

}  // namespace vfiod::testing

#endif  // VFIOD_DAEMON_TRANSPORT_TEST_UTIL_H_
