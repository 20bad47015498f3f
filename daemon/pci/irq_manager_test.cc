#include "daemon/pci/irq_manager.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/backend/device_backend.h"
#include "daemon/base/event_fd.h"
#include "daemon/base/fd_count_for_test.h"
#include "daemon/sim/sim_backend.h"
#include "gtest/gtest.h"

namespace vfiod {
namespace {

using ::vfiod::testing::CountOpenFds;
using Data = IrqRequest::Data;
using Trigger = IrqVectorState::Trigger;

// ------------------------------------------------------------------------------------------
// A minimal backend with the kernel's SET_IRQS semantics, for what the edu simulation cannot
// reach (several MSI-X vectors, injected failures) and for checking that invalid requests never
// get here. It duplicates the eventfds it is given, as the simulated device does.
class IrqTestBackend : public DeviceBackend {
 public:
  // `req_vectors`: 1 gives the device REQ (with eventfds), as vfio-pci reports it.
  explicit IrqTestBackend(uint32_t msix_vectors = 8, uint32_t req_vectors = 0) {
    info_.kind = "test";
    info_.name = "test:irq";
    info_.irqs = {
        IrqInfo{IrqIndex::kIntx, 1, true, true, true, false},
        IrqInfo{IrqIndex::kMsi, 4, true, false, false, false},
        IrqInfo{IrqIndex::kMsix, msix_vectors, true, false, false, false},
        IrqInfo{IrqIndex::kErr, 1, true, false, false, false},
        IrqInfo{IrqIndex::kReq, req_vectors, req_vectors > 0, false, false, false},
    };
    for (const IrqInfo& info : info_.irqs) {
      triggers_[static_cast<int>(info.index)].resize(info.count);
    }
  }

  const BackendInfo& Info() const override { return info_; }
  absl::Status ReadRegion(uint32_t, uint64_t, absl::Span<uint8_t>) override {
    return absl::UnimplementedError("test backend");
  }
  absl::Status WriteRegion(uint32_t, uint64_t, absl::Span<const uint8_t>) override {
    return absl::UnimplementedError("test backend");
  }
  absl::Status MapDma(const DmaMap&) override { return absl::UnimplementedError("test backend"); }
  absl::Status UnmapDma(uint64_t, uint64_t) override {
    return absl::UnimplementedError("test backend");
  }
  absl::Status Reset() override { return absl::UnimplementedError("test backend"); }

  absl::Status SetIrqs(const IrqSet& set) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    last_ = set;
    if (fail_next_) {
      fail_next_ = false;
      return absl::InternalError("injected failure");
    }
    const int i = static_cast<int>(set.index);
    auto& triggers = triggers_[i];
    const bool msi = set.index == IrqIndex::kMsi || set.index == IrqIndex::kMsix;
    if (set.action != IrqAction::kTrigger) {
      if (msi) return absl::UnimplementedError("ENOTTY");
      if (set.index != IrqIndex::kIntx || !enabled_[0]) return absl::InvalidArgumentError("EINVAL");
      if (set.data == IrqSet::Data::kEventfd) {
        unmask_fd_.reset();
        if (set.eventfds[0] != nullptr) unmask_fd_ = *set.eventfds[0]->Duplicate();
        return absl::OkStatus();
      }
      if (set.action == IrqAction::kMask) {
        intx_masked_ = true;
      } else {
        intx_masked_ = false;
        if (intx_pending_) FireIntxLocked();
      }
      return absl::OkStatus();
    }
    if (set.data == IrqSet::Data::kEventfd) {
      const bool exclusive = set.index == IrqIndex::kIntx || msi;
      if (exclusive) {
        for (int other : {0, 1, 2}) {
          if (other != i && enabled_[other]) return absl::InvalidArgumentError("EINVAL: busy");
        }
      }
      for (uint32_t k = 0; k < set.count; ++k) {
        auto& slot = triggers[set.start + k];
        slot.reset();
        if (set.eventfds[k] != nullptr) slot = *set.eventfds[k]->Duplicate();
      }
      enabled_[i] = true;
      return absl::OkStatus();
    }
    if (set.count == 0) {
      if (!enabled_[i]) return absl::InvalidArgumentError("EINVAL: not enabled");
      for (auto& slot : triggers) slot.reset();
      enabled_[i] = false;
      if (i == 0) {
        unmask_fd_.reset();
        intx_masked_ = intx_pending_ = false;
      }
      return absl::OkStatus();
    }
    for (uint32_t k = 0; k < set.count; ++k) {
      if (set.data == IrqSet::Data::kBool && !set.bools[k]) continue;
      if (triggers[set.start + k]) (void)triggers[set.start + k]->Signal();
    }
    return absl::OkStatus();
  }

  // The device raises vector `v` of `index` (INTx: asserts the line, automasked).
  void Fire(IrqIndex index, uint32_t v) {
    absl::MutexLock lock(&mu_);
    if (index == IrqIndex::kIntx) {
      intx_pending_ = true;
      if (!intx_masked_) FireIntxLocked();
      return;
    }
    auto& slot = triggers_[static_cast<int>(index)][v];
    if (slot) (void)slot->Signal();
  }

  void FailNext() {
    absl::MutexLock lock(&mu_);
    fail_next_ = true;
  }
  int calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  IrqSet last() const {
    absl::MutexLock lock(&mu_);
    return last_;
  }
  bool has_trigger(IrqIndex index, uint32_t v) const {
    absl::MutexLock lock(&mu_);
    return triggers_[static_cast<int>(index)][v].has_value();
  }

 private:
  void FireIntxLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    intx_pending_ = false;
    intx_masked_ = true;
    if (triggers_[0][0]) (void)triggers_[0][0]->Signal();
  }

  BackendInfo info_;
  mutable absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  IrqSet last_ ABSL_GUARDED_BY(mu_);
  bool fail_next_ ABSL_GUARDED_BY(mu_) = false;
  bool enabled_[kNumPciIrqIndexes] ABSL_GUARDED_BY(mu_) = {};
  std::vector<std::optional<EventFd>> triggers_[kNumPciIrqIndexes] ABSL_GUARDED_BY(mu_);
  std::optional<EventFd> unmask_fd_ ABSL_GUARDED_BY(mu_);
  bool intx_masked_ ABSL_GUARDED_BY(mu_) = false;
  bool intx_pending_ ABSL_GUARDED_BY(mu_) = false;
};

// ------------------------------------------------------------------------------------------
// Helpers.

// The fd count once it settles at `expected` (within a few seconds) or the last count seen: the
// simulated device's worker thread drops its copy of a torn-down resample eventfd only when it
// next wakes up. A real leak never settles.
int SettledFdCount(int expected) {
  int n = CountOpenFds();
  for (int i = 0; i < 500 && n != expected && n >= 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    n = CountOpenFds();
  }
  return n;
}

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

IrqRequest Watch(IrqIndex index, uint32_t start, uint32_t count) {
  IrqRequest r;
  r.index = index;
  r.start = start;
  r.count = count;
  r.action = IrqAction::kTrigger;
  r.data = Data::kWatch;
  return r;
}

IrqRequest Disable(IrqIndex index) {
  IrqRequest r;
  r.index = index;
  r.action = IrqAction::kTrigger;
  r.data = Data::kNone;
  return r;
}

IrqRequest Action(IrqIndex index, IrqAction action, uint32_t start, uint32_t count) {
  IrqRequest r;
  r.index = index;
  r.start = start;
  r.count = count;
  r.action = action;
  r.data = Data::kNone;
  return r;
}

