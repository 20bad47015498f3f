// The owner's workflow, as a VMM runs it against a daemon in listen mode: connect, claim
// ownership, open and bind the fd channel, register a sealed memfd, map it for DMA, turn memory
// decode and bus mastering on, read BAR0 many times (a guest's trapped accesses), and optionally
// raise interrupts that WatchIrqs streams carry, and make a burst of concurrent device resets.
// Every call is counted, failed ones with their error, and each BAR read is timed. Used by the
// attack matrix and the owner-capacity test.
//
// Thread-safety: RunOwnerWorkflow may run on any thread; it uses only its own client.
// Blocking: it blocks for the whole workflow, each call bounded by options.call_timeout.
#ifndef VFIOD_TESTS_ATTACK_OWNER_WORKFLOW_H_
#define VFIOD_TESTS_ATTACK_OWNER_WORKFLOW_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace vfiod::attack {

struct OwnerWorkflowOptions {
  int bar_reads = 200;
  // Interrupts raised through daemon-owned eventfds: MSI vector 0 set to "watch" (so every
  // WatchIrqs stream is sent them), then this many loopback triggers. 0: none.
  int irq_triggers = 0;
  // Concurrent Reset calls at the end (each on a thread of its own); the device must offer a
  // reset (e.g. sim:edu,reset). 0: none.
  int concurrent_resets = 0;
  absl::Duration call_timeout = absl::Seconds(5);
};

// One step of the workflow: its calls (a step that was not reached has none).
struct OwnerStep {
  std::string name;
  int calls = 0;
  int failed = 0;
  std::string first_error;  // "CODE: message" of the first failed call
};

struct OwnerWorkflowResult {
  std::vector<OwnerStep> steps;
  // The latency of every BAR read that succeeded, in the order made.
  std::vector<absl::Duration> bar_read_latencies;

  int calls() const;
  int failed() const;
  // "step: error" of the first failure, or "".
  std::string FirstFailure() const;
  // "ClaimOwnership 0/1 failed, ..." for every step.
  std::string StepSummary() const;
};

OwnerWorkflowResult RunOwnerWorkflow(const std::string& socket_path,
                                     const OwnerWorkflowOptions& options);

// The `fraction` quantile (0.5: the median) of `samples` (nearest rank); zero when empty.
absl::Duration Quantile(std::vector<absl::Duration> samples, double fraction);

}  // namespace vfiod::attack

#endif  // VFIOD_TESTS_ATTACK_OWNER_WORKFLOW_H_
