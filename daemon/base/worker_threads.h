// WorkerThreads: runs posted work on threads of its own, so that a thread which must stay
// responsive (the transport's event loop, gRPC's threads) can hand off work that may take long
// (an owner's cleanup unpinning gigabytes of DMA memory, an observer's call).
//
// With one thread (the default) the items run one at a time, in the order posted; with more,
// they start in that order and may run at once.
//
// Thread-safety: Post() may be called from any thread; Start() and Stop() from one thread.
// Stop() runs everything already posted, then joins; work posted after Stop() (or before
// Start()) runs on the posting thread, at once. The threads start in Start(), so an object can
// exist before the daemon's jail (which needs a single-threaded process).
#ifndef VFIOD_DAEMON_BASE_WORKER_THREADS_H_
#define VFIOD_DAEMON_BASE_WORKER_THREADS_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace vfiod {

class WorkerThreads {
 public:
  // `count` threads, at least 1.
  explicit WorkerThreads(int count = 1) : count_(count < 1 ? 1 : count) {}
  WorkerThreads(const WorkerThreads&) = delete;
  WorkerThreads& operator=(const WorkerThreads&) = delete;
  ~WorkerThreads() { Stop(); }

  void Start();
  void Post(std::function<void()> work);
  void Stop();
  // Blocks until everything posted so far has run.
  void Drain();

 private:
  void Run();

  const int count_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // the threads take work
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;  // items running
  std::vector<std::thread> threads_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_WORKER_THREADS_H_