// Client eventfds for `count` vectors; `mirror` receives duplicates the test reads.
IrqRequest Eventfds(IrqIndex index, uint32_t start, uint32_t count,
                    std::vector<EventFd>* mirror = nullptr) {
  IrqRequest r;
  r.index = index;
  r.start = start;
  r.count = count;
  r.action = IrqAction::kTrigger;
  r.data = Data::kEventfd;
  for (uint32_t i = 0; i < count; ++i) {
    EventFd fd = *EventFd::Create();
    if (mirror != nullptr) mirror->push_back(*fd.Duplicate());
    r.eventfds.push_back(std::move(fd));
  }
  return r;
}

const IrqVectorState& VectorState(const std::vector<IrqIndexState>& state, IrqIndex index,
                                  uint32_t v) {
  for (const IrqIndexState& s : state) {
    if (s.index == index) return s.vectors.at(v);
  }
  ADD_FAILURE() << "no state for index " << static_cast<int>(index);
  static const IrqVectorState kNone;
  return kNone;
}

bool Enabled(const std::vector<IrqIndexState>& state, IrqIndex index) {
  for (const IrqIndexState& s : state) {
    if (s.index == index) return s.enabled;
  }
  return false;
}

std::optional<IrqEvent> NextWithin(IrqSubscription& sub, absl::Duration d) {
  return sub.Next(absl::Now() + d);
}

constexpr absl::Duration kEventWait = absl::Seconds(5);    // an event that must come
constexpr absl::Duration kQuietWait = absl::Milliseconds(150);  // an event that must not

class IrqManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = IrqManager::Create(&backend_, 4);
    ASSERT_TRUE(m.ok()) << m.status();
    manager_ = *std::move(m);
    ASSERT_TRUE(manager_->Start().ok());
  }

  // Expects `request` to fail with `code` without reaching the backend and without changing
  // the state.
  void ExpectRejected(IrqRequest request, absl::StatusCode code,
                      const std::string& message_part = "") {
    const int calls = backend_.calls();
    const auto before = manager_->State();
    absl::Status status = manager_->SetIrqs(std::move(request));
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_NE(status.message().find("SetIrqs"), absl::string_view::npos) << status;
    if (!message_part.empty()) {
      EXPECT_NE(status.message().find(message_part), absl::string_view::npos) << status;
    }
    EXPECT_EQ(backend_.calls(), calls) << "an invalid request reached the backend";
    const auto after = manager_->State();
    ASSERT_EQ(before.size(), after.size());
    for (size_t i = 0; i < before.size(); ++i) {
      EXPECT_EQ(before[i].enabled, after[i].enabled);
      for (size_t v = 0; v < before[i].vectors.size(); ++v) {
        EXPECT_EQ(before[i].vectors[v].trigger, after[i].vectors[v].trigger);
        EXPECT_EQ(before[i].vectors[v].masked, after[i].vectors[v].masked);
      }
    }
  }

  IrqTestBackend backend_;
  std::unique_ptr<IrqManager> manager_;
};

// ------------------------------------------------------------------------------------------
// Validation.

TEST_F(IrqManagerTest, StateListsEveryIndexTheDeviceHas) {
  auto state = manager_->State();
  ASSERT_EQ(state.size(), 4u);  // REQ has no vectors
  EXPECT_EQ(state[0].index, IrqIndex::kIntx);
  EXPECT_EQ(state[0].vectors.size(), 1u);
  EXPECT_EQ(state[2].index, IrqIndex::kMsix);
  EXPECT_EQ(state[2].vectors.size(), 8u);
  EXPECT_FALSE(state[2].enabled);
  EXPECT_EQ(state[2].vectors[7].vector, 7u);
  EXPECT_EQ(state[2].vectors[7].trigger, Trigger::kNone);
}

TEST_F(IrqManagerTest, RejectsUnknownIndex) {
  ExpectRejected(Watch(static_cast<IrqIndex>(7), 0, 1), absl::StatusCode::kInvalidArgument,
                 "unknown IRQ index 7");
  ExpectRejected(Watch(static_cast<IrqIndex>(0xffffffffu), 0, 1),
                 absl::StatusCode::kInvalidArgument);
}

TEST_F(IrqManagerTest, RejectsIndexTheDeviceLacks) {
  ExpectRejected(Watch(IrqIndex::kReq, 0, 1), absl::StatusCode::kNotFound, "no REQ interrupt");
}

TEST_F(IrqManagerTest, RejectsUnknownActionAndData) {
  IrqRequest r = Watch(IrqIndex::kMsix, 0, 1);
  r.action = static_cast<IrqAction>(9);
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "unknown action 9");
  r = Watch(IrqIndex::kMsix, 0, 1);
  r.data = static_cast<Data>(9);
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "unknown data form 9");
}

TEST_F(IrqManagerTest, RejectsStartCountOverflow) {
  ExpectRejected(Watch(IrqIndex::kMsix, 0xffffffffu, 2), absl::StatusCode::kOutOfRange,
                 "[4294967295, 4294967297)");
  ExpectRejected(Watch(IrqIndex::kMsix, 1, 0xffffffffu), absl::StatusCode::kOutOfRange);
}

TEST_F(IrqManagerTest, RejectsVectorsBeyondTheIndex) {
  ExpectRejected(Watch(IrqIndex::kMsix, 7, 2), absl::StatusCode::kOutOfRange,
                 "SetIrqs: vector range [7, 9) exceeds the 8 vectors of MSI-X");
  ExpectRejected(Watch(IrqIndex::kMsix, 8, 1), absl::StatusCode::kOutOfRange);
  ExpectRejected(Watch(IrqIndex::kIntx, 0, 2), absl::StatusCode::kOutOfRange);
  ExpectRejected(Action(IrqIndex::kMsix, IrqAction::kMask, 8, 1), absl::StatusCode::kOutOfRange);
}

TEST_F(IrqManagerTest, RejectsDataSizeMismatch) {
  IrqRequest r = Eventfds(IrqIndex::kMsix, 0, 2);
  r.count = 3;
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "2 eventfds for 3 vectors");

  r = Action(IrqIndex::kMsix, IrqAction::kMask, 0, 2);
  r.data = Data::kBool;
  r.bools = {true};
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "1 bools for 2 vectors");

  r = Eventfds(IrqIndex::kMsix, 0, 1);
  r.data = Data::kNone;
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "eventfds given with data none");

  r = Watch(IrqIndex::kMsix, 0, 1);
  r.bools = {true};
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "bools given with data watch");
}

TEST_F(IrqManagerTest, CountZeroIsOnlyDisable) {
  ExpectRejected(Eventfds(IrqIndex::kMsix, 0, 0), absl::StatusCode::kInvalidArgument, "count 0");
  ExpectRejected(Watch(IrqIndex::kMsix, 0, 0), absl::StatusCode::kInvalidArgument, "count 0");
  ExpectRejected(Action(IrqIndex::kMsix, IrqAction::kMask, 0, 0),
                 absl::StatusCode::kInvalidArgument, "count 0");
  IrqRequest r = Disable(IrqIndex::kMsix);
  r.start = 3;
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "needs start 0, not 3");
  // Disabling what is not enabled is a no-op that does not reach the backend.
  EXPECT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kMsix)).ok());
  EXPECT_EQ(backend_.calls(), 0);
}

TEST_F(IrqManagerTest, RejectsWatchWithMaskOrUnmask) {
  IrqRequest r = Watch(IrqIndex::kMsix, 0, 1);
  r.action = IrqAction::kMask;
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "only valid with TRIGGER");
  r = Watch(IrqIndex::kIntx, 0, 1);
  r.action = IrqAction::kUnmask;
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "only valid with TRIGGER");
}

