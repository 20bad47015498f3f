#include "daemon/service/call_admission.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace vfiod {

CallAdmission::CallAdmission(CallAdmissionOptions options)
    : options_(options), observer_threads_(static_cast<int>(options.observer_threads)) {
  observer_threads_.Start();
  owner_worker_.Start();
  setup_worker_.Start();
}

CallAdmission::~CallAdmission() {
  observer_threads_.Stop();
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
    case CallLane::kObserver:
      observer_threads_.Post(std::move(run));
      break;
  }
  return absl::OkStatus();
}

CallAdmission::Counts CallAdmission::GetCounts() const {
  absl::MutexLock lock(&mu_);
  return Counts{observer_calls_, refused_};
}

}  // namespace vfiod
