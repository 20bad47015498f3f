#include "daemon/base/logging.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

// Points stderr at a pipe for the test's length.
class CapturedStderr {
 public:
  CapturedStderr() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    read_ = fds[0];
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[1]);
  }
  ~CapturedStderr() {
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    ::close(read_);
  }
  // Everything written so far (the pipe is read without blocking).
  std::string Drain() {
    std::string out;
    char buffer[65536];
    int flags = ::fcntl(read_, F_GETFL);
    ::fcntl(read_, F_SETFL, flags | O_NONBLOCK);
    ssize_t n;
    while ((n = ::read(read_, buffer, sizeof(buffer))) > 0) out.append(buffer, n);
    ::fcntl(read_, F_SETFL, flags);
    return out;
  }

 private:
  int read_ = -1;
  int saved_ = -1;
};

TEST(LoggingTest, ValuesAreEscapedSoNoPeerByteForgesALineOrAField) {
  CapturedStderr err;
  LogInfo("peer said", {{"value", std::string("a\"b\\c\nlevel=error\x01\xff")}});
  std::string out = err.Drain();
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find(R"(value="a\"b\\c\nlevel=error\x01\xff")"), std::string::npos) << out;
}

TEST(LoggingTest, RepeatedLinesAreRateLimitedAndTheCountIsReported) {
  CapturedStderr err;
  const uint64_t before = GetLogCounters().suppressed;
  for (int i = 0; i < 100; ++i) LogInfo("rate limited line", {{"i", absl::StrCat(i)}});
  absl::SleepFor(absl::Seconds(1.1));
  LogInfo("rate limited line", {{"i", "last"}});
  std::string out = err.Drain();
  int lines = 0;
  uint64_t reported = 0;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    ++lines;
    size_t at = line.find("suppressed=");
    if (at != absl::string_view::npos) {
      uint64_t n = 0;
      ASSERT_TRUE(absl::SimpleAtoi(line.substr(at + 11), &n)) << line;
      reported += n;
    }
  }
  EXPECT_LE(lines, 3 * kLogBurst) << "100 lines in a second were not limited";
  EXPECT_EQ(lines + reported, 101u) << "every line is written or counted in a later one\n" << out;
  EXPECT_EQ(GetLogCounters().suppressed - before, reported);
}

TEST(LoggingTest, AStderrNobodyReadsNeverBlocksLogAndLossesAreCounted) {
  CapturedStderr err;
  StartAsyncLogging();
  const uint64_t dropped_before = GetLogCounters().dropped;
  const std::string padding(200, 'p');
  // Distinct messages, so the rate limit does not hold them back: far more than the pipe (64
  // KiB) and the queue together. Nobody reads the pipe meanwhile.
  for (int round = 0; round < kLogBurst; ++round) {
    for (int message = 0; message < 200; ++message) {
      LogInfo(absl::StrCat("flood ", message), {{"padding", padding}});
    }
  }
  EXPECT_GT(GetLogCounters().dropped, dropped_before) << "Log() must drop, never wait";
  // Reading unblocks the writer, whose next line reports the loss.
  std::string out;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (out.find("dropped=") == std::string::npos && absl::Now() < deadline) {
    out += err.Drain();
    LogInfo("after the flood");
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_NE(out.find("dropped="), std::string::npos);
  // Stopping does not hang on a stderr nobody reads any more.
  for (int message = 0; message < 400; ++message) {
    LogInfo(absl::StrCat("flood ", message), {{"padding", padding}});
  }
  StopAsyncLogging();
}

TEST(LoggingTest, BeforeTheWriterThreadAFullStderrDropsLinesInsteadOfBlocking) {
  CapturedStderr err;
  // Fill the pipe behind stderr to the last byte, through a descriptor of its own that may
  // fail instead of waiting (stderr's own description stays blocking, as a VMM's pipe would be).
  const std::string path = absl::StrCat("/proc/self/fd/", STDERR_FILENO);
  int filler = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(filler, 0);
  const std::string chunk(4096, 'f');
  while (::write(filler, chunk.data(), chunk.size()) > 0) {
  }
  while (::write(filler, "f", 1) > 0) {
  }
  ::close(filler);
  const uint64_t dropped_before = GetLogCounters().dropped;
  const absl::Time start = absl::Now();
  LogInfo("into a full stderr");  // no writer thread: the direct path
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "Log() waited for a full stderr";
  EXPECT_EQ(GetLogCounters().dropped, dropped_before + 1);
  // Once there is room, the next line goes out and reports the loss.
  std::string out = err.Drain();
  LogInfo("after room is made");
  out += err.Drain();
  const size_t line = out.find("msg=\"after room is made\"");
  ASSERT_NE(line, std::string::npos) << out.substr(out.size() > 300 ? out.size() - 300 : 0);
  EXPECT_NE(out.find("dropped=1", line), std::string::npos);
}

}  // namespace
}  // namespace vfiod