TEST_F(IrqManagerTest, RejectsBadMaskRequests) {
  // MASK with an eventfd.
  IrqRequest r = Eventfds(IrqIndex::kIntx, 0, 1);
  r.action = IrqAction::kMask;
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "MASK takes no eventfd");
  // An unmask eventfd anywhere but INTx.
  r = Eventfds(IrqIndex::kMsix, 0, 1);
  r.action = IrqAction::kUnmask;
  ExpectRejected(std::move(r), absl::StatusCode::kInvalidArgument, "only valid for INTx");
  // ERR is not maskable.
  ExpectRejected(Action(IrqIndex::kErr, IrqAction::kMask, 0, 1),
                 absl::StatusCode::kInvalidArgument, "ERR is not maskable");
  // INTx masking needs INTx enabled.
  ExpectRejected(Action(IrqIndex::kIntx, IrqAction::kUnmask, 0, 1),
                 absl::StatusCode::kFailedPrecondition, "INTx is disabled");
  r = Eventfds(IrqIndex::kIntx, 0, 1);
  r.action = IrqAction::kUnmask;
  ExpectRejected(std::move(r), absl::StatusCode::kFailedPrecondition, "INTx is disabled");
}

TEST_F(IrqManagerTest, RejectsLoopbackOnDisabledIndex) {
  ExpectRejected(Action(IrqIndex::kMsi, IrqAction::kTrigger, 0, 1),
                 absl::StatusCode::kFailedPrecondition, "MSI is disabled");
}

TEST_F(IrqManagerTest, FailingRequestClosesItsEventfds) {
  IrqRequest r = Eventfds(IrqIndex::kMsix, 7, 2);  // out of range
  const int fd0 = r.eventfds[0]->fd().get();
  const int fd1 = r.eventfds[1]->fd().get();
  EXPECT_EQ(manager_->SetIrqs(std::move(r)).code(), absl::StatusCode::kOutOfRange);
  EXPECT_FALSE(IsOpen(fd0));
  EXPECT_FALSE(IsOpen(fd1));
}

// The kernel enables one of INTx, MSI and MSI-X at a time (its EINVAL); the manager refuses the
// second before the backend, as a state the device is in, and closes the request's eventfds.
TEST_F(IrqManagerTest, OneInterruptTypeAtATimeIsAPrecondition) {
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kIntx, 0, 1)).ok());
  IrqRequest msi = Eventfds(IrqIndex::kMsi, 0, 1);
  const int fd = msi.eventfds[0]->fd().get();
  ExpectRejected(std::move(msi), absl::StatusCode::kFailedPrecondition,
                 "MSI cannot be enabled while INTx is enabled");
  EXPECT_FALSE(IsOpen(fd));
  ExpectRejected(Watch(IrqIndex::kMsix, 0, 2), absl::StatusCode::kFailedPrecondition,
                 "MSI-X cannot be enabled while INTx is enabled");
  ASSERT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kIntx)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 2)).ok());
  ExpectRejected(Eventfds(IrqIndex::kIntx, 0, 1), absl::StatusCode::kFailedPrecondition,
                 "INTx cannot be enabled while MSI-X is enabled");
  // ERR and REQ are not exclusive.
  EXPECT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kErr, 0, 1)).ok());
}

TEST_F(IrqManagerTest, BackendFailureLeavesStateUnchangedAndClosesEverything) {
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 2)).ok());
  const int fds = CountOpenFds();
  // An injected failure re-pointing MSI-X to watch: the old watch eventfds stay in place.
  backend_.FailNext();
  EXPECT_EQ(manager_->SetIrqs(Eventfds(IrqIndex::kMsix, 0, 2)).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(CountOpenFds(), fds);
  auto state = manager_->State();
  EXPECT_EQ(VectorState(state, IrqIndex::kMsix, 0).trigger, Trigger::kWatch);
  EXPECT_EQ(VectorState(state, IrqIndex::kMsix, 1).trigger, Trigger::kWatch);
  // The manager restored the backend's triggers after the failure.
  EXPECT_TRUE(backend_.has_trigger(IrqIndex::kMsix, 0));
  auto sub = manager_->Watch({});
  ASSERT_TRUE(sub.ok());
  backend_.Fire(IrqIndex::kMsix, 1);
  auto event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->vector, 1u);
}

// ------------------------------------------------------------------------------------------
// Triggers and state.

TEST_F(IrqManagerTest, ClientEventfdsReachTheBackend) {
  std::vector<EventFd> mirror;
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kMsix, 2, 3, &mirror)).ok());
  IrqSet last = backend_.last();
  EXPECT_EQ(last.index, IrqIndex::kMsix);
  EXPECT_EQ(last.start, 2u);
  EXPECT_EQ(last.count, 3u);
  EXPECT_EQ(last.data, IrqSet::Data::kEventfd);
  backend_.Fire(IrqIndex::kMsix, 3);
  EXPECT_EQ(*mirror[1].Read(), 1u);
  EXPECT_EQ(*mirror[0].Read(), 0u);
  auto state = manager_->State();
  EXPECT_TRUE(Enabled(state, IrqIndex::kMsix));
  EXPECT_EQ(VectorState(state, IrqIndex::kMsix, 1).trigger, Trigger::kNone);
  EXPECT_EQ(VectorState(state, IrqIndex::kMsix, 2).trigger, Trigger::kClientEventfd);
  EXPECT_EQ(VectorState(state, IrqIndex::kMsix, 4).trigger, Trigger::kClientEventfd);

  // nullopt removes one vector's trigger.
  IrqRequest r;
  r.index = IrqIndex::kMsix;
  r.start = 3;
  r.count = 1;
  r.data = Data::kEventfd;
  r.eventfds.emplace_back(std::nullopt);
  ASSERT_TRUE(manager_->SetIrqs(std::move(r)).ok());
  EXPECT_EQ(backend_.last().eventfds.at(0), nullptr);
  EXPECT_FALSE(backend_.has_trigger(IrqIndex::kMsix, 3));
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kMsix, 3).trigger, Trigger::kNone);
}

TEST_F(IrqManagerTest, IntxUnmaskEventfd) {
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kIntx, 0, 1)).ok());
  IrqRequest r = Eventfds(IrqIndex::kIntx, 0, 1);
  r.action = IrqAction::kUnmask;
  ASSERT_TRUE(manager_->SetIrqs(std::move(r)).ok());
  EXPECT_EQ(backend_.last().action, IrqAction::kUnmask);
  EXPECT_EQ(backend_.last().data, IrqSet::Data::kEventfd);
  EXPECT_TRUE(VectorState(manager_->State(), IrqIndex::kIntx, 0).unmask_eventfd);
  r = IrqRequest();
  r.action = IrqAction::kUnmask;
  r.count = 1;
  r.data = Data::kEventfd;
  r.eventfds.emplace_back(std::nullopt);
  ASSERT_TRUE(manager_->SetIrqs(std::move(r)).ok());
  EXPECT_FALSE(VectorState(manager_->State(), IrqIndex::kIntx, 0).unmask_eventfd);
}

