#include "daemon/pci/irq_manager.h"

#include <sys/epoll.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/format.h"
#include "absl/strings/string_view.h"
#include "daemon/base/errno_status.h"
#include "daemon/base/logging.h"
#include "daemon/base/status_macros.h"

namespace vfiod {
namespace {

using Trigger = IrqVectorState::Trigger;
using Data = IrqRequest::Data;

// The PCI limit (MSI-X table size); a backend reporting more is broken.
constexpr uint32_t kMaxVectorsPerIndex = 2048;

// The backend's names for the data forms it has; "watch" is the device model's own.
absl::string_view DataName(Data data) {
  switch (data) {
    case Data::kNone:
      return IrqSetDataName(IrqSet::Data::kNone);
    case Data::kBool:
      return IrqSetDataName(IrqSet::Data::kBool);
    case Data::kEventfd:
      return IrqSetDataName(IrqSet::Data::kEventfd);
    case Data::kWatch:
      return "watch";
  }
  return "unknown";
}

uint32_t Raw(IrqIndex index) { return static_cast<uint32_t>(index); }

// MSI and MSI-X vectors cannot be masked by the kernel; the manager emulates it.
bool IsEmulated(IrqIndex index) { return index == IrqIndex::kMsi || index == IrqIndex::kMsix; }

// INTx, MSI and MSI-X: the kernel enables one of them at a time (vdev->irq_type).
bool IsExclusive(IrqIndex index) { return index == IrqIndex::kIntx || IsEmulated(index); }

uint64_t MonotonicNowNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// TRIGGER on vectors [0, count) of `index` (count 0 with kNone: disable the index).
IrqSet WholeIndexTrigger(IrqIndex index, uint32_t count, IrqSet::Data data) {
  IrqSet set;
  set.index = index;
  set.start = 0;
  set.count = count;
  set.action = IrqAction::kTrigger;
  set.data = data;
  return set;
}

std::string Describe(const IrqRequest& r) {
  return absl::StrCat(IrqActionName(r.action), " ", IrqIndexName(r.index), " [", r.start, ", ",
                      uint64_t{r.start} + r.count, ") data ", DataName(r.data));
}

// The request's form for DeviceBackend's SET_IRQS shape rules. Watch is the daemon's own data
// form: without values, like DATA_NONE (its values are checked apart, for the message).
IrqSetForm FormOf(const IrqRequest& r) {
  IrqSetForm form;
  form.index = r.index;
  form.start = r.start;
  form.count = r.count;
  form.action = r.action;
  switch (r.data) {
    case Data::kNone:
    case Data::kWatch:
      form.data = IrqSet::Data::kNone;
      break;
    case Data::kBool:
      form.data = IrqSet::Data::kBool;
      break;
    case Data::kEventfd:
      form.data = IrqSet::Data::kEventfd;
      break;
    default:  // unknown: passed on for CheckIrqSetData to name
      form.data = static_cast<IrqSet::Data>(r.data);
      break;
  }
  if (r.data != Data::kWatch) {
    form.bools = r.bools.size();
    form.eventfds = r.eventfds.size();
  }
  return form;
}

}  // namespace

// Subscriptions and the count of live ones; shared with each subscription so that a
// subscription may outlive the manager.
struct IrqManager::Registry {
  absl::Mutex mu;
  std::vector<std::weak_ptr<Subscription>> subscriptions ABSL_GUARDED_BY(mu);
  uint32_t live ABSL_GUARDED_BY(mu) = 0;
};

class IrqManager::Subscription : public IrqSubscription {
 public:
  // `filter`: bit i set = events of IrqIndex i are wanted. The caller has counted this
  // subscription in registry->live.
  Subscription(std::shared_ptr<Registry> registry, uint32_t filter)
      : registry_(std::move(registry)), filter_(filter) {}

  ~Subscription() override {
    absl::MutexLock lock(&registry_->mu);
    --registry_->live;
  }

