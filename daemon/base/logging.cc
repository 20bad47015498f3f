#include "daemon/base/logging.h"

#include <limits.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace vfiod {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

bool Printable(unsigned char c) { return c >= 0x20 && c < 0x7f; }

void AppendValue(std::string* out, absl::string_view value) {
  bool quote = value.empty();
  for (unsigned char c : value) {
    if (!Printable(c) || c == ' ' || c == '"' || c == '=' || c == '\\') quote = true;
  }
  if (!quote) {
    out->append(value.data(), value.size());
    return;
  }
  out->push_back('"');
  for (unsigned char c : value) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '\t') {
      out->append("\\t");
    } else if (!Printable(c)) {
      absl::StrAppend(out, absl::StrFormat("\\x%02x", c));
    } else {
      out->push_back(static_cast<char>(c));
    }
  }
  out->push_back('"');
}

void WriteLine(const std::string& line) {
  // One write per line keeps concurrent lines whole; a failed log write is not an error.
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

// The rate limit's state for one message.
struct Burst {
  int64_t second = -1;
  int lines = 0;
  uint64_t suppressed = 0;
};
// How long StopAsyncLogging() keeps writing what is queued to a stderr that takes nothing.
constexpr absl::Duration kStopFlushTime = absl::Seconds(1);

// Messages come from the code, not from peers, so this map stays small; past this many, new
// messages share one entry.
constexpr size_t kMaxRateKeys = 512;

class Logger {
 public:
  // The fields to add to this line ("suppressed=N"), or nullopt when it is held back.
  std::optional<uint64_t> Admit(absl::string_view message, int64_t second) {
    absl::MutexLock lock(&mu_);
    std::string key(message);
    if (bursts_.size() >= kMaxRateKeys && bursts_.count(key) == 0) key = "";
    Burst& burst = bursts_[key];
    if (burst.second != second) {
      burst.second = second;
      burst.lines = 0;
    }
    if (++burst.lines > kLogBurst) {
      ++burst.suppressed;
      ++suppressed_;
      return std::nullopt;
    }
    return std::exchange(burst.suppressed, 0);
  }

  // Queues the line for the writer thread, or, when there is none (before the daemon's jail,
  // after stopping), writes it at once if stderr takes it without waiting and otherwise drops
  // and counts it: a stderr that is already full (a pipe its reader never drains) must not
  // keep the daemon from starting.
  void Emit(std::string line) {
    if (!Enqueue(line)) WriteDirect(std::move(line));
  }

  // False when there is no writer thread.
  bool Enqueue(std::string& line) {
    absl::MutexLock lock(&mu_);
    if (!running_) return false;
    if (queued_bytes_ + line.size() > kLogQueueBytes) {
      ++dropped_;
      ++dropped_unreported_;
      return true;
    }
    queued_bytes_ += line.size();
    queue_.push_back(std::move(line));
    return true;
  }

  void WriteDirect(std::string line) {
    absl::MutexLock lock(&mu_);  // one direct line at a time, and the counters
    struct pollfd wait = {STDERR_FILENO, POLLOUT, 0};
    if (::poll(&wait, 1, 0) == 0) {
      ++dropped_;
      ++dropped_unreported_;
      return;
    }
    if (dropped_unreported_ > 0) {
      line.pop_back();  // the newline
      absl::StrAppend(&line, " dropped=", std::exchange(dropped_unreported_, 0), "\n");
    }
    // A pipe that polls writable takes PIPE_BUF bytes at once; a longer line is cut there
    // rather than risk waiting for the rest.
    if (line.size() > PIPE_BUF) {
      line.resize(PIPE_BUF - 4);
      line.append("...\n");
    }
    WriteLine(line);
  }

  void Start() {
    absl::MutexLock lock(&mu_);
    if (running_) return;
    running_ = true;
    stopping_ = false;
    thread_ = std::thread([this] { Run(); });
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (!running_) return;
      stopping_ = true;
      give_up_at_ = absl::Now() + kStopFlushTime;
    }
    thread_.join();
    absl::MutexLock lock(&mu_);
    running_ = false;
  }

  LogCounters Counters() {
    absl::MutexLock lock(&mu_);
    return LogCounters{dropped_, suppressed_};
  }

 private:
  void Run() {
    while (true) {
      std::string line;
      uint64_t dropped = 0;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Logger* l)
                 ABSL_NO_THREAD_SAFETY_ANALYSIS { return !l->queue_.empty() || l->stopping_; },
            this));
        if (queue_.empty()) return;
        line = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= line.size();
        dropped = std::exchange(dropped_unreported_, 0);
      }
      if (dropped > 0) {
        line.pop_back();  // the newline
        absl::StrAppend(&line, " dropped=", dropped, "\n");
      }
      if (!WaitWritable()) return;  // stopping, and stderr took nothing: the rest is dropped
      WriteLine(line);
    }
  }

  // Waits until stderr takes data; false once stopping and kStopFlushTime has passed, so that
  // a stderr nobody drains cannot hold up the daemon's exit.
  bool WaitWritable() {
    while (true) {
      struct pollfd wait = {STDERR_FILENO, POLLOUT, 0};
      int n = ::poll(&wait, 1, 100);
      if (n != 0) return true;  // writable, or an error the write will meet
      absl::MutexLock lock(&mu_);
      if (stopping_ && absl::Now() > give_up_at_) return false;
    }
  }

  absl::Mutex mu_;
  std::map<std::string, Burst> bursts_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_unreported_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time give_up_at_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

Logger& TheLogger() {
  static Logger* const logger = new Logger();
  return *logger;
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (text == LevelName(l)) {
      *level = l;
      return true;
    }
  }
  return false;
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void Log(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  std::optional<uint64_t> suppressed = TheLogger().Admit(message, now.tv_sec);
  if (!suppressed.has_value()) return;
  struct tm utc;
  gmtime_r(&now.tv_sec, &utc);
  std::string line = absl::StrFormat(
      "ts=%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ level=%s msg=", utc.tm_year + 1900, utc.tm_mon + 1,
      utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, now.tv_nsec / 1000, LevelName(level));
  AppendValue(&line, message);
  for (const LogField& field : fields) {
    absl::StrAppend(&line, " ", field.first, "=");
    AppendValue(&line, field.second);
  }
  if (*suppressed > 0) absl::StrAppend(&line, " suppressed=", *suppressed);
  line.push_back('\n');
  TheLogger().Emit(std::move(line));
}

void StartAsyncLogging() { TheLogger().Start(); }

void StopAsyncLogging() { TheLogger().Stop(); }

LogCounters GetLogCounters() { return TheLogger().Counters(); }

}  // namespace vfiod
