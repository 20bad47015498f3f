// Waiting for an interrupt on an eventfd the test handed to vfiod, for the multi-process and
// lab tests.
#ifndef VFIOD_TESTS_EVENTFD_WAIT_H_
#define VFIOD_TESTS_EVENTFD_WAIT_H_

#include <poll.h>
#include <unistd.h>

#include <cstdint>

#include "absl/time/time.h"

namespace vfiod::testing {

// Waits up to `timeout` for `eventfd` to become readable and reads it: returns the counter (the
// interrupts since the last read), or 0 if it never became readable. Blocks the caller.
inline uint64_t ReadEventfdWithin(int eventfd, absl::Duration timeout) {
  struct pollfd p = {eventfd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) != 1) return 0;
  uint64_t count = 0;
  return ::read(eventfd, &count, sizeof(count)) == sizeof(count) ? count : 0;
}

}  // namespace vfiod::testing

#endif  // VFIOD_TESTS_EVENTFD_WAIT_H_