  std::optional<IrqEvent> Next(absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    while (queue_.empty() && !closed_) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) break;  // true: the deadline passed
    }
    if (queue_.empty()) return std::nullopt;
    IrqEvent event = queue_.front();
    queue_.pop_front();
    return event;
  }

  std::optional<IrqEvent> TryNext() override {
    absl::MutexLock lock(&mu_);
    if (queue_.empty()) return std::nullopt;
    IrqEvent event = queue_.front();
    queue_.pop_front();
    return event;
  }

  bool closed() const override {
    absl::MutexLock lock(&mu_);
    return closed_;
  }

  void SetListener(std::function<void()> listener) override {
    absl::MutexLock listener_lock(&listener_mu_);
    listener_ = std::move(listener);
    bool ready;
    {
      absl::MutexLock lock(&mu_);
      ready = closed_ || !queue_.empty();
    }
    if (ready && listener_) listener_();
  }

  void Push(const std::vector<IrqEvent>& events) {
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      bool queued = false;
      for (const IrqEvent& event : events) {
        if ((filter_ & (1u << Raw(event.index))) == 0) continue;
        if (queue_.size() >= kSubscriptionQueueLimit) {
          queue_.pop_front();
          ++dropped_;
        }
        queue_.push_back(event);
        queued = true;
      }
      if (!queued) return;
      cv_.SignalAll();
    }
    NotifyListener();
  }

  void Close() {
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
      cv_.SignalAll();
    }
    NotifyListener();
  }

 private:
  // Called without mu_, so that the listener may call TryNext().
  void NotifyListener() {
    absl::MutexLock listener_lock(&listener_mu_);
    if (listener_) listener_();
  }

  const std::shared_ptr<Registry> registry_;
  const uint32_t filter_;
  // Held while the listener runs; taken before mu_ when both are.
  absl::Mutex listener_mu_;
  std::function<void()> listener_ ABSL_GUARDED_BY(listener_mu_);
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<IrqEvent> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<IrqManager>> IrqManager::Create(DeviceBackend* backend,
                                                               uint32_t max_watchers) {
  if (backend == nullptr) return absl::InvalidArgumentError("IrqManager: no backend");
  for (const IrqInfo& info : backend->Info().irqs) {
    if (Raw(info.index) < kNumPciIrqIndexes && info.count > kMaxVectorsPerIndex) {
      return absl::FailedPreconditionError(
          absl::StrCat("IrqManager: the backend reports ", info.count, " vectors for ",
                       IrqIndexName(info.index), " (more than ", kMaxVectorsPerIndex, ")"));
    }
  }
  return std::unique_ptr<IrqManager>(new IrqManager(backend, max_watchers));
}

absl::Status IrqManager::Start(std::function<void()> on_host_request) {
  absl::MutexLock lock(&mu_);
  if (wake_.has_value()) return absl::FailedPreconditionError("IrqManager: Start called twice");
  absl::StatusOr<EventFd> wake = EventFd::Create();
  if (!wake.ok()) return Annotate(wake.status(), "IrqManager");
  int raw_epoll = ::epoll_create1(EPOLL_CLOEXEC);
  if (raw_epoll < 0) return ErrnoError(errno, "IrqManager: epoll_create1");
  UniqueFd epoll(raw_epoll);
  struct epoll_event event = {};
  event.events = EPOLLIN;
  event.data.u64 = 0;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake->fd().get(), &event) != 0) {
    return ErrnoError(errno, "IrqManager: epoll_ctl(EPOLL_CTL_ADD)");
  }
  wake_.emplace(*std::move(wake));
  epoll_ = std::move(epoll);
  on_host_request_ = std::move(on_host_request);
  ArmHostRequestLocked();
  watcher_ = std::thread([this] { WatcherLoop(); });
  return absl::OkStatus();
}

IrqManager::IrqManager(DeviceBackend* backend, uint32_t max_watchers)
    : backend_(backend), max_watchers_(max_watchers), registry_(std::make_shared<Registry>()) {
  absl::MutexLock lock(&mu_);
  for (uint32_t i = 0; i < kNumPciIrqIndexes; ++i) indexes_[i].info.index = IrqIndex(i);
  for (const IrqInfo& info : backend_->Info().irqs) {
    if (Raw(info.index) >= kNumPciIrqIndexes) continue;
    Index& index = indexes_[Raw(info.index)];
    index.info = info;
    index.vectors.resize(info.count);
  }
}

