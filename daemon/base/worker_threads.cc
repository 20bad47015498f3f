#include "daemon/base/worker_threads.h"

#include <utility>

namespace vfiod {

void WorkerThreads::Start() {
  absl::MutexLock lock(&mu_);
  if (running_ || stopping_) return;
  running_ = true;
  for (int i = 0; i < count_; ++i) threads_.emplace_back([this] { Run(); });
}

void WorkerThreads::Post(std::function<void()> work) {
  {
    absl::MutexLock lock(&mu_);
    if (running_ && !stopping_) {
      queue_.push_back(std::move(work));
      return;
    }
  }
  work();
}

void WorkerThreads::Run() {
  while (true) {
    std::function<void()> work;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WorkerThreads* w)
               ABSL_NO_THREAD_SAFETY_ANALYSIS { return !w->queue_.empty() || w->stopping_; },
          this));
      if (queue_.empty()) return;  // stopping, and nothing left
      work = std::move(queue_.front());
      queue_.pop_front();
      ++busy_;
    }
    work();
    absl::MutexLock lock(&mu_);
    --busy_;
  }
}

void WorkerThreads::Drain() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](WorkerThreads* w)
           ABSL_NO_THREAD_SAFETY_ANALYSIS { return w->queue_.empty() && w->busy_ == 0; },
      this));
}

void WorkerThreads::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (!running_) return;
  }
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  absl::MutexLock lock(&mu_);
  running_ = false;
}

}  // namespace vfiod