TEST_F(IrqManagerTest, WatchDeliversAndCounts) {
  auto all = manager_->Watch({});
  auto msi_only = manager_->Watch({IrqIndex::kMsi});
  ASSERT_TRUE(all.ok() && msi_only.ok());
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 8)).ok());
  backend_.Fire(IrqIndex::kMsix, 5);
  auto event = NextWithin(**all, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->index, IrqIndex::kMsix);
  EXPECT_EQ(event->vector, 5u);
  EXPECT_EQ(event->count, 1u);
  EXPECT_GT(event->timestamp_ns, 0u);
  EXPECT_FALSE(NextWithin(**msi_only, kQuietWait).has_value());
  EXPECT_FALSE((*msi_only)->closed());
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kMsix, 5).delivered, 1u);
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kMsix, 5).trigger, Trigger::kWatch);
  // Loopback through the backend reaches the watch eventfd too.
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kTrigger, 6, 1)).ok());
  event = NextWithin(**all, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->vector, 6u);
}

TEST_F(IrqManagerTest, WatchValidatesIndexes) {
  EXPECT_EQ(manager_->Watch({static_cast<IrqIndex>(5)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager_->Watch({IrqIndex::kReq}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->watchers(), 0u);
}

TEST_F(IrqManagerTest, WatchLimit) {
  std::vector<std::shared_ptr<IrqSubscription>> subs;
  for (int i = 0; i < 4; ++i) {
    auto sub = manager_->Watch({});
    ASSERT_TRUE(sub.ok()) << sub.status();
    subs.push_back(*sub);
  }
  auto fifth = manager_->Watch({IrqIndex::kIntx});
  EXPECT_EQ(fifth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(manager_->watchers(), 4u);
  std::shared_ptr<IrqSubscription> copy = subs[0];
  subs.erase(subs.begin());
  EXPECT_EQ(manager_->watchers(), 4u);  // a copy still holds it
  copy.reset();
  EXPECT_EQ(manager_->watchers(), 3u);
  EXPECT_TRUE(manager_->Watch({}).ok());  // released again at once
}

TEST_F(IrqManagerTest, SubscriptionQueueDropsOldest) {
  // Events reach subscriptions in the order they subscribed: once `reader` has an event,
  // `laggard` has it too.
  auto laggard = manager_->Watch({});
  auto reader = manager_->Watch({});
  ASSERT_TRUE(reader.ok() && laggard.ok());
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 1)).ok());
  constexpr int kEvents = 1100;
  for (int i = 0; i < kEvents; ++i) {
    backend_.Fire(IrqIndex::kMsix, 0);
    ASSERT_TRUE(NextWithin(**reader, kEventWait).has_value()) << i;
  }
  int queued = 0;
  uint64_t last_ts = 0;
  while (auto event = NextWithin(**laggard, absl::ZeroDuration())) {
    EXPECT_GE(event->timestamp_ns, last_ts);
    last_ts = event->timestamp_ns;
    ++queued;
  }
  EXPECT_EQ(queued, static_cast<int>(IrqManager::kSubscriptionQueueLimit));
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kMsix, 0).delivered, uint64_t{kEvents});
}

TEST_F(IrqManagerTest, NextHonoursTheDeadline) {
  auto sub = manager_->Watch({});
  ASSERT_TRUE(sub.ok());
  const absl::Time start = absl::Now();
  EXPECT_FALSE((*sub)->Next(start + absl::Milliseconds(50)).has_value());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
  EXPECT_FALSE((*sub)->closed());
}

TEST_F(IrqManagerTest, DisableAllClearsStateButKeepsSubscriptions) {
  auto sub = manager_->Watch({});
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 8)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kMask, 0, 4)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kErr, 0, 1)).ok());
  const int fds_enabled = CountOpenFds();
  backend_.Fire(IrqIndex::kMsix, 7);  // counted now, delivered by the watcher or by DisableAll
  manager_->DisableAll();
  auto event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->vector, 7u);
  for (const IrqIndexState& s : manager_->State()) {
    EXPECT_FALSE(s.enabled) << static_cast<int>(s.index);
    for (const IrqVectorState& v : s.vectors) {
      EXPECT_EQ(v.trigger, Trigger::kNone);
      EXPECT_FALSE(v.masked);
      EXPECT_FALSE(v.unmask_eventfd);
    }
  }
  EXPECT_FALSE(backend_.has_trigger(IrqIndex::kMsix, 0));
  EXPECT_FALSE(backend_.has_trigger(IrqIndex::kErr, 0));
  // The manager's 8 watch + 4 mask eventfds and the ERR eventfd; the backend's duplicates of
  // the 8 MSI-X triggers (4 of them mask eventfds) and of the ERR eventfd.
  EXPECT_EQ(CountOpenFds(), fds_enabled - 13 - 9);
  EXPECT_FALSE((*sub)->closed());
  EXPECT_EQ(manager_->watchers(), 1u);
  // A new owner may enable again; the old subscription sees its interrupts.
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 1)).ok());
  EXPECT_FALSE(VectorState(manager_->State(), IrqIndex::kMsix, 0).masked);
  backend_.Fire(IrqIndex::kMsix, 0);
  event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->vector, 0u);
}

TEST_F(IrqManagerTest, DisableAllSurvivesBackendFailure) {
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsi, 0, 4)).ok());
  backend_.FailNext();
  manager_->DisableAll();
  EXPECT_FALSE(Enabled(manager_->State(), IrqIndex::kMsi));
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kMsi, 0).trigger, Trigger::kNone);
}

TEST_F(IrqManagerTest, DisableByRequestFailsWithoutChangingState) {
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsi, 0, 4)).ok());
  backend_.FailNext();
  EXPECT_EQ(manager_->SetIrqs(Disable(IrqIndex::kMsi)).code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(Enabled(manager_->State(), IrqIndex::kMsi));
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kMsi, 3).trigger, Trigger::kWatch);
  EXPECT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kMsi)).ok());
  EXPECT_FALSE(Enabled(manager_->State(), IrqIndex::kMsi));
}

TEST(IrqManagerLifetimeTest, DestructionClosesSubscriptions) {
  IrqTestBackend backend;
  auto manager = IrqManager::Create(&backend, 2);
  ASSERT_TRUE(manager.ok());
  ASSERT_TRUE((*manager)->Start().ok());
  auto sub = (*manager)->Watch({});
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE((*manager)->SetIrqs(Watch(IrqIndex::kMsix, 0, 2)).ok());
  std::thread waiter([s = *sub] {
    EXPECT_FALSE(s->Next(absl::InfiniteFuture()).has_value());
    EXPECT_TRUE(s->closed());
  });
  absl::SleepFor(absl::Milliseconds(20));
  manager->reset();
  waiter.join();
  EXPECT_FALSE(backend.has_trigger(IrqIndex::kMsix, 0));  // the destructor disabled everything
  EXPECT_FALSE((*sub)->Next(absl::InfiniteFuture()).has_value());
}

TEST(IrqManagerLifetimeTest, CreateRejectsNullBackend) {
  EXPECT_EQ(IrqManager::Create(nullptr, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------------------------------------
// MSI-X mask emulation (8 vectors: beyond the edu simulation).

TEST_F(IrqManagerTest, MaskedWatchVectorHoldsOneEventUntilUnmask) {
  auto sub = manager_->Watch({});
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 8)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kMask, 3, 1)).ok());
  EXPECT_TRUE(VectorState(manager_->State(), IrqIndex::kMsix, 3).masked);
  EXPECT_FALSE(VectorState(manager_->State(), IrqIndex::kMsix, 2).masked);
  // Only the masked vector was re-pointed.
  EXPECT_EQ(backend_.last().start, 3u);
  EXPECT_EQ(backend_.last().count, 1u);
  for (int i = 0; i < 3; ++i) backend_.Fire(IrqIndex::kMsix, 3);
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());
  // Other vectors are unaffected.
  backend_.Fire(IrqIndex::kMsix, 4);
  auto event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->vector, 4u);
  // Masking again changes nothing.
  const int calls = backend_.calls();
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kMask, 3, 1)).ok());
  EXPECT_EQ(backend_.calls(), calls);

  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kUnmask, 0, 8)).ok());
  EXPECT_FALSE(VectorState(manager_->State(), IrqIndex::kMsix, 3).masked);
  event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->vector, 3u);
  EXPECT_EQ(event->count, 1u);
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());
  // Unmasked again: interrupts go straight through.
  backend_.Fire(IrqIndex::kMsix, 3);
  event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->vector, 3u);
}