IrqManager::~IrqManager() {
  stop_.store(true);  // first: DisableAll arms no REQ trigger of the daemon's any more
  DisableAll();
  {
    absl::MutexLock lock(&mu_);
    DisarmHostRequestLocked();
  }
  if (wake_.has_value()) {
    absl::Status status = wake_->Signal();
    if (!status.ok()) {
      LogError("IrqManager: cannot wake the watcher", {{"error", status.ToString()}});
    }
  }
  if (watcher_.joinable()) watcher_.join();
  std::vector<std::shared_ptr<Subscription>> live;
  {
    absl::MutexLock lock(&registry_->mu);
    for (const std::weak_ptr<Subscription>& weak : registry_->subscriptions) {
      if (std::shared_ptr<Subscription> sub = weak.lock()) live.push_back(std::move(sub));
    }
    registry_->subscriptions.clear();
  }
  for (const std::shared_ptr<Subscription>& sub : live) sub->Close();
}

absl::Status IrqManager::SetIrqs(IrqRequest request) {
  std::vector<IrqEvent> events;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    status = SetIrqsLocked(request, events);
  }
  Deliver(events);
  return status;
}

absl::Status IrqManager::BackendError(const IrqRequest& r, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("SetIrqs: ", Describe(r), ": ", status.message()));
}

absl::Status IrqManager::ValidateLocked(const IrqRequest& r) const {
  // The VFIO shape rules are DeviceBackend's (CheckIrqSet*); the rest is the device model's.
  const IrqSetForm form = FormOf(r);
  if (absl::Status status = CheckIrqSetIndex(form); !status.ok()) {
    return Annotate(status, "SetIrqs");
  }
  const Index& index = indexes_[Raw(r.index)];
  const std::string name = IrqIndexName(r.index);
  if (index.info.count == 0) {
    return absl::NotFoundError(absl::StrCat("SetIrqs: the device has no ", name, " interrupt"));
  }
  if (absl::Status status = CheckIrqSetData(form); !status.ok()) {
    return Annotate(status, "SetIrqs");
  }
  if (r.data == Data::kWatch && !r.bools.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs: ", r.bools.size(), " bools given with data watch"));
  }
  if (r.data == Data::kWatch && !r.eventfds.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs: ", r.eventfds.size(), " eventfds given with data watch"));
  }
  if (r.count == 0) {
    if (r.action != IrqAction::kTrigger || r.data != Data::kNone) {
      return absl::InvalidArgumentError(
          absl::StrCat("SetIrqs: count 0 with ", IrqActionName(r.action), " and data ",
                       DataName(r.data), " (count 0 is only TRIGGER without data: disable)"));
    }
    if (r.start != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("SetIrqs: disabling ", name, " needs start 0, not ", r.start));
    }
    return absl::OkStatus();
  }
  // The same rule as the kernel's, reported as the device model's contract says: OUT_OF_RANGE.
  absl::Status range = CheckIrqSetVectors(form, index.info.count);
  if (!range.ok()) return absl::OutOfRangeError(absl::StrCat("SetIrqs: ", range.message()));
  return r.action == IrqAction::kTrigger ? ValidateTriggerLocked(r) : ValidateMaskLocked(r);
}

// The device-model rules for TRIGGER on a request of valid shape and range.
absl::Status IrqManager::ValidateTriggerLocked(const IrqRequest& r) const {
  const Index& index = indexes_[Raw(r.index)];
  const std::string name = IrqIndexName(r.index);
  const bool with_fds = r.data == Data::kEventfd || r.data == Data::kWatch;
  if (with_fds && !index.info.eventfd) {
    return absl::InvalidArgumentError(absl::StrCat("SetIrqs: ", name, " does not signal eventfds"));
  }
  if (with_fds && IsExclusive(r.index)) {
    for (IrqIndex other : {IrqIndex::kIntx, IrqIndex::kMsi, IrqIndex::kMsix}) {
      if (other != r.index && indexes_[Raw(other)].enabled) {
        const std::string other_name = IrqIndexName(other);
        return absl::FailedPreconditionError(absl::StrCat(
            "SetIrqs: ", name, " cannot be enabled while ", other_name,
            " is enabled (one interrupt type at a time); disable ", other_name, " first"));
      }
    }
  }
  if (!with_fds && r.index != IrqIndex::kErr && r.index != IrqIndex::kReq && !index.enabled) {
    return absl::FailedPreconditionError(
        absl::StrCat("SetIrqs: TRIGGER loopback on ", name, " while ", name, " is disabled"));
  }
  return absl::OkStatus();
}

