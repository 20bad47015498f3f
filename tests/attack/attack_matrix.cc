// The attack matrix (a figure, not a test: it asserts nothing about time): for each attack of
// the hardening issue, a fresh daemon on the simulated edu device (jailed, under its seccomp
// policy, as in every test), the owner's workflow once with no attack (the baseline, same run),
// then the attack, the owner's workflow again while it runs, and the attack stopped. One line
// per attack: PASS when every call of both owner workflows succeeded and the daemon still runs; the
// owner's failed calls; its BAR0 ReadRegion p50/p99 under attack next to the baseline's, as ratios.
// Ends with "N/M pass".
//
//   tools/figures/attack_matrix.sh        # builds //daemon:vfiod and this binary, runs every row
//   tools/figures/attack_matrix.sh --rows=window0,observer-calls --bar_reads=500
//
// Flags: --rows (default: every row), --bar_reads, --irq_triggers, --call_timeout, --resets
// (the concurrent Resets of the reset-burst row, whose device is sim:edu,reset),
// --settle (how long an attack runs before the owner starts), --daemon_log (the daemons' logs; the
// log-flood row's daemon writes its log into a full pipe nobody reads instead), --vfiod (the daemon
// binary). Unpinned: the attack and the owner share the machine's CPUs, so ratios swing between
// runs (tools/bench.sh measures latency pinned).
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/errno_status.h"
#include "base/unique_fd.h"
#include "tests/attack/attacks.h"
#include "tests/attack/owner_workflow.h"
#include "tests/daemon_process.h"

ABSL_FLAG(std::string, rows, "", "Comma-separated rows to run (default: all); see --list.");
ABSL_FLAG(bool, list, false, "List the rows and exit.");
ABSL_FLAG(int, bar_reads, 200, "BAR0 reads in each owner workflow.");
ABSL_FLAG(int, irq_triggers, 50, "Interrupts the owner raises for WatchIrqs streams.");
ABSL_FLAG(absl::Duration, call_timeout, absl::Seconds(5),
          "Deadline of each owner call (and of its connect).");
ABSL_FLAG(int, resets, 50, "Concurrent Resets the owner makes in the reset-burst row.");
ABSL_FLAG(absl::Duration, settle, absl::Seconds(2.5),
          "How long an attack runs before the owner's workflow starts.");
ABSL_FLAG(std::string, daemon_log, "/tmp/attack_matrix.daemon.log",
          "File the daemons' logs are appended to.");
ABSL_FLAG(std::string, vfiod, "",
          "Path of the vfiod binary (default: $VFIOD_BINARY or the runfile).");

