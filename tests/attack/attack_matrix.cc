// The attack matrix (a figure, not a test: it asserts nothing about time): for each attack of
// the hardening issue, a fresh daemon on the simulated edu device (jailed, under its seccomp
// policy, as in every test), the owner's workflow once with no attack (the baseline, same run),
// then the attack, the owner's workflow again while it runs, and the attack stopped. One line
// per attack: PASS when every call of both owner workflows succeeded and the daemon still runs; the
// owner's failed calls; its BAR0 ReadRegion p50/p99 under attack next to the baseline's, as ratios.
// Ends with "N/M pass".
//
//   bazel build //daemon:vfiod //tests/attack:attack_matrix && tools/figures/attack_matrix.sh
//   tools/figures/attack_matrix.sh --rows=window0,observer-calls --bar_reads=500
//
// Flags: --rows (default: every row), --bar_reads, --irq_triggers, --call_timeout, --resets
// (the concurrent Resets of the reset-burst row, whose device is sim:edu,reset),
// --settle (how long an attack runs before the owner starts), --daemon_log (the daemons' logs; the
// log-flood row's daemon writes its log into a pipe nobody reads instead), --vfiod (the daemon
// binary). Unpinned: the attack and the owner share the machine's CPUs, so ratios swing between
// runs (tools/bench.sh measures latency pinned).
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
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

struct Row {
  std::string name;
  std::string item;  // the item
  AttackFunction attack;
  bool undrained_log = false;  // the daemon's stderr is a pipe nobody reads
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
       /*undrained_log=*/false, /*reset_burst=*/true},
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
       /*undrained_log=*/true},
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

// The daemon's log for one row: the --daemon_log file, or the write end of a pipe whose read end
// (`*unread`) is kept open and never read.
absl::StatusOr<UniqueFd> DaemonLog(bool undrained, UniqueFd* unread) {
  if (undrained) {
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
    unread->Reset(ends[0]);
    return UniqueFd(ends[1]);
  }
  UniqueFd file(::open(absl::GetFlag(FLAGS_daemon_log).c_str(),
                       O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!file.valid()) {
    return absl::InternalError(absl::StrCat("open ", absl::GetFlag(FLAGS_daemon_log)));
  }
  return file;
}

// Runs one row; true when it passed.
bool RunRow(const Row& row, OwnerWorkflowOptions options) {
  std::vector<std::string> args;
  if (row.reset_burst) {
    args.push_back("--device=sim:edu,reset");
    options.concurrent_resets = absl::GetFlag(FLAGS_resets);
  }
  UniqueFd unread;
  absl::StatusOr<UniqueFd> log = DaemonLog(row.undrained_log, &unread);
  if (!log.ok()) {
    std::printf("ERROR %-20s %s\n", row.name.c_str(), std::string(log.status().message()).c_str());
    return false;
  }
  absl::StatusOr<std::unique_ptr<testing::DaemonProcess>> daemon =
      testing::DaemonProcess::Start(args, *log);
  log->Reset();
  if (!daemon.ok()) {
    std::printf("ERROR %-20s daemon: %s\n", row.name.c_str(), daemon.status().ToString().c_str());
    return false;
  }
  const AttackTarget target{(*daemon)->socket_path(), (*daemon)->vfio_user_path()};
  const OwnerWorkflowResult baseline = RunOwnerWorkflow(target.socket_path, options);

  RunningAttack attack(row.attack, target);
  const absl::Status ready = attack.WaitReady(absl::Seconds(15));
  absl::SleepFor(absl::GetFlag(FLAGS_settle));
  const OwnerWorkflowResult under = RunOwnerWorkflow(target.socket_path, options);
  const AttackReport& report = attack.Stop();
  const bool alive = (*daemon)->Running();

  const bool mounted = ready.ok() && report.status.ok();
  // The owner's calls must all succeed, under the attack and in the same daemon before it.
  const bool pass = mounted && alive && under.failed() == 0 && baseline.failed() == 0;
  const char* verdict = !mounted ? "ERROR" : pass ? "PASS" : "FAIL";
  const absl::Duration base50 = Quantile(baseline.bar_read_latencies, 0.5);
  const absl::Duration base99 = Quantile(baseline.bar_read_latencies, 0.99);
  const absl::Duration p50 = Quantile(under.bar_read_latencies, 0.5);
  const absl::Duration p99 = Quantile(under.bar_read_latencies, 0.99);
  std::printf(
      "%-5s %-20s item %-7s owner failed %3d/%-3d (no attack %2d/%-3d)  ReadRegion p50/p99 "
      "%6.0f/%-6.0f us (no attack %4.0f/%-5.0f us)  ratio %s/%s\n",
      verdict, row.name.c_str(), row.item.c_str(), under.failed(), under.calls(), baseline.failed(),
      baseline.calls(), Micros(p50), Micros(p99), Micros(base50), Micros(base99),
      Ratio(p50, base50).c_str(), Ratio(p99, base99).c_str());
  std::printf("      attack: %s\n", report.summary.c_str());
  if (!ready.ok()) std::printf("      attack not in place: %s\n", ready.ToString().c_str());
  if (!report.status.ok())
    std::printf("      attack error: %s\n", report.status.ToString().c_str());
  if (!alive) std::printf("      the daemon is gone\n");
  if (int unread_bytes = 0; unread.valid() && ::ioctl(unread.get(), FIONREAD, &unread_bytes) == 0) {
    std::printf("      the daemon's stderr: a pipe nobody read, holding %d bytes (capacity %d)\n",
                unread_bytes, ::fcntl(unread.get(), F_GETPIPE_SZ));
  }
  if (under.failed() > 0) {
    std::printf("      owner under attack: %s; first failure: %s\n", under.StepSummary().c_str(),
                under.FirstFailure().c_str());
  }
  if (baseline.failed() > 0) {
    std::printf("      owner with no attack (baseline) failed: %s; first failure: %s\n",
                baseline.StepSummary().c_str(), baseline.FirstFailure().c_str());
  }
  std::fflush(stdout);
  return pass;
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