// The device-model rules for MASK/UNMASK on a request of valid shape and range.
absl::Status IrqManager::ValidateMaskLocked(const IrqRequest& r) const {
  const Index& index = indexes_[Raw(r.index)];
  const std::string name = IrqIndexName(r.index);
  if (r.data == Data::kWatch) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs: watch is only valid with TRIGGER, not ", IrqActionName(r.action)));
  }
  if (r.data == Data::kEventfd) {
    if (r.action == IrqAction::kMask) {
      return absl::InvalidArgumentError("SetIrqs: MASK takes no eventfd");
    }
    if (r.index != IrqIndex::kIntx || r.start != 0 || r.count != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("SetIrqs: an unmask eventfd is only valid for INTx vector 0, not ", name,
                       " [", r.start, ", ", uint64_t{r.start} + r.count, ")"));
    }
  }
  if (IsEmulated(r.index)) return absl::OkStatus();
  if (!index.info.maskable) {
    return absl::InvalidArgumentError(absl::StrCat("SetIrqs: ", name, " is not maskable"));
  }
  if (r.index == IrqIndex::kIntx && !index.enabled) {
    return absl::FailedPreconditionError(
        absl::StrCat("SetIrqs: ", IrqActionName(r.action), " on INTx while INTx is disabled"));
  }
  return absl::OkStatus();
}

absl::Status IrqManager::SetIrqsLocked(IrqRequest& r, std::vector<IrqEvent>& events) {
  VFIOD_RETURN_IF_ERROR(ValidateLocked(r));
  if (r.action == IrqAction::kTrigger) {
    if (r.index == IrqIndex::kReq) return SetReqTriggerLocked(r, events);
    if (r.count == 0) return DisableIndexLocked(r.index, /*force=*/false, events);
    if (r.data == Data::kEventfd || r.data == Data::kWatch) return SetTriggerLocked(r, events);
    return LoopbackLocked(r);
  }
  if (IsEmulated(r.index)) return EmulateMaskLocked(r);
  return BackendMaskLocked(r);
}

absl::Status IrqManager::SetReqTriggerLocked(IrqRequest& r, std::vector<IrqEvent>& events) {
  const Index& index = indexes_[Raw(IrqIndex::kReq)];
  absl::Status status;
  if (r.count == 0) {
    // Idempotent without an owner trigger; the daemon's, if armed, stays.
    if (!index.enabled) return absl::OkStatus();
    status = DisableIndexLocked(IrqIndex::kReq, /*force=*/false, events);
  } else if (r.data == Data::kEventfd || r.data == Data::kWatch) {
    status = SetTriggerLocked(r, events);
  } else if (host_request_token_ != 0) {
    // The owner has no REQ trigger: the kernel's answer without one (vfio_pci_set_ctx_trigger_
    // single), and the daemon's eventfd is not signalled.
    if (r.data == Data::kBool) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("SetIrqs: ", Describe(r), ": REQ has no trigger of the owner's to signal"));
  } else {
    return LoopbackLocked(r);
  }
  if (!status.ok()) return status;  // the backend kept its trigger, the daemon's included
  // The owner's request replaced or cleared the backend's single REQ trigger.
  DropHostRequestLocked();
  ArmHostRequestLocked();
  return absl::OkStatus();
}

void IrqManager::ArmHostRequestLocked() {
  const Index& index = indexes_[Raw(IrqIndex::kReq)];
  if (!on_host_request_ || stop_.load() || host_request_token_ != 0 || index.enabled ||
      index.info.count == 0 || !index.info.eventfd) {
    return;
  }
  absl::StatusOr<uint64_t> token = AddDaemonFdLocked(IrqIndex::kReq, 0, FdKind::kHostRequest);
  absl::Status status = token.status();
  if (token.ok()) {
    IrqSet set = WholeIndexTrigger(IrqIndex::kReq, 1, IrqSet::Data::kEventfd);
    set.eventfds = {DaemonFdLocked(*token)};
    status = backend_->SetIrqs(set);
    if (status.ok()) {
      host_request_token_ = *token;
      return;
    }
    RemoveDaemonFdLocked(*token);
  }
  LogWarning(
      "IrqManager: cannot arm the daemon's REQ trigger; a host unbind waits for vfiod to exit",
      {{"error", status.ToString()}});
}