TEST_F(IrqManagerTest, MaskWithBoolsAndClientEventfds) {
  std::vector<EventFd> mirror;
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kMsix, 0, 8, &mirror)).ok());
  IrqRequest mask = Action(IrqIndex::kMsix, IrqAction::kMask, 1, 4);
  mask.data = Data::kBool;
  mask.bools = {true, false, false, true};  // vectors 1 and 4
  ASSERT_TRUE(manager_->SetIrqs(std::move(mask)).ok());
  // One backend call over [1, 5); vectors 2 and 3 keep their client eventfds.
  EXPECT_EQ(backend_.last().start, 1u);
  EXPECT_EQ(backend_.last().count, 4u);
  auto state = manager_->State();
  EXPECT_TRUE(VectorState(state, IrqIndex::kMsix, 1).masked);
  EXPECT_FALSE(VectorState(state, IrqIndex::kMsix, 2).masked);
  EXPECT_TRUE(VectorState(state, IrqIndex::kMsix, 4).masked);
  for (uint32_t v = 0; v < 8; ++v) backend_.Fire(IrqIndex::kMsix, v);
  for (uint32_t v = 0; v < 8; ++v) {
    EXPECT_EQ(*mirror[v].Read(), (v == 1 || v == 4) ? 0u : 1u) << v;
  }
  // Unmask vector 4 only: its one pending interrupt arrives; vector 1 stays held.
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kUnmask, 4, 1)).ok());
  EXPECT_EQ(*mirror[4].Read(), 1u);
  EXPECT_EQ(*mirror[1].Read(), 0u);
  // Unmask without anything pending signals nothing.
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kMask, 5, 1)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kUnmask, 5, 1)).ok());
  EXPECT_EQ(*mirror[5].Read(), 0u);
}

TEST_F(IrqManagerTest, MaskBeforeEnableAppliesToNewTriggers) {
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kMask, 2, 1)).ok());
  EXPECT_EQ(backend_.calls(), 0);  // no trigger yet: nothing to re-point, index stays off
  EXPECT_TRUE(VectorState(manager_->State(), IrqIndex::kMsix, 2).masked);
  EXPECT_FALSE(Enabled(manager_->State(), IrqIndex::kMsix));
  std::vector<EventFd> mirror;
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kMsix, 0, 4, &mirror)).ok());
  EXPECT_NE(backend_.last().eventfds.at(2), nullptr);
  backend_.Fire(IrqIndex::kMsix, 2);
  EXPECT_EQ(*mirror[2].Read(), 0u);
  // Replacing the trigger of a masked vector keeps the interrupt pending.
  std::vector<EventFd> mirror2;
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kMsix, 2, 1, &mirror2)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kUnmask, 2, 1)).ok());
  EXPECT_EQ(*mirror2[0].Read(), 1u);
  EXPECT_EQ(*mirror[2].Read(), 0u);
}

TEST_F(IrqManagerTest, LoopbackOnMaskedVectorIsPending) {
  std::vector<EventFd> mirror;
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kMsi, 0, 4, &mirror)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsi, IrqAction::kMask, 0, 4)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsi, IrqAction::kTrigger, 0, 2)).ok());
  EXPECT_EQ(*mirror[0].Read(), 0u);
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsi, IrqAction::kUnmask, 0, 4)).ok());
  EXPECT_EQ(*mirror[0].Read(), 1u);
  EXPECT_EQ(*mirror[1].Read(), 1u);
  EXPECT_EQ(*mirror[2].Read(), 0u);
}

// A pending interrupt reaches a client's eventfd through the backend (the kernel signals it), not
// through a write of the daemon's: the client's blocking eventfd, its counter parked at the
// maximum, keeps its flags and cannot stall SetIrqs.
TEST_F(IrqManagerTest, UnmaskDeliversPendingThroughTheBackend) {
  UniqueFd client(::eventfd(0, EFD_CLOEXEC));  // blocking, as a VMM may send it
  ASSERT_TRUE(client.valid());
  absl::StatusOr<UniqueFd> sent = client.Duplicate();
  ASSERT_TRUE(sent.ok()) << sent.status();
  absl::StatusOr<EventFd> adopted = EventFd::Adopt(*std::move(sent));
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  IrqRequest trigger = Eventfds(IrqIndex::kMsix, 0, 4);
  trigger.eventfds[2] = *std::move(adopted);
  ASSERT_TRUE(manager_->SetIrqs(std::move(trigger)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kMask, 0, 4)).ok());
  backend_.Fire(IrqIndex::kMsix, 2);  // pending: on the private eventfd until the unmask
  const uint64_t parked = 0xfffffffffffffffeull;
  ASSERT_EQ(::write(client.get(), &parked, sizeof(parked)), 8);
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kUnmask, 0, 4)).ok());
  const IrqSet last = backend_.last();
  EXPECT_EQ(last.action, IrqAction::kTrigger);
  EXPECT_EQ(last.data, IrqSet::Data::kBool);
  EXPECT_EQ(last.start, 2u);
  EXPECT_EQ(last.bools, std::vector<bool>{true});
  EXPECT_EQ(::fcntl(client.get(), F_GETFL), O_RDWR);
  uint64_t value = 0;
  ASSERT_EQ(::read(client.get(), &value, sizeof(value)), 8);
  EXPECT_EQ(value, parked);  // the interrupt was coalesced into the parked counter
}

TEST_F(IrqManagerTest, FailedMaskRestoresTriggers) {
  std::vector<EventFd> mirror;
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kMsix, 0, 2, &mirror)).ok());
  const int fds = CountOpenFds();
  backend_.FailNext();
  EXPECT_EQ(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kMask, 0, 2)).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_FALSE(VectorState(manager_->State(), IrqIndex::kMsix, 0).masked);
  backend_.Fire(IrqIndex::kMsix, 1);
  EXPECT_EQ(*mirror[1].Read(), 1u);
}

// ------------------------------------------------------------------------------------------
// Concurrency and leaks.

TEST_F(IrqManagerTest, DisableWhileFiring) {
  auto sub = manager_->Watch({});
  ASSERT_TRUE(sub.ok());
  const int fds = CountOpenFds();
  std::atomic<bool> stop{false};
  std::thread firer([&] {
    while (!stop.load()) {
      for (uint32_t v = 0; v < 8; ++v) backend_.Fire(IrqIndex::kMsix, v);
    }
  });
  std::thread reader([&] {
    while (!stop.load()) (void)(*sub)->Next(absl::Now() + absl::Milliseconds(10));
  });
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 8)).ok());
    ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kMask, 0, 4)).ok());
    ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kUnmask, 0, 8)).ok());
    if (i % 2 == 0) {
      ASSERT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kMsix)).ok());
    } else {
      manager_->DisableAll();
    }
  }
  stop.store(true);
  firer.join();
  reader.join();
  EXPECT_FALSE(Enabled(manager_->State(), IrqIndex::kMsix));
  while (NextWithin(**sub, absl::ZeroDuration()).has_value()) {
  }
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());  // nothing after the disable
  EXPECT_EQ(CountOpenFds(), fds);
}

