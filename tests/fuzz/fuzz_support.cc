#include "tests/fuzz/fuzz_support.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "daemon/base/logging.h"
#include "google/protobuf/stubs/logging.h"

namespace vfiod::fuzz {

void QuietLogs(const char* target_name) {
  SetLogLevel(LogLevel::kError);
  SetTargetName(target_name);
  google::protobuf::SetLogHandler(nullptr);
}
namespace {

const char* g_target_name = "fuzz target";
const std::vector<std::string>* g_trace = nullptr;

}  // namespace

void SetTargetName(const char* name) { g_target_name = name; }
void SetTrace(const std::vector<std::string>* trace) { g_trace = trace; }

void Fail(int line, const char* condition, const std::string& message) {
  std::fprintf(stderr, "\n*** %s invariant violated (line %d): %s\n    %s\n", g_target_name,
               line, condition, message.c_str());
  if (g_trace != nullptr) {
    std::fprintf(stderr, "    steps of this input:\n");
    for (const std::string& step : *g_trace) std::fprintf(stderr, "      %s\n", step.c_str());
  }
  std::fflush(stderr);
  std::abort();
}

int CountFds() {
  int count = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  FUZZ_CHECK(dir != nullptr, "cannot count open fds for the leak checks: opendir(/proc/self/fd): ",
             std::strerror(errno), " (they need procfs at /proc)");
  while (struct dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - 1;  // the directory's own fd
}

void ExpectFdCount(int expected, const char* when) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  int now = CountFds();
  while (now != expected && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    now = CountFds();
  }
  FUZZ_CHECK(now == expected, when, ": ", now, " fds open, expected ", expected, " (leak)");
}

UniqueFd MakeMemfd(uint64_t size, int seals) {
  int fd = ::memfd_create("vfiod_fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return UniqueFd();
  UniqueFd out(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return UniqueFd();
  if (seals != 0 && ::fcntl(fd, F_ADD_SEALS, seals) != 0) return UniqueFd();
  return out;
}

UniqueFd MakeNonEventfd(uint8_t kind) {
  switch (kind % 8) {
    case 0: {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) return UniqueFd();
      ::close(p[1]);
      return UniqueFd(p[0]);
    }
    case 1: {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) return UniqueFd();
      ::close(p[0]);
      return UniqueFd(p[1]);  // writable: "adding 0" must not be mistaken for an eventfd
    }
    case 2:
      return MakeMemfd(4096, F_SEAL_SHRINK);
    case 3:
      return UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
    case 4:
      return UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    case 5: {
      sigset_t mask;
      sigemptyset(&mask);
      return UniqueFd(::signalfd(-1, &mask, SFD_CLOEXEC));
    }
    case 6:
      return UniqueFd(::open("/dev/null", O_RDWR | O_CLOEXEC));
    default:
      return UniqueFd();
  }
}

}  // namespace vfiod::fuzz