void IrqManager::DropHostRequestLocked() {
  if (host_request_token_ == 0) return;
  RemoveDaemonFdLocked(host_request_token_);
  host_request_token_ = 0;
}

void IrqManager::DisarmHostRequestLocked() {
  if (host_request_token_ == 0) return;
  absl::Status status =
      backend_->SetIrqs(WholeIndexTrigger(IrqIndex::kReq, 0, IrqSet::Data::kNone));
  if (!status.ok()) {
    LogWarning("IrqManager: cannot clear the daemon's REQ trigger", {{"error", status.ToString()}});
  }
  DropHostRequestLocked();
}

// Loopback: the backend signals whatever each vector's trigger is (for a masked MSI/MSI-X
// vector that is the private eventfd, which sets the pending bit).
absl::Status IrqManager::LoopbackLocked(const IrqRequest& r) {
  IrqSet set;
  set.index = r.index;
  set.start = r.start;
  set.count = r.count;
  set.action = IrqAction::kTrigger;
  set.data = r.data == Data::kBool ? IrqSet::Data::kBool : IrqSet::Data::kNone;
  set.bools = r.bools;
  absl::Status status = backend_->SetIrqs(set);
  if (!status.ok()) return BackendError(r, status);
  return absl::OkStatus();
}

// The daemon eventfds a TRIGGER request needs and the backend call that installs them.
struct IrqManager::TriggerPlan {
  IrqSet set;
  std::vector<uint64_t> new_watch;  // watch: the vector's new watch eventfd
  std::vector<uint64_t> new_mask;   // masked MSI/MSI-X: the vector's private eventfd
  std::vector<uint64_t> created;    // to drop when the plan is not committed
};

absl::Status IrqManager::SetTriggerLocked(IrqRequest& r, std::vector<IrqEvent>& events) {
  // The watcher cannot look at the new daemon eventfds before this call ends (it needs mu_); on
  // failure they are dropped again.
  TriggerPlan plan;
  VFIOD_RETURN_IF_ERROR(PrepareTriggerLocked(r, plan));
  absl::Status status = backend_->SetIrqs(plan.set);
  if (!status.ok()) {
    DiscardLocked(plan.created);
    if (IsEmulated(r.index) && indexes_[Raw(r.index)].enabled) {
      RestoreBackendLocked(r.index, r.start, r.count);
    }
    return BackendError(r, status);
  }
  CommitTriggerLocked(r, plan, events);
  return absl::OkStatus();
}

absl::Status IrqManager::PrepareTriggerLocked(const IrqRequest& r, TriggerPlan& plan) {
  const Index& index = indexes_[Raw(r.index)];
  plan.new_watch.assign(r.count, 0);
  plan.new_mask.assign(r.count, 0);
  plan.set.index = r.index;
  plan.set.start = r.start;
  plan.set.count = r.count;
  plan.set.action = IrqAction::kTrigger;
  plan.set.data = IrqSet::Data::kEventfd;
  plan.set.eventfds.assign(r.count, nullptr);
  for (uint32_t i = 0; i < r.count; ++i) {
    const uint32_t v = r.start + i;
    const EventFd* target = nullptr;
    if (r.data == Data::kWatch) {
      absl::StatusOr<uint64_t> token = AddDaemonFdLocked(r.index, v, FdKind::kWatch);
      if (!token.ok()) {
        DiscardLocked(plan.created);
        return Annotate(token.status(), "SetIrqs");
      }
      plan.created.push_back(*token);
      plan.new_watch[i] = *token;
      target = DaemonFdLocked(*token);
    } else if (r.eventfds[i].has_value()) {
      target = &*r.eventfds[i];
    }
    absl::StatusOr<const EventFd*> fd =
        MaskedBackendFdLocked(index, v, target, plan.created, &plan.new_mask[i]);
    if (!fd.ok()) {
      DiscardLocked(plan.created);
      return Annotate(fd.status(), "SetIrqs");
    }
    plan.set.eventfds[i] = *fd;
  }
  return absl::OkStatus();
}