TEST_F(IrqManagerTest, NoFdLeakOverEnableDisableLoops) {
  const int fds = CountOpenFds();
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kMsix, 0, 8)).ok());
    ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kMask, 0, 8)).ok());
    ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 4)).ok());
    ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsix, IrqAction::kUnmask, 0, 8)).ok());
    // A failing request in between.
    EXPECT_FALSE(manager_->SetIrqs(Eventfds(IrqIndex::kIntx, 0, 1)).ok());
    ASSERT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kMsix)).ok());
  }
  EXPECT_EQ(CountOpenFds(), fds);
}

// ------------------------------------------------------------------------------------------
// End to end on the simulated edu device (QEMU's edu under vfio-pci semantics).

constexpr uint64_t kEduIrqStatus = 0x24;
constexpr uint64_t kEduIrqRaise = 0x60;
constexpr uint64_t kEduIrqAck = 0x64;
constexpr uint32_t kPciCommand = 0x04;
constexpr uint16_t kPciCommandMaster = 0x4;

class IrqManagerSimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = CreateSimulatedBackend("edu");
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
    ASSERT_TRUE(backend_->Start().ok());
    auto m = IrqManager::Create(backend_.get(), 4);
    ASSERT_TRUE(m.ok()) << m.status();
    manager_ = *std::move(m);
    ASSERT_TRUE(manager_->Start().ok());
  }
  void TearDown() override { manager_.reset(); }

  void WriteBar0(uint64_t offset, uint32_t value) {
    uint8_t bytes[4];
    std::memcpy(bytes, &value, 4);
    ASSERT_TRUE(backend_->WriteRegion(kBar0RegionIndex, offset, absl::MakeConstSpan(bytes)).ok());
  }
  uint32_t ReadBar0(uint64_t offset) {
    uint8_t bytes[4] = {};
    EXPECT_TRUE(backend_->ReadRegion(kBar0RegionIndex, offset, absl::MakeSpan(bytes)).ok());
    uint32_t value;
    std::memcpy(&value, bytes, 4);
    return value;
  }
  void SetBusMaster(bool on) {
    uint8_t bytes[2] = {};
    ASSERT_TRUE(backend_->ReadRegion(kConfigRegionIndex, kPciCommand, absl::MakeSpan(bytes)).ok());
    uint16_t command;
    std::memcpy(&command, bytes, 2);
    command = on ? (command | kPciCommandMaster) : (command & ~kPciCommandMaster);
    std::memcpy(bytes, &command, 2);
    ASSERT_TRUE(
        backend_->WriteRegion(kConfigRegionIndex, kPciCommand, absl::MakeConstSpan(bytes)).ok());
  }
  void Raise() { WriteBar0(kEduIrqRaise, 1); }
  void Ack() { WriteBar0(kEduIrqAck, 1); }

  std::unique_ptr<DeviceBackend> backend_;
  std::unique_ptr<IrqManager> manager_;
};

TEST_F(IrqManagerSimTest, StateMatchesEdu) {
  auto state = manager_->State();
  ASSERT_GE(state.size(), 2u);
  EXPECT_EQ(state[0].index, IrqIndex::kIntx);
  EXPECT_EQ(state[0].vectors.size(), 1u);
  EXPECT_EQ(state[1].index, IrqIndex::kMsi);
  EXPECT_EQ(state[1].vectors.size(), 1u);
  for (const IrqIndexState& s : state) EXPECT_NE(s.index, IrqIndex::kMsix);  // edu has none
  EXPECT_EQ(manager_->SetIrqs(Watch(IrqIndex::kMsix, 0, 1)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->SetIrqs(Watch(IrqIndex::kMsi, 0, 2)).code(), absl::StatusCode::kOutOfRange);
}

TEST_F(IrqManagerSimTest, IntxWatchRaiseAutomaskAckUnmask) {
  auto sub = manager_->Watch({IrqIndex::kIntx});
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kIntx, 0, 1)).ok());
  EXPECT_FALSE(VectorState(manager_->State(), IrqIndex::kIntx, 0).masked);

  Raise();
  auto event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->index, IrqIndex::kIntx);
  EXPECT_EQ(event->vector, 0u);
  EXPECT_EQ(event->count, 1u);
  auto state = manager_->State();
  EXPECT_TRUE(VectorState(state, IrqIndex::kIntx, 0).masked);  // automasked
  EXPECT_EQ(VectorState(state, IrqIndex::kIntx, 0).delivered, 1u);

  // Automasked: raising again while masked signals nothing.
  Raise();
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());
  // Unmasking while the line is still asserted fires again at once (level-triggered).
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kIntx, IrqAction::kUnmask, 0, 1)).ok());
  event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->index, IrqIndex::kIntx);
  // Acknowledge, then unmask: the line is low, nothing fires.
  Ack();
  EXPECT_EQ(ReadBar0(kEduIrqStatus), 0u);
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kIntx, IrqAction::kUnmask, 0, 1)).ok());
  EXPECT_FALSE(VectorState(manager_->State(), IrqIndex::kIntx, 0).masked);
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());
  // And the next raise is delivered.
  Raise();
  event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kIntx, 0).delivered, 3u);
  Ack();
}

TEST_F(IrqManagerSimTest, IntxClientEventfdWithResampleEventfd) {
  std::vector<EventFd> trigger;
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kIntx, 0, 1, &trigger)).ok());
  std::vector<EventFd> resample;
  IrqRequest unmask = Eventfds(IrqIndex::kIntx, 0, 1, &resample);
  unmask.action = IrqAction::kUnmask;
  ASSERT_TRUE(manager_->SetIrqs(std::move(unmask)).ok());
  EXPECT_TRUE(VectorState(manager_->State(), IrqIndex::kIntx, 0).unmask_eventfd);
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kIntx, 0).trigger,
            Trigger::kClientEventfd);

  Raise();
  EXPECT_EQ(*trigger[0].Read(), 1u);
  Ack();
  // The guest's EOI: the resample eventfd unmasks the line; the next raise fires again.
  ASSERT_TRUE(resample[0].Signal().ok());
  bool fired = false;
  for (int i = 0; i < 500 && !fired; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    Raise();
    fired = *trigger[0].Read() > 0;
    Ack();
  }
  EXPECT_TRUE(fired);
}

TEST_F(IrqManagerSimTest, MsiWatchNeedsBusMaster) {
  auto sub = manager_->Watch({IrqIndex::kMsi});
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsi, 0, 1)).ok());
  Raise();  // bus mastering is off after open: the MSI write never leaves the device
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());
  Ack();
  SetBusMaster(true);
  Raise();
  auto event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->index, IrqIndex::kMsi);
  EXPECT_EQ(event->vector, 0u);
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kMsi, 0).delivered, 1u);
  Ack();
}

TEST_F(IrqManagerSimTest, MsiMaskEmulation) {
  auto sub = manager_->Watch({});
  ASSERT_TRUE(sub.ok());
  SetBusMaster(true);
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsi, 0, 1)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsi, IrqAction::kMask, 0, 1)).ok());
  EXPECT_TRUE(VectorState(manager_->State(), IrqIndex::kMsi, 0).masked);
  Raise();
  Ack();
  Raise();
  Ack();
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());  // held: pending
  EXPECT_EQ(VectorState(manager_->State(), IrqIndex::kMsi, 0).delivered, 0u);
  ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsi, IrqAction::kUnmask, 0, 1)).ok());
  auto event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->index, IrqIndex::kMsi);
  EXPECT_EQ(event->count, 1u);  // exactly one, however many were held
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());
  EXPECT_FALSE(VectorState(manager_->State(), IrqIndex::kMsi, 0).masked);
  Raise();
  ASSERT_TRUE(NextWithin(**sub, kEventWait).has_value());
  Ack();
}

