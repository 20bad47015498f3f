#include "daemon/base/serial_worker.h"

#include <utility>

namespace vfiod {

void SerialWorker::Start() {
  absl::MutexLock lock(&mu_);
  if (running_ || stopping_) return;
  running_ = true;
  thread_ = std::thread([this] { Run(); });
}

void SerialWorker::Post(std::function<void()> work) {
  {
    absl::MutexLock lock(&mu_);
    if (running_ && !stopping_) {
      queue_.push_back(std::move(work));
      return;
    }
  }
  work();
}

void SerialWorker::Run() {
  while (true) {
    std::function<void()> work;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](SerialWorker* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return !w->queue_.empty() || w->stopping_;
          },
          this));
      if (queue_.empty()) return;  // stopping, and nothing left
      work = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    work();
    absl::MutexLock lock(&mu_);
    busy_ = false;
  }
}

void SerialWorker::Drain() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](SerialWorker* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return w->queue_.empty() && !w->busy_;
      },
      this));
}

void SerialWorker::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (!running_) {
      stopping_ = true;
      return;
    }
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  running_ = false;
}

}  // namespace vfiod