void IrqManager::CommitTriggerLocked(IrqRequest& r, const TriggerPlan& plan,
                                     std::vector<IrqEvent>& events) {
  Index& index = indexes_[Raw(r.index)];
  for (uint32_t i = 0; i < r.count; ++i) {
    const uint32_t v = r.start + i;
    Vector& vector = index.vectors[v];
    if (vector.watch_token != 0) RetireWatchLocked(index, v, events);
    vector.client.reset();
    if (r.data == Data::kWatch) {
      vector.watch_token = plan.new_watch[i];
      vector.trigger = Trigger::kWatch;
    } else if (r.eventfds[i].has_value()) {
      vector.client = std::move(r.eventfds[i]);
      vector.trigger = Trigger::kClientEventfd;
    } else {
      vector.trigger = Trigger::kNone;
    }
    if (vector.mask_token != plan.new_mask[i]) {
      if (vector.mask_token != 0) RetireMaskLocked(index, v);
      vector.mask_token = plan.new_mask[i];
    }
  }
  if (r.index == IrqIndex::kErr || r.index == IrqIndex::kReq) {
    // The kernel keeps a single trigger for ERR and REQ (vfio_pci_set_ctx_trigger_single): an
    // eventfd of -1 clears it and nothing else is enabled. INTx, MSI and MSI-X stay enabled
    // without triggers until disabled with count 0.
    index.enabled = std::any_of(index.vectors.begin(), index.vectors.end(),
                                [](const Vector& v) { return v.trigger != Trigger::kNone; });
  } else {
    index.enabled = true;
  }
}

void IrqManager::DiscardLocked(const std::vector<uint64_t>& tokens) {
  for (uint64_t token : tokens) RemoveDaemonFdLocked(token);
}

absl::Status IrqManager::BackendMaskLocked(IrqRequest& r) {
  Index& index = indexes_[Raw(r.index)];
  IrqSet set;
  set.index = r.index;
  set.start = r.start;
  set.count = r.count;
  set.action = r.action;
  switch (r.data) {
    case Data::kBool:
      set.data = IrqSet::Data::kBool;
      set.bools = r.bools;
      break;
    case Data::kEventfd:
      set.data = IrqSet::Data::kEventfd;
      set.eventfds.push_back(r.eventfds[0].has_value() ? &*r.eventfds[0] : nullptr);
      break;
    default:
      set.data = IrqSet::Data::kNone;
      break;
  }
  absl::Status status = backend_->SetIrqs(set);
  if (!status.ok()) return BackendError(r, status);
  if (r.data == Data::kEventfd) {
    index.unmask_eventfd = std::move(r.eventfds[0]);
    return absl::OkStatus();
  }
  for (uint32_t i = 0; i < r.count; ++i) {
    if (r.data == Data::kBool && !r.bools[i]) continue;
    index.vectors[r.start + i].masked = r.action == IrqAction::kMask;
  }
  return absl::OkStatus();
}

absl::Status IrqManager::DisableIndexLocked(IrqIndex which, bool force,
                                            std::vector<IrqEvent>& events) {
  Index& index = indexes_[Raw(which)];
  absl::Status status;
  if (index.enabled) {
    status = backend_->SetIrqs(WholeIndexTrigger(which, 0, IrqSet::Data::kNone));
    if (!status.ok()) {
      status = absl::Status(status.code(), absl::StrCat("SetIrqs: disabling ", IrqIndexName(which),
                                                        ": ", status.message()));
      if (!force) return status;
    }
  }
  for (uint32_t v = 0; v < index.vectors.size(); ++v) {
    Vector& vector = index.vectors[v];
    if (vector.watch_token != 0) RetireWatchLocked(index, v, events);
    if (vector.mask_token != 0) RetireMaskLocked(index, v);
    vector.client.reset();
    vector.trigger = Trigger::kNone;
    vector.masked = false;
    vector.pending = false;
  }
  index.unmask_eventfd.reset();
  index.enabled = false;
  return status;
}