TEST_F(IrqManagerSimTest, IntxAndMsiAreExclusive) {
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kIntx, 0, 1)).ok());
  const int fds = CountOpenFds();
  IrqRequest r = Eventfds(IrqIndex::kMsi, 0, 1);
  const int fd = r.eventfds[0]->fd().get();
  absl::Status status = manager_->SetIrqs(std::move(r));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("SetIrqs: MSI cannot be enabled while INTx is enabled"),
            absl::string_view::npos)
      << status;
  EXPECT_FALSE(IsOpen(fd));
  EXPECT_EQ(SettledFdCount(fds), fds);  // the request's eventfd is gone, nothing else changed
  EXPECT_FALSE(Enabled(manager_->State(), IrqIndex::kMsi));
  EXPECT_TRUE(Enabled(manager_->State(), IrqIndex::kIntx));
  // After disabling INTx, MSI works.
  ASSERT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kIntx)).ok());
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsi, 0, 1)).ok());
}

TEST_F(IrqManagerSimTest, DisableAllClearsState) {
  auto sub = manager_->Watch({});
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kIntx, 0, 1)).ok());
  IrqRequest unmask = Eventfds(IrqIndex::kIntx, 0, 1);
  unmask.action = IrqAction::kUnmask;
  ASSERT_TRUE(manager_->SetIrqs(std::move(unmask)).ok());
  manager_->DisableAll();
  for (const IrqIndexState& s : manager_->State()) {
    EXPECT_FALSE(s.enabled);
    for (const IrqVectorState& v : s.vectors) {
      EXPECT_EQ(v.trigger, Trigger::kNone);
      EXPECT_FALSE(v.masked);
      EXPECT_FALSE(v.unmask_eventfd);
    }
  }
  Raise();
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());
  Ack();
  // The backend agrees that everything is off: MSI (exclusive with INTx) can be enabled.
  SetBusMaster(true);
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsi, 0, 1)).ok());
  Raise();
  auto event = NextWithin(**sub, kEventWait);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->index, IrqIndex::kMsi);
  EXPECT_FALSE((*sub)->closed());
  Ack();
}

TEST_F(IrqManagerSimTest, DisableWhileFiring) {
  auto sub = manager_->Watch({});
  ASSERT_TRUE(sub.ok());
  SetBusMaster(true);
  const int fds = CountOpenFds();
  std::atomic<bool> stop{false};
  std::thread device([&] {
    while (!stop.load()) {
      Raise();
      Ack();
    }
  });
  for (int i = 0; i < 200; ++i) {
    IrqIndex index = i % 2 == 0 ? IrqIndex::kMsi : IrqIndex::kIntx;
    ASSERT_TRUE(manager_->SetIrqs(Watch(index, 0, 1)).ok());
    if (index == IrqIndex::kMsi) {
      ASSERT_TRUE(manager_->SetIrqs(Action(index, IrqAction::kMask, 0, 1)).ok());
    }
    ASSERT_TRUE(manager_->SetIrqs(Action(index, IrqAction::kUnmask, 0, 1)).ok());
    if (i % 4 < 2) {
      ASSERT_TRUE(manager_->SetIrqs(Disable(index)).ok());
    } else {
      manager_->DisableAll();
    }
  }
  stop.store(true);
  device.join();
  while (NextWithin(**sub, absl::ZeroDuration()).has_value()) {
  }
  EXPECT_FALSE(NextWithin(**sub, kQuietWait).has_value());
  EXPECT_EQ(SettledFdCount(fds), fds);
}

TEST_F(IrqManagerSimTest, NoFdLeakOver500EnableDisableLoops) {
  SetBusMaster(true);
  const int fds = CountOpenFds();
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kIntx, 0, 1)).ok());
    IrqRequest unmask = Eventfds(IrqIndex::kIntx, 0, 1);
    unmask.action = IrqAction::kUnmask;
    ASSERT_TRUE(manager_->SetIrqs(std::move(unmask)).ok());
    EXPECT_FALSE(manager_->SetIrqs(Eventfds(IrqIndex::kMsi, 0, 1)).ok());  // exclusive
    ASSERT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kIntx)).ok());
    ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kMsi, 0, 1)).ok());
    ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsi, IrqAction::kMask, 0, 1)).ok());
    Raise();
    Ack();
    ASSERT_TRUE(manager_->SetIrqs(Action(IrqIndex::kMsi, IrqAction::kUnmask, 0, 1)).ok());
    ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kMsi, 0, 1)).ok());
    if (i % 2 == 0) {
      ASSERT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kMsi)).ok());
    } else {
      manager_->DisableAll();
    }
  }
  EXPECT_EQ(SettledFdCount(fds), fds);
}

// ERR and REQ hold a single trigger in the kernel (vfio_pci_set_ctx_trigger_single): an eventfd
// of -1 clears it, and the index is then disabled, so a later disable request (count 0) must
// not reach the backend, which refuses it (the kernel's EINVAL). Found by the device-model
// fuzzer: REQ stayed "enabled" with no trigger and could not be disabled any more.
TEST_F(IrqManagerSimTest, ReqWithoutAnEventfdIsDisabled) {
  absl::StatusOr<EventFd> eventfd = EventFd::Create();
  ASSERT_TRUE(eventfd.ok());
  IrqRequest enable;
  enable.index = IrqIndex::kReq;
  enable.count = 1;
  enable.data = Data::kEventfd;
  enable.eventfds.emplace_back(*eventfd->Duplicate());
  ASSERT_TRUE(manager_->SetIrqs(std::move(enable)).ok());
  EXPECT_TRUE(Enabled(manager_->State(), IrqIndex::kReq));

  IrqRequest clear;
  clear.index = IrqIndex::kReq;
  clear.count = 1;
  clear.data = Data::kEventfd;
  clear.eventfds.emplace_back(std::nullopt);
  ASSERT_TRUE(manager_->SetIrqs(std::move(clear)).ok());
  EXPECT_FALSE(Enabled(manager_->State(), IrqIndex::kReq));

  IrqRequest disable;
  disable.index = IrqIndex::kReq;
  disable.count = 0;
  disable.data = Data::kNone;
  EXPECT_TRUE(manager_->SetIrqs(std::move(disable)).ok());
  EXPECT_FALSE(Enabled(manager_->State(), IrqIndex::kReq));
}

// ------------------------------------------------------------------------------------------
// The daemon's own REQ trigger (the host's request for the device): armed while the owner has
// none, replaced by the owner's, armed again when the owner's goes.

// Counts on_host_request calls.
struct HostRequests {
  std::atomic<int> calls{0};
  std::function<void()> Handler() {
    return [this] { calls.fetch_add(1); };
  }
  // Whether the count reaches `n` within `d`.
  bool ReachWithin(int n, absl::Duration d) {
    const absl::Time deadline = absl::Now() + d;
    while (calls.load() < n && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
    return calls.load() >= n;
  }
};

IrqRequest ReqEventfd(std::optional<EventFd> fd) {
  IrqRequest r;
  r.index = IrqIndex::kReq;
  r.count = 1;
  r.data = Data::kEventfd;
  r.eventfds.push_back(std::move(fd));
  return r;
}

IrqRequest ReqLoopback(Data data) {
  IrqRequest r = Action(IrqIndex::kReq, IrqAction::kTrigger, 0, 1);
  r.data = data;
  if (data == Data::kBool) r.bools = {true};
  return r;
}

Trigger ReqTrigger(const IrqManager& manager) {
  return VectorState(manager.State(), IrqIndex::kReq, 0).trigger;
}

class HostRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = IrqManager::Create(&backend_, 4);
    ASSERT_TRUE(m.ok()) << m.status();
    manager_ = *std::move(m);
    ASSERT_TRUE(manager_->Start(requests_.Handler()).ok());
  }

  IrqTestBackend backend_{8, 1};
  HostRequests requests_;
  std::unique_ptr<IrqManager> manager_;
};

