// SerialWorker: runs posted work one item at a time, in the order posted, on a thread of its
// own, so that a thread which must stay responsive (an event loop) can hand off work that may
// take long (an owner's cleanup unpinning gigabytes of DMA memory).
//
// Thread-safety: Post() may be called from any thread; Start() and Stop() from one thread.
// Stop() runs everything already posted, then joins; work posted after Stop() (or before
// Start()) runs on the posting thread, at once. The thread starts in Start(), so an object can
// exist before the daemon's jail (which needs a single-threaded process).
#ifndef VFIOD_DAEMON_BASE_SERIAL_WORKER_H_
#define VFIOD_DAEMON_BASE_SERIAL_WORKER_H_

#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace vfiod {

class SerialWorker {
 public:
  SerialWorker() = default;
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;
  ~SerialWorker() { Stop(); }

  void Start();
  void Post(std::function<void()> work);
  void Stop();
  // Blocks until everything posted so far has run.
  void Drain();

 private:
  void Run();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;   // the thread takes work
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;      // an item is running
  std::thread thread_;
};

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_SERIAL_WORKER_H_