void IrqManager::DisableAll() {
  std::vector<IrqEvent> events;
  {
    absl::MutexLock lock(&mu_);
    for (uint32_t i = 0; i < kNumPciIrqIndexes; ++i) {
      if (indexes_[i].info.count == 0) continue;
      absl::Status status = DisableIndexLocked(IrqIndex(i), /*force=*/true, events);
      if (!status.ok()) {
        LogWarning("DisableAll: the backend refused; state dropped anyway",
                   {{"index", IrqIndexName(IrqIndex(i))}, {"error", status.ToString()}});
      }
    }
    // The owner's REQ trigger, if any, is gone from the backend: the daemon's takes its place.
    ArmHostRequestLocked();
  }
  Deliver(events);
}

const EventFd* IrqManager::TargetFdLocked(const Vector& vector) const {
  switch (vector.trigger) {
    case Trigger::kClientEventfd:
      return vector.client.has_value() ? &*vector.client : nullptr;
    case Trigger::kWatch:
      return DaemonFdLocked(vector.watch_token);
    case Trigger::kNone:
    case Trigger::kDaemonRequest:  // never a vector's own: State() reports the daemon's REQ
      break;
  }
  return nullptr;
}

absl::StatusOr<uint64_t> IrqManager::AddDaemonFdLocked(IrqIndex index, uint32_t vector,
                                                       FdKind kind) {
  if (!epoll_.valid()) {
    return absl::FailedPreconditionError("IrqManager: not started (no watcher thread yet)");
  }
  VFIOD_ASSIGN_OR_RETURN(EventFd fd, EventFd::Create());
  const uint64_t token = next_token_++;
  struct epoll_event event = {};
  event.events = EPOLLIN;
  event.data.u64 = token;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.fd().get(), &event) != 0) {
    return ErrnoError(errno, "epoll_ctl(EPOLL_CTL_ADD)");
  }
  daemon_fds_.emplace(token, DaemonFd{std::move(fd), index, vector, kind});
  return token;
}

uint64_t IrqManager::RemoveDaemonFdLocked(uint64_t token) {
  auto it = daemon_fds_.find(token);
  if (it == daemon_fds_.end()) return 0;
  // Explicitly: the backend may hold another reference to the same file (the simulated device
  // duplicates it), and epoll would keep reporting it after our close.
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd.fd().get(), nullptr) != 0) {
    LogError("IrqManager: epoll_ctl(EPOLL_CTL_DEL) failed",
             {{"error", ErrnoError(errno, "epoll_ctl").ToString()}});
  }
  absl::StatusOr<uint64_t> count = it->second.fd.Read();
  daemon_fds_.erase(it);
  return count.ok() ? *count : 0;
}

const EventFd* IrqManager::DaemonFdLocked(uint64_t token) const {
  if (token == 0) return nullptr;
  auto it = daemon_fds_.find(token);
  return it == daemon_fds_.end() ? nullptr : &it->second.fd;
}

void IrqManager::RecordWatchLocked(IrqIndex which, uint32_t v, uint64_t count,
                                   std::vector<IrqEvent>& events) {
  Index& index = indexes_[Raw(which)];
  Vector& vector = index.vectors[v];
  vector.delivered += count;
  // The backend masked the line when it fired (INTx is level-triggered and automasked).
  if (which == IrqIndex::kIntx && index.info.automasked) vector.masked = true;
  events.push_back(IrqEvent{which, v, count, MonotonicNowNs()});
}

void IrqManager::RetireWatchLocked(Index& index, uint32_t v, std::vector<IrqEvent>& events) {
  Vector& vector = index.vectors[v];
  const uint64_t count = RemoveDaemonFdLocked(vector.watch_token);
  vector.watch_token = 0;
  if (count > 0) RecordWatchLocked(index.info.index, v, count, events);
}

