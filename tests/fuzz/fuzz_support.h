// What the fuzz targets share: failure reporting with the trace of the current input, fd
// counting for leak checks, and the kinds of fds a hostile client can send.
//
// Not thread-safe: a fuzz target runs one input at a time, and only its harness thread calls
// these.
#ifndef VFIOD_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define VFIOD_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/base/unique_fd.h"

namespace vfiod::fuzz {

// The target's name, printed with every failure ("<name> invariant violated").
void SetTargetName(const char* name);
// The steps of the current input, printed with a failure; nullptr for none. Not owned.
void SetTrace(const std::vector<std::string>* trace);

// Prints the broken rule, `message` and the trace, then aborts (libFuzzer records the input).
[[noreturn]] void Fail(int line, const char* condition, const std::string& message);

#define FUZZ_CHECK(cond, ...)                                                       \
  do {                                                                              \
    if (!(cond)) ::vfiod::fuzz::Fail(__LINE__, #cond, ::absl::StrCat(__VA_ARGS__)); \
  } while (0)

// The number of open fds of this process, from /proc/self/fd; fails the input (Fail) where that
// cannot be listed, since two failed counts would hide a leak.
int CountFds();
// Waits (up to 2 s) for the fd count to come back to `expected`, then checks it: the simulated
// device's worker drops its copy of an INTx unmask eventfd only when it next wakes.
void ExpectFdCount(int expected, const char* when);

// Quiets logging for a target whose inputs are hostile by design: the daemon's log below
// errors, and libprotobuf's messages (mutated inputs often hold invalid UTF-8 in string fields)
// not at all. Call once, from the target's first input.
void QuietLogs(const char* target_name);

// The body of a proto-driven target's LLVMFuzzerTestOneInput: parses `data` as an `Input`
// (-1 when it is not one, which keeps it out of libFuzzer's corpus), runs a fresh `Harness` on
// it, and checks that no fd outlived the harness.
template <typename Input, typename Harness>
int RunProtoInput(const char* target_name, const uint8_t* data, size_t size) {
  static const bool quiet = (QuietLogs(target_name), true);
  (void)quiet;
  Input input;
  if (!input.ParseFromArray(data, static_cast<int>(size))) return -1;
  const int fds_before = CountFds();
  {
    Harness harness;
    harness.Run(input);
  }
  ExpectFdCount(fds_before, "after the device was destroyed");
  return 0;
}

// A memfd of `size` bytes with `seals` added (0 for none); invalid if the kernel refused.
UniqueFd MakeMemfd(uint64_t size, int seals);
// An fd that is not an eventfd, by `kind` modulo 8 (pipe ends, memfd, timerfd, epoll,
// signalfd, /dev/null), or an invalid one for kind 7.
UniqueFd MakeNonEventfd(uint8_t kind);

}  // namespace vfiod::fuzz

#endif  // VFIOD_TESTS_FUZZ_FUZZ_SUPPORT_H_
