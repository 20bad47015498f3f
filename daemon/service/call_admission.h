// CallAdmission: where each gRPC call of the device service runs, so that no other client can
// take the owner's capacity, and how many calls a non-owner may have in progress.
//
// A call is admitted to one of four lanes:
//   kOwnerInline  the owner's short calls (config and BAR accesses, state): run at once on the
//                 gRPC thread that received the call, queued behind nobody.
//   kOwnerWorker  the owner's calls that may block for long (memory, DMA map and unmap,
//                 SET_IRQS, reset, release, which runs the owner-loss cleanup): a thread of
//                 their own, in order.
//   kSetup        a non-owner's ClaimOwnership and BindFdChannel, how an owner-to-be starts: a
//                 thread of their own, outside the observer total (a claim may wait for the
//                 last owner's cleanup).
//   kObserver     every other call of a non-owner: `observer_threads` threads, at most
//                 `max_observer_calls` admitted at once.
// A non-owner connection has at most `max_calls_per_connection` calls admitted at once (kSetup
// and kObserver together). Beyond a limit Admit refuses with RESOURCE_EXHAUSTED and runs
// nothing; the owner's lanes have no limit (HTTP/2's per-connection stream limit bounds them).
// A call is admitted until its work returns, not until its response is sent: a reader that
// does not read holds no thread and no admission.
//
// Thread-safety: Admit may be called from any thread. The threads start in the constructor, so
// the object is created after the daemon's jail (which needs a single-threaded process); the
// destructor runs every admitted call, then joins.
#ifndef VFIOD_DAEMON_SERVICE_CALL_ADMISSION_H_
#define VFIOD_DAEMON_SERVICE_CALL_ADMISSION_H_

#include <cstdint>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "daemon/base/worker_threads.h"
#include "daemon/transport/connection_registry.h"

namespace vfiod {

enum class CallLane { kOwnerInline, kOwnerWorker, kSetup, kObserver };

struct CallAdmissionOptions {
  uint32_t max_observer_calls = 16;       // kObserver calls admitted at once, all connections
  uint32_t max_calls_per_connection = 4;  // kSetup + kObserver calls of one connection
  uint32_t observer_threads = 2;          // at least 1
};

class CallAdmission {
 public:
  explicit CallAdmission(CallAdmissionOptions options);
  ~CallAdmission();
  CallAdmission(const CallAdmission&) = delete;
  CallAdmission& operator=(const CallAdmission&) = delete;

  // Runs `work` on `lane` for a call of `connection`. RESOURCE_EXHAUSTED, naming `operation`
  // and the limit, when a non-owner limit is reached; `work` is then destroyed without running.
  // kOwnerInline runs `work` before returning.
  absl::Status Admit(ConnectionId connection, CallLane lane, absl::string_view operation,
                     std::function<void()> work);

  struct Counts {
    uint32_t observer_calls = 0;  // admitted and not finished
    uint64_t refused = 0;         // since start
  };
  Counts GetCounts() const;

 private:
  absl::Status Reserve(ConnectionId connection, CallLane lane, absl::string_view operation);
  void Release(ConnectionId connection, CallLane lane);

  const CallAdmissionOptions options_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<ConnectionId, uint32_t> per_connection_ ABSL_GUARDED_BY(mu_);
  uint32_t observer_calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
  WorkerThreads observer_threads_;
  WorkerThreads owner_worker_;
  WorkerThreads setup_worker_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_SERVICE_CALL_ADMISSION_H_