void IrqManager::WatcherLoop() {
  constexpr int kMaxEvents = 32;
  struct epoll_event ready[kMaxEvents];
  while (!stop_.load()) {
    int n = ::epoll_wait(epoll_.get(), ready, kMaxEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      LogError("IrqManager: epoll_wait failed; the watcher stops",
               {{"error", ErrnoError(errno, "epoll_wait").ToString()}});
      return;
    }
    std::vector<IrqEvent> events;
    bool host_request = false;
    {
      absl::MutexLock lock(&mu_);
      for (int i = 0; i < n; ++i) {
        const uint64_t token = ready[i].data.u64;
        if (token == 0) {
          (void)wake_->Read();
          continue;
        }
        auto it = daemon_fds_.find(token);
        if (it == daemon_fds_.end()) continue;  // retired after epoll_wait returned
        absl::StatusOr<uint64_t> count = it->second.fd.Read();
        if (!count.ok() || *count == 0) continue;
        const DaemonFd& fd = it->second;
        if (fd.kind == FdKind::kWatch) {
          RecordWatchLocked(fd.index, fd.vector, *count, events);
        } else if (fd.kind == FdKind::kHostRequest) {
          host_request = true;
        } else {
          indexes_[Raw(fd.index)].vectors[fd.vector].pending = true;
        }
      }
    }
    Deliver(events);
    if (host_request) on_host_request_();
  }
}

void IrqManager::Deliver(const std::vector<IrqEvent>& events) {
  if (events.empty()) return;
  std::vector<std::shared_ptr<Subscription>> live;
  {
    absl::MutexLock lock(&registry_->mu);
    for (const std::weak_ptr<Subscription>& weak : registry_->subscriptions) {
      if (std::shared_ptr<Subscription> sub = weak.lock()) live.push_back(std::move(sub));
    }
  }
  for (const std::shared_ptr<Subscription>& sub : live) sub->Push(events);
  // `live` may hold the last reference: its destructor takes registry_->mu, not held here.
}

absl::StatusOr<std::shared_ptr<IrqSubscription>> IrqManager::Watch(std::vector<IrqIndex> indexes) {
  uint32_t filter = 0;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (IrqIndex which : indexes) {
      if (Raw(which) >= kNumPciIrqIndexes) {
        return absl::InvalidArgumentError(absl::StrCat("Watch: unknown IRQ index ", Raw(which)));
      }
      if (indexes_[Raw(which)].info.count == 0) {
        return absl::NotFoundError(
            absl::StrCat("Watch: the device has no ", IrqIndexName(which), " interrupt"));
      }
      filter |= 1u << Raw(which);
    }
  }
  if (indexes.empty()) filter = (1u << kNumPciIrqIndexes) - 1;
  absl::MutexLock lock(&registry_->mu);
  if (registry_->live >= max_watchers_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Watch: ", registry_->live, " IRQ watchers are alive, the limit is ", max_watchers_));
  }
  auto& subs = registry_->subscriptions;
  subs.erase(std::remove_if(subs.begin(), subs.end(),
                            [](const std::weak_ptr<Subscription>& w) { return w.expired(); }),
             subs.end());
  ++registry_->live;
  auto sub = std::make_shared<Subscription>(registry_, filter);
  subs.push_back(sub);
  return std::shared_ptr<IrqSubscription>(std::move(sub));
}

uint32_t IrqManager::watchers() const {
  absl::MutexLock lock(&registry_->mu);
  return registry_->live;
}

std::vector<IrqIndexState> IrqManager::State() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<IrqIndexState> states;
  for (uint32_t i = 0; i < kNumPciIrqIndexes; ++i) {
    const Index& index = indexes_[i];
    if (index.info.count == 0) continue;
    IrqIndexState state;
    state.index = IrqIndex(i);
    state.enabled = index.enabled;
    state.vectors.reserve(index.vectors.size());
    for (uint32_t v = 0; v < index.vectors.size(); ++v) {
      const Vector& vector = index.vectors[v];
      IrqVectorState vs;
      vs.vector = v;
      vs.trigger = vector.trigger;
      if (i == Raw(IrqIndex::kReq) && v == 0 && host_request_token_ != 0) {
        vs.trigger = Trigger::kDaemonRequest;
      }
      vs.masked = vector.masked;
      vs.pending = vector.pending;
      vs.unmask_eventfd = v == 0 && index.unmask_eventfd.has_value();
      vs.delivered = vector.delivered;
      state.vectors.push_back(vs);
    }
    states.push_back(std::move(state));
  }
  return states;
}

}  // namespace vfiod
