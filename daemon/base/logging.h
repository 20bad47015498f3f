// Structured logging to stderr, one logfmt line per event:
//   ts=2026-11-21T05:40:01.123456Z level=info msg="serving" socket=/run/vfiod.sock
//
// Logging never blocks serving: once StartAsyncLogging() has run (after the daemon's jail),
// Log() only formats the line and queues it (a bounded queue, kLogQueueBytes); a writer thread
// writes it with a single write(2). A VMM that spawns vfiod and never drains its stderr stalls
// only that thread: lines that find the queue full are dropped and counted, and the next line
// written says how many were lost ("dropped=N"). Before StartAsyncLogging(), and after
// StopAsyncLogging(), Log() writes directly, but only when stderr takes the line without
// waiting (poll); otherwise the line is dropped and counted the same way, so a stderr that is
// full from the start (a pipe nobody drains) cannot keep the daemon from starting or exiting.
//
// Repeated lines are rate-limited: at most kLogBurst lines with the same message per second;
// the rest are counted and the next line of that message that is written carries
// "suppressed=N". Values are escaped: a quote, a backslash, control characters and bytes
// outside printable ASCII are written as \", \\, \n, \t or \xNN, so a peer's bytes cannot
// forge a line or a field.
//
// Thread-safety: every function is thread-safe.
#ifndef VFIOD_DAEMON_BASE_LOGGING_H_
#define VFIOD_DAEMON_BASE_LOGGING_H_

#include <initializer_list>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>

namespace vfiod {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Events below `level` are dropped. Default kInfo.
void SetLogLevel(LogLevel level);
// Parses "debug", "info", "warning", "error"; false for anything else.
bool ParseLogLevel(absl::string_view text, LogLevel* level);
bool LogEnabled(LogLevel level);

using LogField = std::pair<absl::string_view, std::string>;

// Writes (or queues) one event. Field values are quoted when they contain spaces, quotes or '='.
void Log(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields = {});

inline constexpr size_t kLogQueueBytes = 256 * 1024;
inline constexpr int kLogBurst = 20;

// Starts the writer thread (see the file comment). Call once threads may exist.
void StartAsyncLogging();
// Writes what is queued and stops the writer; later lines are written directly. A stderr that
// takes nothing for a second has the rest dropped, so stopping never hangs on it.
void StopAsyncLogging();

struct LogCounters {
  uint64_t dropped = 0;     // lines lost to a full queue
  uint64_t suppressed = 0;  // lines held back by the rate limit
};
LogCounters GetLogCounters();

inline void LogDebug(absl::string_view m, std::initializer_list<LogField> f = {}) {
  if (LogEnabled(LogLevel::kDebug)) Log(LogLevel::kDebug, m, f);
}
inline void LogInfo(absl::string_view m, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kInfo, m, f);
}
inline void LogWarning(absl::string_view m, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kWarning, m, f);
}
inline void LogError(absl::string_view m, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kError, m, f);
}

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_LOGGING_H_
