// Counting the fds of a test process, for leak checks.
#ifndef VFIOD_DAEMON_BASE_FD_COUNT_FOR_TEST_H_
#define VFIOD_DAEMON_BASE_FD_COUNT_FOR_TEST_H_

#include <dirent.h>
#include <string.h>

#include <cerrno>

#include "gtest/gtest.h"

namespace vfiod::testing {

// The number of fds open in this process, listed from /proc/self/fd. A leak check compares two
// counts, and two failed counts would compare equal: where /proc/self/fd cannot be listed (no
// procfs), this records a test failure naming the reason and returns -1.
inline int CountOpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    const int error = errno;
    ADD_FAILURE() << "cannot count open fds for a leak check: opendir(/proc/self/fd): "
                  << ::strerror(error) << " (the fd-leak checks need procfs at /proc)";
    return -1;
  }
  int count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - 1;  // the directory stream's own fd
}

}  // namespace vfiod::testing

#endif  // VFIOD_DAEMON_BASE_FD_COUNT_FOR_TEST_H_