TEST_F(HostRequestTest, ArmedAtStartAndFiringCallsTheHandler) {
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kDaemonRequest);
  EXPECT_FALSE(Enabled(manager_->State(), IrqIndex::kReq)) << "the owner enabled nothing";
  EXPECT_TRUE(backend_.has_trigger(IrqIndex::kReq, 0));
  backend_.Fire(IrqIndex::kReq, 0);  // the host's request (vfio_pci_core_request)
  EXPECT_TRUE(requests_.ReachWithin(1, kEventWait));
  backend_.Fire(IrqIndex::kReq, 0);  // the kernel signals again every 10 s
  EXPECT_TRUE(requests_.ReachWithin(2, kEventWait));
}

TEST_F(HostRequestTest, OwnerTriggerReplacesTheDaemonsUntilItGoes) {
  std::vector<EventFd> mirror;
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kReq, 0, 1, &mirror)).ok());
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kClientEventfd);
  EXPECT_TRUE(Enabled(manager_->State(), IrqIndex::kReq));
  backend_.Fire(IrqIndex::kReq, 0);
  EXPECT_EQ(*mirror[0].Read(), 1u) << "the owner's eventfd gets the request";
  absl::SleepFor(kQuietWait);
  EXPECT_EQ(requests_.calls.load(), 0) << "the VMM decides, not the daemon";

  // Each way the owner's trigger goes arms the daemon's again.
  ASSERT_TRUE(manager_->SetIrqs(ReqEventfd(std::nullopt)).ok());
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kDaemonRequest);
  ASSERT_TRUE(manager_->SetIrqs(Watch(IrqIndex::kReq, 0, 1)).ok());
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kWatch);
  ASSERT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kReq)).ok());
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kDaemonRequest);
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kReq, 0, 1)).ok());
  manager_->DisableAll();  // owner loss
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kDaemonRequest);
  EXPECT_FALSE(Enabled(manager_->State(), IrqIndex::kReq));
  backend_.Fire(IrqIndex::kReq, 0);
  EXPECT_TRUE(requests_.ReachWithin(1, kEventWait));
}

TEST_F(HostRequestTest, OwnerSeesNoTriggerAndCannotSignalTheDaemons) {
  const int calls = backend_.calls();
  // Disabling REQ the owner never enabled: the idempotent no-op; the daemon's stays.
  EXPECT_TRUE(manager_->SetIrqs(Disable(IrqIndex::kReq)).ok());
  // Loopback answers as the kernel without a trigger, and signals nothing.
  absl::Status none = manager_->SetIrqs(ReqLoopback(Data::kNone));
  EXPECT_EQ(none.code(), absl::StatusCode::kInvalidArgument) << none;
  EXPECT_NE(none.message().find("no trigger of the owner's"), absl::string_view::npos) << none;
  EXPECT_TRUE(manager_->SetIrqs(ReqLoopback(Data::kBool)).ok());
  EXPECT_EQ(backend_.calls(), calls) << "nothing reached the backend";
  absl::SleepFor(kQuietWait);
  EXPECT_EQ(requests_.calls.load(), 0);
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kDaemonRequest);
}

TEST_F(HostRequestTest, FailedOwnerRequestKeepsTheDaemonsArmed) {
  backend_.FailNext();
  const int fds = CountOpenFds();
  EXPECT_EQ(manager_->SetIrqs(Eventfds(IrqIndex::kReq, 0, 1)).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kDaemonRequest);
  backend_.Fire(IrqIndex::kReq, 0);
  EXPECT_TRUE(requests_.ReachWithin(1, kEventWait));
}

TEST_F(HostRequestTest, DestructionClearsTheBackendTriggerAndClosesTheEventfd) {
  manager_.reset();
  EXPECT_FALSE(backend_.has_trigger(IrqIndex::kReq, 0));
}

TEST(HostRequestLifetimeTest, NotArmedWithoutAHandlerOrWhenArmingFails) {
  IrqTestBackend backend(8, 1);
  {
    auto manager = IrqManager::Create(&backend, 4);
    ASSERT_TRUE(manager.ok());
    ASSERT_TRUE((*manager)->Start().ok());
    EXPECT_EQ(ReqTrigger(**manager), Trigger::kNone);
    (*manager)->DisableAll();
    EXPECT_EQ(ReqTrigger(**manager), Trigger::kNone);
    EXPECT_FALSE(backend.has_trigger(IrqIndex::kReq, 0));
  }
  HostRequests requests;
  auto manager = IrqManager::Create(&backend, 4);
  ASSERT_TRUE(manager.ok());
  const int fds = CountOpenFds();
  backend.FailNext();
  ASSERT_TRUE((*manager)->Start(requests.Handler()).ok()) << "logged, not fatal";
  EXPECT_EQ(ReqTrigger(**manager), Trigger::kNone);
  EXPECT_EQ(CountOpenFds(), fds + 2) << "the watcher's epoll and wake eventfd only";
  (*manager)->DisableAll();  // the next occasion arms it
  EXPECT_EQ(ReqTrigger(**manager), Trigger::kDaemonRequest);
}

TEST(HostRequestLifetimeTest, DeviceWithoutReqArmsNothing) {
  IrqTestBackend backend;  // REQ count 0
  HostRequests requests;
  auto manager = IrqManager::Create(&backend, 4);
  ASSERT_TRUE(manager.ok());
  ASSERT_TRUE((*manager)->Start(requests.Handler()).ok());
  EXPECT_EQ(backend.calls(), 0);
}

// The simulated edu device has REQ and stores its trigger, but no host driver ever asks for the
// device: the daemon's trigger is armed there and only a loopback through the backend (what
// the kernel's request does) fires it.
TEST_F(IrqManagerSimTest, DaemonReqTriggerOnTheSimulatedDevice) {
  HostRequests requests;
  auto m = IrqManager::Create(backend_.get(), 4);
  ASSERT_TRUE(m.ok());
  manager_.reset();
  manager_ = *std::move(m);
  ASSERT_TRUE(manager_->Start(requests.Handler()).ok());
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kDaemonRequest);

  std::vector<EventFd> mirror;
  ASSERT_TRUE(manager_->SetIrqs(Eventfds(IrqIndex::kReq, 0, 1, &mirror)).ok());
  IrqSet host = {};
  host.index = IrqIndex::kReq;
  host.start = 0;
  host.count = 1;
  host.action = IrqAction::kTrigger;
  host.data = IrqSet::Data::kNone;
  ASSERT_TRUE(backend_->SetIrqs(host).ok());
  EXPECT_EQ(*mirror[0].Read(), 1u);
  manager_->DisableAll();
  EXPECT_EQ(ReqTrigger(*manager_), Trigger::kDaemonRequest);
  ASSERT_TRUE(backend_->SetIrqs(host).ok());
  EXPECT_TRUE(requests.ReachWithin(1, kEventWait));
}

}  // namespace
}  // namespace vfiod