namespace vfiod::attack {
namespace {

// Where a row's daemon writes its log (its stderr).
enum class LogSink {
  kFile,             // the --daemon_log file
  kUnreadPipe,       // a pipe nobody reads, filled up once the daemon serves
  kFullPipeAtStart,  // a pipe nobody reads that is already full when the daemon starts
};

struct Row {
  std::string name;
  std::string item;  // the item
  AttackFunction attack;
  LogSink log = LogSink::kFile;
  // The owner's workflow ends with --resets concurrent Resets (the device: sim:edu,reset).
  bool reset_burst = false;
};

// A row without an attacker: in place at once, until stopped.
AttackFunction NoAttack(std::string summary) {
  return [summary](const AttackTarget&, AttackSignals& s) {
    s.ready.Notify();
    s.stop.WaitForNotification();
    return AttackReport{absl::OkStatus(), summary};
  };
}

std::vector<Row> Rows() {
  return {
      {"none", "control", NoAttack("no attack")},
      {"reset-burst", "1", NoAttack("no attacker: the owner's own burst of concurrent Resets"),
       LogSink::kFile, /*reset_burst=*/true},
      {"window0", "1",
       [](const AttackTarget& t, AttackSignals& s) {
         return WindowZeroCalls(t, WindowZeroOptions{1, 16}, s);
       }},
      {"window0-2conn", "1",
       [](const AttackTarget& t, AttackSignals& s) {
         return WindowZeroCalls(t, WindowZeroOptions{2, 32}, s);
       }},
      {"observer-calls", "1",
       [](const AttackTarget& t, AttackSignals& s) {
         return ManyObserverCalls(t, ObserverCallsOptions{2000}, s);
       }},
      {"unread-watch", "1",
       [](const AttackTarget& t, AttackSignals& s) { return UnreadIrqWatches(t, 8, s); }},
      {"connection-churn", "2,3",
       [](const AttackTarget& t, AttackSignals& s) { return ConnectionChurn(t, 8, s); }},
      {"silent-connections", "2",
       [](const AttackTarget& t, AttackSignals& s) {
         return HeldConnections(t, HeldKind::kSilentGrpc, 64, s);
       }},
      {"preface-only", "2",
       [](const AttackTarget& t, AttackSignals& s) {
         return HeldConnections(t, HeldKind::kPrefaceOnly, 64, s);
       }},
      {"unbound-fd-channels", "2",
       [](const AttackTarget& t, AttackSignals& s) {
         return HeldConnections(t, HeldKind::kUnboundFdChannel, 64, s);
       }},
      {"log-flood", "3", [](const AttackTarget& t, AttackSignals& s) { return LogFlood(t, 4, s); },
       LogSink::kUnreadPipe},
      // A VMM that never drains the stderr it gives vfiod, e.g. a second vfiod after a first one
      // filled it: the owner's workflow with no other attack.
      {"full-stderr-at-start", "3", NoAttack("no attacker: the daemon's stderr was full at start"),
       LogSink::kFullPipeAtStart},
      // 8 at a time, fewer than the daemon's gRPC threads: this row is about malformed bodies
      // (item 11), not the number of calls (item 1's rows).
      {"malformed-bodies", "11",
       [](const AttackTarget& t, AttackSignals& s) { return MalformedBodies(t, 8, s); }},
  };
}

double Micros(absl::Duration d) { return absl::ToDoubleMicroseconds(d); }

std::string Ratio(absl::Duration under, absl::Duration base) {
  if (base <= absl::ZeroDuration() || under <= absl::ZeroDuration()) return "-";
  return absl::StrFormat("%.2fx", absl::FDivDuration(under, base));
}

// Fills the pipe whose write end is `write_end` until it is full, through an open file
// description of its own that does not block (the daemon's keeps its flags).
absl::Status FillPipe(const UniqueFd& write_end) {
  UniqueFd own(::open(absl::StrCat("/proc/self/fd/", write_end.get()).c_str(),
                      O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (!own.valid()) return ErrnoError(errno, "open /proc/self/fd/N of the log pipe");
  const std::string filler(4096, '.');
  // Writes up to PIPE_BUF are all or nothing: smaller pieces fill the last page's rest.
  for (size_t piece : {4096, 512, 64, 1}) {
    while (::write(own.get(), filler.data(), piece) > 0) {
    }
    if (errno != EAGAIN) return ErrnoError(errno, "write to the log pipe");
  }
  return absl::OkStatus();
}

// The daemon's log for one row: the --daemon_log file, or the write end of a pipe whose read end
// (`*unread`) is kept open and never read.
absl::StatusOr<UniqueFd> DaemonLog(LogSink sink, UniqueFd* unread) {
  if (sink != LogSink::kFile) {
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe2");
    unread->Reset(ends[0]);
    return UniqueFd(ends[1]);
  }
  UniqueFd file(::open(absl::GetFlag(FLAGS_daemon_log).c_str(),
                       O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!file.valid())
    return ErrnoError(errno, absl::StrCat("open ", absl::GetFlag(FLAGS_daemon_log)));
  return file;
}

// What one row observed.
struct RowResult {
  OwnerWorkflowResult baseline;  // before the attack
  OwnerWorkflowResult under;     // during it
  absl::Status ready;
  AttackReport report;
  bool alive = false;
  int unread_log_bytes = -1;  // what the daemon's unread stderr pipe holds; -1: not a pipe
  int unread_log_capacity = 0;

  bool mounted() const { return ready.ok() && report.status.ok(); }
  // The owner's calls must all succeed, under the attack and in the same daemon before it.
  bool passed() const {
    return mounted() && alive && under.failed() == 0 && baseline.failed() == 0;
  }
};

void PrintRow(const Row& row, const RowResult& r) {
  const absl::Duration base50 = Quantile(r.baseline.bar_read_latencies, 0.5);
  const absl::Duration base99 = Quantile(r.baseline.bar_read_latencies, 0.99);
  const absl::Duration p50 = Quantile(r.under.bar_read_latencies, 0.5);
  const absl::Duration p99 = Quantile(r.under.bar_read_latencies, 0.99);
  std::printf(
      "%-5s %-20s item %-7s owner failed %3d/%-3d (no attack %2d/%-3d)  ReadRegion p50/p99 "
      "%6.0f/%-6.0f us (no attack %4.0f/%-5.0f us)  ratio %s/%s\n",
      !r.mounted() ? "ERROR"
      : r.passed() ? "PASS"
                   : "FAIL",
      row.name.c_str(), row.item.c_str(), r.under.failed(), r.under.calls(), r.baseline.failed(),
      r.baseline.calls(), Micros(p50), Micros(p99), Micros(base50), Micros(base99),
      Ratio(p50, base50).c_str(), Ratio(p99, base99).c_str());
  std::printf("      attack: %s\n", r.report.summary.c_str());
  if (!r.ready.ok()) std::printf("      attack not in place: %s\n", r.ready.ToString().c_str());
  if (!r.report.status.ok()) {
    std::printf("      attack error: %s\n", r.report.status.ToString().c_str());
  }
  if (!r.alive) std::printf("      the daemon is gone\n");
  if (r.unread_log_bytes >= 0) {
    std::printf(
        "      the daemon's stderr: a pipe nobody read, filled up once the daemon served; %d "
        "bytes in it at the end (capacity %d)\n",
        r.unread_log_bytes, r.unread_log_capacity);
  }
  if (r.under.failed() > 0) {
    std::printf("      owner under attack: %s; first failure: %s\n", r.under.StepSummary().c_str(),
                r.under.FirstFailure().c_str());
  }
  if (r.baseline.failed() > 0) {
    std::printf("      owner with no attack (baseline) failed: %s; first failure: %s\n",
                r.baseline.StepSummary().c_str(), r.baseline.FirstFailure().c_str());
  }
  std::fflush(stdout);
}

// Runs one row; true when it passed.
bool RunRow(const Row& row, OwnerWorkflowOptions options) {
  std::vector<std::string> args;
  if (row.reset_burst) {
    args.push_back("--device=sim:edu,reset");
    options.concurrent_resets = absl::GetFlag(FLAGS_resets);
  }
  UniqueFd unread;
  absl::StatusOr<UniqueFd> log = DaemonLog(row.log, &unread);
  if (!log.ok()) {
    std::printf("ERROR %-20s %s\n", row.name.c_str(), std::string(log.status().message()).c_str());
    return false;
  }
  absl::Status filled;
  if (row.log == LogSink::kFullPipeAtStart) filled = FillPipe(*log);
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
      testing::DaemonProcess::Start(args, *log);
  if (row.log == LogSink::kUnreadPipe && daemon.ok()) filled = FillPipe(*log);
  log->Reset();
  if (!filled.ok()) {
    std::printf("ERROR %-20s %s\n", row.name.c_str(), filled.ToString().c_str());
    return false;
  }
  if (!daemon.ok()) {  // it cannot serve the owner: a failure of the row, not of the matrix
    std::printf("FAIL  %-20s item %-7s the daemon did not start: %s\n", row.name.c_str(),
                row.item.c_str(), daemon.status().ToString().c_str());
    return false;
  }
  const AttackTarget target{(*daemon)->socket_path(), (*daemon)->vfio_user_path()};
  RowResult result;
  result.baseline = RunOwnerWorkflow(target.socket_path, options);
  RunningAttack attack(row.attack, target);
  result.ready = attack.WaitReady(absl::Seconds(15));
  absl::SleepFor(absl::GetFlag(FLAGS_settle));
  result.under = RunOwnerWorkflow(target.socket_path, options);
  result.report = attack.Stop();
  result.alive = (*daemon)->Running();
  if (unread.valid() && ::ioctl(unread.get(), FIONREAD, &result.unread_log_bytes) == 0) {
    result.unread_log_capacity = ::fcntl(unread.get(), F_GETPIPE_SZ);
  }
  PrintRow(row, result);
  return result.passed();
}

int Main() {
  const std::vector<Row> rows = Rows();
  if (absl::GetFlag(FLAGS_list)) {
    for (const Row& row : rows) std::printf("%s (item %s)\n", row.name.c_str(), row.item.c_str());
    return 0;
  }
  std::vector<std::string> wanted =
      absl::StrSplit(absl::GetFlag(FLAGS_rows), ',', absl::SkipEmpty());
  OwnerWorkflowOptions options;
  options.bar_reads = absl::GetFlag(FLAGS_bar_reads);
  options.irq_triggers = absl::GetFlag(FLAGS_irq_triggers);
  options.call_timeout = absl::GetFlag(FLAGS_call_timeout);
  std::printf(
      "attack matrix: owner workflow = connect, ClaimOwnership, BindFdChannel, RegisterMemory "
      "(sealed memfd), MapDma, WriteConfig, %d x ReadRegion BAR0, %d interrupts (reset-burst: "
      "then %d concurrent Resets); settle %s; daemon logs in %s\n",
      options.bar_reads, options.irq_triggers, absl::GetFlag(FLAGS_resets),
      absl::FormatDuration(absl::GetFlag(FLAGS_settle)).c_str(),
      absl::GetFlag(FLAGS_daemon_log).c_str());
  int run = 0, passed = 0;
  for (const Row& row : rows) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), row.name) == wanted.end()) {
      continue;
    }
    ++run;
    passed += RunRow(row, options) ? 1 : 0;
  }
  std::printf("%d/%d pass\n", passed, run);
  return passed == run ? 0 : 1;
}

}  // namespace
}  // namespace vfiod::attack

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (!absl::GetFlag(FLAGS_vfiod).empty()) {
    setenv("VFIOD_BINARY", absl::GetFlag(FLAGS_vfiod).c_str(), 1);
  }
  signal(SIGPIPE, SIG_IGN);
  return vfiod::attack::Main();
}
