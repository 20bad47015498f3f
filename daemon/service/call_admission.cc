#include "daemon/service/call_admission.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vfiod {

CallAdmission::CallAdmission(CallAdmissionOptions options) : options_(options) {
  const uint32_t threads = std::max<uint32_t>(options_.observer_threads, 1);
  for (uint32_t i = 0; i < threads; ++i) {
    observer_threads_.emplace_back([this] { ObserverLoop(); });
  }
  owner_worker_.Start();
  setup_worker_.Start();
}

CallAdmission::~CallAdmission() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : observer_threads_) thread.join();
  owner_worker_.Stop();
  setup_worker_.Stop();
}

absl::Status CallAdmission::Reserve(ConnectionId connection, CallLane lane,
                                    absl::string_view operation) {
  if (lane == CallLane::kOwnerInline || lane == CallLane::kOwnerWorker) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  uint32_t& calls = per_connection_[connection];
  if (calls >= options_.max_calls_per_connection) {
    ++refused_;
    if (calls == 0) per_connection_.erase(connection);
    return absl::ResourceExhaustedError(absl::StrCat(
        operation, ": this connection already has ", calls,
        " calls in progress, the most a non-owner may have (--max-observer-calls-per-connection)"));
  }
  if (lane == CallLane::kObserver && observer_calls_ >= options_.max_observer_calls) {
    ++refused_;
    if (calls == 0) per_connection_.erase(connection);
    return absl::ResourceExhaustedError(
        absl::StrCat(operation, ": ", observer_calls_,
                     " observer calls are in progress, the most the daemon admits at once "
                     "(--max-observer-calls)"));
  }
  ++calls;
  if (lane == CallLane::kObserver) ++observer_calls_;
  return absl::OkStatus();
}

void CallAdmission::Release(ConnectionId connection, CallLane lane) {
  if (lane == CallLane::kOwnerInline || lane == CallLane::kOwnerWorker) return;
  absl::MutexLock lock(&mu_);
  auto it = per_connection_.find(connection);
  if (it != per_connection_.end() && --it->second == 0) per_connection_.erase(it);
  if (lane == CallLane::kObserver) --observer_calls_;
}

absl::Status CallAdmission::Admit(ConnectionId connection, CallLane lane,
                                  absl::string_view operation, std::function<void()> work) {
  if (absl::Status reserved = Reserve(connection, lane, operation); !reserved.ok()) {
    return reserved;
  }
  auto run = [this, connection, lane, work = std::move(work)] {
    work();
    Release(connection, lane);
  };
  switch (lane) {
    case CallLane::kOwnerInline:
      run();
      break;
    case CallLane::kOwnerWorker:
      owner_worker_.Post(std::move(run));
      break;
    case CallLane::kSetup:
      setup_worker_.Post(std::move(run));
      break;
    case CallLane::kObserver: {
      absl::MutexLock lock(&mu_);
      observer_queue_.push_back(std::move(run));
      break;
    }
  }
  return absl::OkStatus();
}

void CallAdmission::ObserverLoop() {
  while (true) {
    std::function<void()> work;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](CallAdmission* self) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return !self->observer_queue_.empty() || self->stopping_;
          },
          this));
      if (observer_queue_.empty()) return;  // stopping, and nothing left
      work = std::move(observer_queue_.front());
      observer_queue_.pop_front();
    }
    work();
  }
}

CallAdmission::Counts CallAdmission::GetCounts() const {
  absl::MutexLock lock(&mu_);
  return Counts{observer_calls_, refused_};
}

}  // namespace vfiod
